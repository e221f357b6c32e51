"""Training: SFT loss goes down, kill-and-resume is bit-identical, MC labels, guards."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.arith import common
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.transformer import init_params
from ttcjax.tasks.arith import arithmetic, testbed
from ttcjax import rundir
from ttcjax.models import export
from ttcjax.training import mc_labels, pipeline, reward_models

TINY_MODEL = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                  intermediate_size=48, max_position_embeddings=256)


def tiny_sft_config(steps=12):
  c = common.sft_config(TINY_MODEL, steps=steps, learning_rate=3e-3)
  c.data.batch_size = 8
  c.data.levels = [1, 2]
  c.data.eval_problems = 16
  c.optimizer.warmup_steps = 2
  c.train.update(log_every=2, eval_every=6, save_every=4)
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_sft_loss_decreases(tmp_path):
  config = tiny_sft_config(steps=40)
  config.train.update(log_every=5, eval_every=20, save_every=20)
  pipeline.run(config, str(tmp_path))
  losses = [m["loss"] for m in read_metrics(tmp_path) if "loss" in m]
  assert losses[-1] < 0.7 * losses[0]
  evals = [m["eval_loss"] for m in read_metrics(tmp_path) if "eval_loss" in m]
  assert len(evals) == 2 and evals[-1] < evals[0]
  config_, params, extra = export.load_exported(str(tmp_path / "model"))
  assert isinstance(config_, TransformerConfig) and extra["train_tokens"] > 0


def test_resume_after_kill_is_bit_identical(tmp_path):
  config = tiny_sft_config(steps=12)
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  pipeline.run(config, str(straight))
  # Kill after 6 updates (the last checkpoint is at step 4), then restart.
  from ttcjax.training import loop
  original = loop.train

  def killed_train(**kwargs):
    original(**kwargs, stop_after=6)
    raise KeyboardInterrupt("killed")

  loop.train = killed_train
  try:
    with pytest.raises(KeyboardInterrupt):
      pipeline.run(config, str(killed))
  finally:
    loop.train = original
  assert not os.path.exists(killed / "model")
  pipeline.run(config, str(killed))
  _, a, _ = export.load_exported(str(straight / "model"))
  _, b, _ = export.load_exported(str(killed / "model"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Metrics are not duplicated by the restart.
  assert [m["step"] for m in read_metrics(killed)] == [m["step"] for m in read_metrics(straight)]


def test_workdir_of_another_config_is_refused(tmp_path):
  config = tiny_sft_config(steps=4)
  pipeline.run(config, str(tmp_path))
  before = open(tmp_path / rundir.RUN_CONFIG_FILE).read()
  other = tiny_sft_config(steps=4)
  other.model.hidden_size = 64
  with pytest.raises(ValueError, match="another config"):
    pipeline.run(other, str(tmp_path))
  assert open(tmp_path / rundir.RUN_CONFIG_FILE).read() == before


def test_missing_policy_and_empty_labels_are_refused(tmp_path):
  c = common.reward_config("prm", str(tmp_path / "nowhere"), str(tmp_path / "labels.jsonl"), 4)
  with pytest.raises(ValueError, match="No exported model"):
    pipeline.run(c, str(tmp_path / "prm"))
  c = ml_collections.ConfigDict({"stage": "distill"})
  with pytest.raises(ValueError, match="stage"):
    pipeline.run(c, str(tmp_path / "x"))


def _export_tiny_policy(directory, vocab_size):
  config = TransformerConfig(vocab_size=vocab_size, **TINY_MODEL)
  export.export_model(str(directory), init_params(config, jax.random.PRNGKey(0)), config)


def test_mismatched_checkpoints_and_empty_data_are_refused(tmp_path):
  vocab = testbed.tokenizer().vocab_size
  _export_tiny_policy(tmp_path / "policy", vocab)
  _export_tiny_policy(tmp_path / "foreign", vocab + 7)
  labels = tmp_path / "labels.jsonl"
  labels.write_text("")
  # A policy of another vocabulary, and a reward config pointing at a labels file
  # with no problems: both refused before anything is written.
  for policy, match in ((tmp_path / "foreign", "vocabulary"), (tmp_path / "policy", "no labelled")):
    workdir = tmp_path / f"prm-{policy.name}"
    with pytest.raises(ValueError, match=match):
      pipeline.run(common.reward_config("prm", str(policy), str(labels), 4), str(workdir))
    assert not (workdir / "model").exists() and not (workdir / "checkpoints").exists()
  # A reward model where a policy belongs.
  prm = tmp_path / "prm-trained"
  config = PrmConfig(TransformerConfig(vocab_size=vocab, **TINY_MODEL), head_hidden=8)
  export.export_model(str(prm), init_prm_params(config, jax.random.PRNGKey(0)), config)
  before = (prm / "model.safetensors").read_bytes()
  with pytest.raises(ValueError, match="not a policy"):
    pipeline.run(common.reward_config("orm", str(prm), str(labels), 4), str(tmp_path / "orm"))
  assert (prm / "model.safetensors").read_bytes() == before
  # Labelling an empty problem set.
  empty = ml_collections.ConfigDict({
      "stage": "mc_labels", "policy_dir": str(tmp_path / "policy"), "data_seed": 0,
      "num_problems": 0,
      "labels": dict(samples_per_problem=2, rollouts_per_step=2, temperature=1.0, max_steps=3,
                     max_step_tokens=12, max_solution_tokens=40, problems_per_batch=2, seed=0)})
  with pytest.raises(ValueError, match="num_problems"):
    pipeline.run(empty, str(tmp_path / "labels-run"))
  assert not (tmp_path / "labels-run" / "labels.jsonl").exists()


# ------------------------------------------------------ the multi-task verifier


def test_reward_batch_masks_are_exact():
  tok = testbed.tokenizer()
  batch = reward_models.encode_reward_batch(tok, ["1+2=?\n"], [["1+2=3\n\n", "Answer: 3"]],
                                            [[0.25, 1.0]], max_length=32)
  prompt = len(tok.encode("1+2=?\n", add_bos=True))  # 7: BOS and six characters
  first_end = prompt + len("1+2=3\n\n") - 1
  eos = prompt + len("1+2=3\n\nAnswer: 3")  # the EOS ends the final step
  assert batch["lengths"].tolist() == [eos + 1]
  assert np.flatnonzero(batch["label_mask"][0]).tolist() == [first_end, eos]
  assert batch["labels"][0, first_end] == 0.25 and batch["labels"][0, eos] == 1.0
  # Position t predicts token t + 1: from the prompt's last token to the one before EOS.
  assert np.flatnonzero(batch["lm_mask"][0]).tolist() == list(range(prompt - 1, eos))
  # Every step end is marked (an ORM labels only the last), and where the solution starts.
  assert np.flatnonzero(batch["step_end"][0]).tolist() == [first_end, eos]
  assert batch["solution_start"].tolist() == [prompt]
  orm = reward_models.encode_reward_batch(tok, ["1+2=?\n"] * 2, [["1+2=3\n\n", "Answer: 3"]] * 2,
                                          [[1.0, 1.0]] * 2, max_length=32, outcome_only=True,
                                          lm_solutions=[True, False])
  assert np.flatnonzero(orm["label_mask"][0]).tolist() == [eos]
  assert np.flatnonzero(orm["step_end"][1]).tolist() == [first_end, eos]
  # A wrong solution gets no LM term: the verifier must not learn to write it.
  assert orm["lm_mask"][0].sum() == eos - prompt + 1 and orm["lm_mask"][1].sum() == 0


@pytest.mark.parametrize("step_likelihood", [False, True])
def test_multitask_reward_loss_lowers_both_terms(step_likelihood):
  import optax
  tok = testbed.tokenizer()
  config = TransformerConfig(vocab_size=tok.vocab_size, **TINY_MODEL)
  prm_config = PrmConfig(config, head_hidden=8, step_likelihood=step_likelihood)
  params = reward_models.backbone_from_policy(
      init_params(config, jax.random.PRNGKey(0)),
      init_prm_params(prm_config, jax.random.PRNGKey(1)), keep_lm_head=True)
  assert "lm_head" in params["backbone"]
  batch = {k: jnp.asarray(v) for k, v in reward_models.encode_reward_batch(
      tok, ["1+2=?\n", "7*8=?\n"], [["1+2=3\n\n", "Answer: 3"], ["7*8=57\n\n", "Answer: 57"]],
      [[1.0, 1.0], [0.0, 0.0]], max_length=32).items()}
  loss_fn = reward_models.reward_loss(prm_config, lm_weight=1.0)
  optimizer = optax.adam(3e-3)
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, metrics

  first = None
  for _ in range(30):
    params, state, metrics = step(params, state)
    first = first or metrics
  assert float(metrics["bce"]) < 0.8 * float(first["bce"])
  assert float(metrics["lm_loss"]) < 0.8 * float(first["lm_loss"])
  # The loss is BCE + lm_weight x LM; without the LM term it is the BCE alone.
  total, parts = loss_fn(params, batch)
  np.testing.assert_allclose(float(total), float(parts["bce"] + parts["lm_loss"]), rtol=1e-5)
  bce_only, _ = reward_models.reward_loss(prm_config)(params, batch)
  np.testing.assert_allclose(float(bce_only), float(parts["bce"]), rtol=1e-5)
  with pytest.raises(ValueError, match="lm_weight"):
    reward_models.reward_loss(prm_config, lm_weight=-1.0)


def test_prm_from_a_policy_of_another_shape_is_refused():
  vocab = testbed.tokenizer().vocab_size
  policy = init_params(TransformerConfig(vocab_size=vocab, **TINY_MODEL), jax.random.PRNGKey(0))
  wider = PrmConfig(TransformerConfig(vocab_size=vocab, **dict(TINY_MODEL, hidden_size=48)))
  with pytest.raises(ValueError, match="shapes differ"):
    reward_models.backbone_from_policy(policy, init_prm_params(wider, jax.random.PRNGKey(1)))
  other_vocabulary = PrmConfig(TransformerConfig(vocab_size=vocab + 5, **TINY_MODEL))
  with pytest.raises(ValueError, match="shapes differ"):
    reward_models.backbone_from_policy(policy, init_prm_params(other_vocabulary,
                                                               jax.random.PRNGKey(1)))
  deeper = PrmConfig(TransformerConfig(vocab_size=vocab, **dict(TINY_MODEL, num_layers=3)))
  with pytest.raises(ValueError, match="lacks backbone parameters"):
    reward_models.backbone_from_policy(policy, init_prm_params(deeper, jax.random.PRNGKey(1)))


# ----------------------------------------------------------- Monte Carlo labels


PROBLEM = arithmetic.Problem(uid="p0", level=4, start=37, ops=(("+", 15), ("*", 3), ("-", 28)))


def scripted_policy(tokenizer, prompt_length, script_text):
  """A deterministic fake: the token after position t is script[t - prompt_length]."""
  script = jnp.asarray(tokenizer.encode(script_text) + [tokenizer.eos_id] * 200)
  vocab = tokenizer.vocab_size

  def decode(params, tokens, cache, num_new):
    del params, tokens
    lengths = cache.lengths + num_new
    nxt = script[jnp.clip(lengths - prompt_length, 0, script.shape[0] - 1)]
    return jax.nn.one_hot(nxt, vocab) * 50.0, cache.replace(lengths=lengths)

  return decode


def scripted_labeler(script, rollouts, has_answer=None):
  """A labeller whose policy always writes `script` after PROBLEM's prompt."""
  tokenizer = testbed.tokenizer()
  config = TransformerConfig(vocab_size=tokenizer.vocab_size, **TINY_MODEL)
  prompt_length = len(tokenizer.encode(PROBLEM.prompt, add_bos=True))
  label_config = mc_labels.LabelConfig(samples_per_problem=2, rollouts_per_step=rollouts,
                                       max_steps=8, max_step_tokens=24,
                                       max_solution_tokens=64, problems_per_batch=1)
  return mc_labels.MonteCarloLabeler(
      config, None, tokenizer, label_config, grade=arithmetic.is_correct,
      decode_fn=scripted_policy(tokenizer, prompt_length, script), has_answer=has_answer)


@pytest.mark.parametrize("script,expected_labels,correct", [
    ("37+15=52\n\n52*3=156\n\n156-28=128\n\nAnswer: 128", [1.0, 1.0, 1.0, 1.0], True),
    # A deterministic policy that slips at step 2 never recovers from any prefix.
    ("37+15=52\n\n52*3=155\n\n155-28=127\n\nAnswer: 127", [0.0, 0.0, 0.0, 0.0], False),
])
def test_mc_labels_are_exact_on_a_deterministic_policy(script, expected_labels, correct):
  labeler = scripted_labeler(script, rollouts=3)
  [result] = labeler.label([PROBLEM], [PROBLEM.prompt], [0])
  assert len(result.samples) == 2
  for sample in result.samples:
    assert "".join(sample["steps"]) == script
    assert sample["labels"] == expected_labels
    assert sample["correct"] is correct
  # Every rollout token and every sampled token was counted.
  assert labeler.tokens_generated > 2 * len(script)


def test_mc_labels_drop_samples_without_an_answer():
  labeler = scripted_labeler("37+15=52\n\n52*3=156", rollouts=2,
                             has_answer=lambda text: arithmetic.extract_answer(text) is not None)
  [result] = labeler.label([PROBLEM], [PROBLEM.prompt], [0])
  assert result.samples == []


def test_label_file_resumes_without_duplicates(tmp_path):
  tokenizer = testbed.tokenizer()
  config = TransformerConfig(vocab_size=tokenizer.vocab_size, **TINY_MODEL)
  params = init_params(config, jax.random.PRNGKey(0))
  problems = arithmetic.make_split("train", 3, levels=(1,))
  label_config = mc_labels.LabelConfig(samples_per_problem=2, rollouts_per_step=2, max_steps=3,
                                       max_step_tokens=8, max_solution_tokens=24,
                                       problems_per_batch=2)
  labeler = mc_labels.MonteCarloLabeler(config, params, tokenizer, label_config,
                                        grade=arithmetic.is_correct, max_prompt_tokens=16)
  path = str(tmp_path / "labels.jsonl")
  mc_labels.label_to_file(labeler, problems[:2], [p.prompt for p in problems[:2]], path)
  with open(path, "a") as f:
    f.write('{"uid": "cut-by-a-ki')  # a kill in the middle of a line
  stats = mc_labels.label_to_file(labeler, problems, [p.prompt for p in problems], path)
  assert stats["problems"] == 1
  uids = [r["uid"] for r in mc_labels.read_labels(path)]
  assert uids == [p.uid for p in problems]
  # A line damaged mid-file is named, never silently relabelled after (duplicates).
  lines = open(path).read().splitlines(keepends=True)
  with open(path, "w") as f:
    f.write("".join([lines[0], "not json\n"] + lines[2:]))
  with pytest.raises(ValueError, match=r"labels.jsonl, line 2: not a labelled problem"):
    mc_labels.label_to_file(labeler, problems, [p.prompt for p in problems], path)


def test_stages_end_to_end_on_tiny_configs(tmp_path):
  """SFT -> Monte Carlo labels -> PRM and ORM, each exported and loadable."""
  policy = tmp_path / "policy"
  pipeline.run(tiny_sft_config(steps=4), str(policy))
  labels = ml_collections.ConfigDict({
      "stage": "mc_labels", "policy_dir": str(policy / "model"), "data_seed": 0,
      "num_problems": 4,
      "labels": dict(samples_per_problem=2, rollouts_per_step=2, temperature=1.0, max_steps=3,
                     max_step_tokens=12, max_solution_tokens=40, problems_per_batch=2, seed=0)})
  summary = pipeline.run(labels, str(tmp_path / "labels"))
  assert summary["problems"] == 4 and summary["rollout_tokens_per_s_this_call"] > 0
  records = mc_labels.read_labels(str(tmp_path / "labels" / "labels.jsonl"))
  fillers = [[{"steps": ["1+1=2\n\n", "Answer: 2"], "labels": [0.5, 1.0], "correct": True,
               "text": ""}],
             [{"steps": ["Answer: 3"], "labels": [0.0], "correct": False, "text": ""}]]
  for i, record in enumerate(records):  # an untrained policy rarely ends a solution
    record["samples"] = record["samples"] or fillers[i % 2]
  path = tmp_path / "fixed.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  for stage in ("prm", "orm"):
    c = common.reward_config(stage, str(policy / "model"), str(path), steps=3)
    c.data.held_out_fraction = 0.5
    c.model.head_hidden = 16
    c.model.lm_weight = 1.0 if stage == "prm" else 0.0
    c.model.step_likelihood = stage == "prm"
    c.train.update(log_every=1, eval_every=1, save_every=2)
    out = pipeline.run(c, str(tmp_path / stage))
    assert np.isfinite(out["best_eval_loss"])
    prm_config, params, _ = export.load_exported(str(tmp_path / stage / "model"))
    assert prm_config.kind == "value" and "head" in params
    assert prm_config.step_likelihood == (stage == "prm")
    assert ("lm_head" in params["backbone"]) == (stage == "prm")
    if stage == "prm":
      assert "lm_loss" in read_metrics(str(tmp_path / stage))[-1]


def test_train_launcher_smoke(tmp_path):
  import subprocess
  import sys
  cmd = [sys.executable, "-m", "experiments.train", "--config", "configs/arith/policy_small.py",
         "--workdir", str(tmp_path), "--config.train.steps=2", "--config.model.hidden_size=32",
         "--config.model.num_layers=1", "--config.model.intermediate_size=32",
         "--config.data.batch_size=4", "--config.data.eval_problems=8"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run(cmd, check=True, cwd=root, capture_output=True, timeout=300)
  assert os.path.exists(tmp_path / "model" / "model.safetensors")


def test_revision_stages_end_to_end(tmp_path):
  """The policy's samples -> revision SFT -> the revision model's own chains, each
  resumable output readable; the export records its separator and training tokens."""
  from configs.arith import revision_outputs, revision_samples, revision_sft
  from ttcjax.tasks.arith import testbed
  samples = revision_samples.get_config()
  samples.num_problems = 4
  samples.sampling.update(samples_per_problem=8, problems_per_batch=2)
  out = pipeline.run(samples, str(tmp_path / "samples"))
  assert out["problems"] == 4 and out["samples"] == 32
  sft_config = revision_sft.get_config()
  sft_config.samples_path = str(tmp_path / "samples" / "samples.jsonl")
  sft_config.data.update(batch_size=4, held_out_fraction=0.5)
  sft_config.train.update(steps=2, log_every=1, eval_every=1, save_every=1)
  out = pipeline.run(sft_config, str(tmp_path / "sft"))
  assert out["train_examples"] > 0 and out["revision_train_tokens"] > 0
  # The held-out loss split by kind of example recombines into the early-stopping loss.
  assert out["best_eval"]["loss"] == pytest.approx(out["best_eval_loss"], rel=1e-5)
  assert set(out["best_eval"]) <= {"loss", "loss_first_attempt", "loss_revision"}
  _, _, separator = testbed.load_revision_model(str(tmp_path / "sft" / "model"))
  assert separator == revision_sft.SEPARATOR
  outputs = revision_outputs.get_config()
  outputs.revision_dir = str(tmp_path / "sft" / "model")
  outputs.num_problems = 2
  outputs.sampling.update(chains=2, chain_length=2, problems_per_batch=2)
  out = pipeline.run(outputs, str(tmp_path / "outputs"))
  records = mc_labels.read_labels(str(tmp_path / "outputs" / "labels.jsonl"))
  assert out["samples"] == 8 and [s["position"] for s in records[0]["samples"]] == [0, 1, 0, 1]
