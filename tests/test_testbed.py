"""The testbed's evaluation helpers, and the shipped checkpoints' quality."""

import numpy as np
import pytest

from ttcjax.sampling import Sampler
from ttcjax.tasks.arith import arithmetic, testbed

PROBLEM = arithmetic.Problem(uid="p0", level=4, start=37, ops=(("+", 15), ("*", 3), ("-", 28)))


def graded(problem, solutions, width=64):
  """GradedSamples for one problem from solution step lists (as the sampler lays them out)."""
  tok = testbed.tokenizer()
  n = len(solutions)
  tokens = np.zeros((1, n, width), np.int32)
  step_end = np.zeros((1, n, width), bool)
  lengths = np.zeros((1, n), np.int32)
  for j, steps in enumerate(solutions):
    ids = []
    for k, step in enumerate(steps):
      ids += tok.encode(step) + ([tok.eos_id] if k == len(steps) - 1 else [])
      step_end[0, j, len(ids) - 1] = True
    tokens[0, j, :len(ids)] = ids
    lengths[0, j] = len(ids)
  texts = [["".join(s) for s in solutions]]
  correct = np.array([[arithmetic.is_correct(problem, t) for t in texts[0]]])
  return testbed.GradedSamples([problem], texts, correct, tokens, step_end, lengths, 0, 1.0)


def test_true_step_labels_follow_the_verifier():
  samples = graded(PROBLEM, [
      ["37+15=52\n\n", "52*3=156\n\n", "156-28=128\n\n", "Answer: 128"],
      ["37+15=52\n\n", "52*3=155\n\n", "155-28=127\n\n", "Answer: 127"],
      ["37+15=52\n\n", "Answer: 52"],
  ])
  labels = testbed.true_step_labels(samples)
  assert labels.shape == (1, 3, testbed.MAX_STEPS)
  assert labels[0, 0, :5].tolist() == [True, True, True, True, False]
  assert labels[0, 1, :4].tolist() == [True, False, False, False]
  assert labels[0, 2, :2].tolist() == [True, False]
  assert samples.correct.tolist() == [[True, False, False]]


def test_first_errors_and_the_policy_argmax_subset(monkeypatch):
  samples = graded(PROBLEM, [
      ["37+15=52\n\n", "52*3=156\n\n", "156-28=128\n\n", "Answer: 128"],
      ["37+15=52\n\n", "52*3=155\n\n", "155-28=127\n\n", "Answer: 127"],
      ["37+15=53\n\n", "Answer: 53"],
  ])
  labels = testbed.true_step_labels(samples)
  errors = testbed.first_errors(labels, samples)
  # Sample 1 first errs at step 1, sample 2 at step 0; later wrong steps do not count,
  # nor do the columns past a sample's steps.
  assert [tuple(x) for x in np.argwhere(errors)] == [(0, 1, 1), (0, 2, 0)]

  class Greedy:
    """A scripted SolutionSampler whose greedy next step after any prefix is `text`."""

    def __init__(self, text):
      self.text = text

    def sample(self, params, prompts, num_samples, sampler, rng):
      del params, num_samples, sampler, rng
      return type("Out", (), {"texts": [[self.text] for _ in prompts]})()

  for text, expected in (("52*3=155\n\n", [(0, 1, 1)]), ("37+15=53\n\n", [(0, 2, 0)]),
                         ("1+1=2\n\n", [])):
    monkeypatch.setattr(testbed, "SolutionSampler", lambda *a, text=text, **k: Greedy(text))
    argmax = testbed.argmax_errors(None, None, samples, labels)
    assert [tuple(x) for x in np.argwhere(argmax)] == expected


def test_likelihood_step_scores_are_each_steps_least_likely_token():
  import jax
  import jax.numpy as jnp
  from ttcjax.models.config import TransformerConfig
  from ttcjax.models.transformer import forward, init_params
  tok = testbed.tokenizer()
  config = TransformerConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1,
                             num_heads=2, num_kv_heads=2, intermediate_size=32,
                             max_position_embeddings=128)
  params = init_params(config, jax.random.PRNGKey(0))
  samples = graded(PROBLEM, [["37+15=52\n\n", "Answer: 52"], ["37+15=53\n\n", "Answer: 53"]])
  scores, mask = testbed.likelihood_step_scores(config, params, samples, rows_per_batch=3)
  assert mask[0, :, :2].all() and not mask[0, :, 2:].any()
  ids = tok.encode(PROBLEM.prompt, add_bos=True) + tok.encode("37+15=53\n\nAnswer: 53")
  log_probs = jax.nn.log_softmax(forward(params, config, jnp.asarray([ids])).logits[0], -1)
  p = len(tok.encode(PROBLEM.prompt, add_bos=True))
  token_lp = [float(log_probs[x - 1, ids[x]]) for x in range(p, len(ids))]
  step = len("37+15=53\n\n")
  np.testing.assert_allclose(scores[0, 1, 0], min(token_lp[:step]), rtol=1e-5)
  # The final step includes its EOS, which this sequence lacks: check the rest only.
  assert scores[0, 1, 1] <= min(token_lp[step:]) + 1e-5


def test_pass_rate_report():
  problems = [arithmetic.Problem("a", 1, 1, (("+", 1),)), arithmetic.Problem("b", 1, 2, (("+", 1),)),
              arithmetic.Problem("c", 2, 3, (("+", 1),))]
  correct = np.array([[1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], bool)
  report = testbed.pass_rate_report(problems, correct)
  assert report["pass1"] == pytest.approx((1 + 0.25 + 0) / 3)
  assert report["frac_pass1_above_0.9"] == pytest.approx(1 / 3)
  assert report["frac_pass1_below_0.1"] == pytest.approx(1 / 3)
  assert report["pass1_per_level"] == {1: 0.625, 2: 0.0}


def test_unknown_shipped_model_is_refused():
  with pytest.raises(ValueError, match="policy_small"):
    testbed.shipped_checkpoint("policy_medium")


def test_evaluation_needs_problems():
  config, params, _ = testbed.load_policy(testbed.shipped_checkpoint("policy_small"))
  with pytest.raises(ValueError, match="No problems"):
    testbed.sample_and_grade(config, params, [], 2, Sampler())


# ---------------------------------------------------------- the shipped checkpoints


def test_shipped_checkpoints_keep_their_quality():
  """On 100 test problems, 4 samples each: the figures stay near the full-set ones.

  Bounds are looser than the issue's full-set targets, since 100 x 4 samples are
  noisier than 500 x 8 (see docs/testbed.md for the full-set figures).
  """
  problems = testbed.evaluation_problems(10)
  config, params, _ = testbed.load_policy(testbed.shipped_checkpoint("policy_small"))
  samples = testbed.sample_and_grade(config, params, problems, 4, Sampler(temperature=1.0))
  report = testbed.pass_rate_report(problems, samples.correct)
  assert 0.3 <= report["pass1"] <= 0.7
  levels = report["pass1_per_level"]
  assert levels[1] > 0.85 and levels[10] < 0.15
  prm = testbed.load_reward_model(testbed.shipped_checkpoint("prm"))
  prm_report = testbed.reward_model_report(prm[0], prm[1], samples)
  # The PRM verifies steps, not only problems: sibling AUROC 0.95 on the full set.
  assert prm_report["step_auroc"] >= 0.8 and prm_report["final_auroc"] >= 0.75
  assert prm_report["sibling_auroc"] >= 0.85
  orm = testbed.load_reward_model(testbed.shipped_checkpoint("orm"))
  orm_report = testbed.reward_model_report(orm[0], orm[1], samples)
  assert orm_report["final_auroc"] >= 0.75 and orm_report["sibling_auroc"] >= 0.65
  # The larger policy is larger and better (greedy 0.960 on the full set) and backs both.
  large_config, large_params, _ = testbed.load_policy(testbed.shipped_checkpoint("policy_large"))
  assert large_config.num_params >= 2 * config.num_params
  assert prm[0].backbone == orm[0].backbone == large_config
  greedy = testbed.sample_and_grade(large_config, large_params, problems, 1, Sampler.greedy())
  assert greedy.correct.mean() >= 0.9
