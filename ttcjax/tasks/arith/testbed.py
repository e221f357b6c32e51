"""The testbed's models and how their quality is measured.

The shipped checkpoints (`checkpoints/arith/` in the repository) are a small policy,
a large policy (for the FLOPs-matched comparison), a PRM and an ORM, all trained by
`ttcjax.training.pipeline` on the arithmetic task. This module loads them (checking
that each is what its caller expects) and measures:

* a policy's pass@1 per problem (N samples each), overall, per level, and the
  shares of problems it nearly always / nearly never solves;
* a reward model's AUROC against the verifier's true step labels (every scored
  step) and against final-answer correctness (the last step's score).

Q denotes problems, N samples per problem, T the solution buffer, S score columns.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax import metrics, shipped
from ttcjax.models import export
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig
from ttcjax.models.transformer import forward
from ttcjax.models.tokenizer import CharTokenizer
from ttcjax.rollouts import SolutionSampler, SolutionScorer
from ttcjax.sampling import Sampler
from ttcjax.sweep.runner import SearchRunner
from ttcjax.tasks.arith import arithmetic

SHIPPED_DIR = os.path.join(shipped.PACKAGE_ROOT, "checkpoints", "arith")
SHIPPED_MODELS = ("policy_small", "policy_large", "prm", "orm", "revision", "revision_orm")
MAX_PROMPT_TOKENS = 48
MAX_SOLUTION_TOKENS = 160
MAX_STEPS = 12
EASY_THRESHOLD = 0.9  # a problem with pass@1 above this counts as "nearly always"
HARD_THRESHOLD = 0.1  # below this, "nearly never"


def tokenizer() -> CharTokenizer:
  """The testbed's character tokenizer (every testbed model uses it)."""
  return CharTokenizer(arithmetic.ALPHABET)


def shipped_checkpoint(name: str) -> str:
  """The directory of a shipped checkpoint ("policy_small", "policy_large", "prm", "orm")."""
  if name not in SHIPPED_MODELS:
    raise ValueError(f"Unknown shipped model {name!r}; choose one of {SHIPPED_MODELS}.")
  return os.path.join(SHIPPED_DIR, name)


def load_policy(path: str) -> tuple[TransformerConfig, dict, dict]:
  """(config, params, extra) of an exported testbed policy.

  Raises:
    ValueError: nothing exported there, it is a reward model, or its vocabulary is
      not the testbed tokenizer's.
  """
  config, params, extra = export.load_exported(path)
  if not isinstance(config, TransformerConfig):
    raise ValueError(f"{path} holds a reward model, not a policy; point at a policy export.")
  _check_vocab(path, config.vocab_size)
  return config, params, extra


def load_reward_model(path: str) -> tuple[PrmConfig, dict, dict]:
  """(config, params, extra) of an exported testbed PRM or ORM (see `load_policy`)."""
  config, params, extra = export.load_exported(path)
  if not isinstance(config, PrmConfig):
    raise ValueError(f"{path} holds a policy, not a reward model; point at a PRM/ORM export.")
  _check_vocab(path, config.backbone.vocab_size)
  return config, params, extra


def _check_vocab(path: str, vocab_size: int) -> None:
  expected = tokenizer().vocab_size
  if vocab_size != expected:
    raise ValueError(f"The model at {path} has a vocabulary of {vocab_size} tokens, but the "
                     f"testbed tokenizer has {expected}; it was not trained on this testbed.")


# ------------------------------------------------------------------------ policies


@dataclasses.dataclass
class GradedSamples:
  """N graded solutions for each of Q problems.

  Attributes:
    problems: the Q problems.
    texts: Q lists of N solution texts.
    correct: [Q, N] bool, the final answer is right.
    tokens: [Q, N, T] generated tokens (EOS included, pad after).
    step_end: [Q, N, T] bool, the last token of each step.
    lengths: [Q, N] generated tokens.
    tokens_generated: policy tokens sampled in all.
    wall_s: sampling time, compiles included.
  """

  problems: list[arithmetic.Problem]
  texts: list[list[str]]
  correct: np.ndarray
  tokens: np.ndarray
  step_end: np.ndarray
  lengths: np.ndarray
  tokens_generated: int
  wall_s: float


def sample_and_grade(config: TransformerConfig, params, problems: Sequence[arithmetic.Problem],
                     num_samples: int, sampler: Sampler, seed: int = 0,
                     problems_per_batch: int = 50) -> GradedSamples:
  """Samples `num_samples` solutions per problem and grades them.

  Batches have a fixed size (the last is padded by repeating a problem), so one
  compile serves the whole set. A problem's samples depend only on (seed, its index).
  """
  if not problems:
    raise ValueError("No problems to evaluate.")
  solution_sampler = SolutionSampler(config, tokenizer(), max_prompt_tokens=MAX_PROMPT_TOKENS,
                                     max_solution_tokens=MAX_SOLUTION_TOKENS,
                                     step_delimiter=arithmetic.STEP_DELIMITER)
  rng = jax.random.PRNGKey(seed)
  texts, tokens, step_end, lengths, generated = [], [], [], [], 0
  start = time.perf_counter()
  for first in range(0, len(problems), problems_per_batch):
    ids = list(range(first, min(first + problems_per_batch, len(problems))))
    real = len(ids)
    ids += [ids[-1]] * (problems_per_batch - real)
    out = solution_sampler.sample(params, [problems[i].prompt for i in ids], num_samples,
                                  sampler, rng, problem_ids=ids)
    texts += out.texts[:real]
    tokens.append(out.tokens[:real])
    step_end.append(out.step_end[:real])
    lengths.append(out.lengths[:real])
    generated += int(out.lengths[:real].sum())
  wall = time.perf_counter() - start
  correct = np.array([[arithmetic.is_correct(p, t) for t in row] for p, row in zip(problems, texts)])
  return GradedSamples(list(problems), texts, correct, np.concatenate(tokens),
                       np.concatenate(step_end), np.concatenate(lengths), generated, wall)


def pass_rate_report(problems: Sequence[arithmetic.Problem], correct: np.ndarray) -> dict:
  """pass@1 overall and per level, and the shares of near-always / near-never problems.

  Args:
    problems: Q problems.
    correct: [Q, N] bool.

  Returns:
    {"pass1", "frac_pass1_below_0.1", "frac_pass1_above_0.9",
     "pass1_per_level": {level: pass1}}.
  """
  rates = metrics.pass_rates(correct)
  levels = np.array([p.level for p in problems])
  return {
      "pass1": float(rates.mean()),
      f"frac_pass1_below_{HARD_THRESHOLD}": float((rates < HARD_THRESHOLD).mean()),
      f"frac_pass1_above_{EASY_THRESHOLD}": float((rates > EASY_THRESHOLD).mean()),
      "pass1_per_level": {int(lv): float(rates[levels == lv].mean())
                          for lv in sorted(set(levels.tolist()))},
  }


# ------------------------------------------------------------------- reward models


def score_samples(config: PrmConfig, params, samples: GradedSamples,
                  rows_per_batch: int = 400) -> tuple[np.ndarray, np.ndarray]:
  """Scores every step of every sample.

  Returns:
    (scores [Q, N, S], mask [Q, N, S]): step j of a sample is scored at its last
    token (for the final step, its EOS), as the reward models were trained.
  """
  p, n, t = samples.tokens.shape
  scorer = SolutionScorer(config, tokenizer(), max_length=MAX_PROMPT_TOKENS + t + 1,
                          max_steps=MAX_STEPS)
  prompts = [prob.prompt for prob in samples.problems for _ in range(n)]
  flat_tokens = samples.tokens.reshape(p * n, t)
  flat_ends = samples.step_end.reshape(p * n, t)
  flat_lengths = samples.lengths.reshape(p * n)
  scores, masks = [], []
  for first in range(0, p * n, rows_per_batch):
    rows = np.arange(first, min(first + rows_per_batch, p * n))
    real = len(rows)
    rows = np.concatenate([rows, np.full(rows_per_batch - real, rows[-1])])
    s, m = scorer.score(params, [prompts[r] for r in rows], flat_tokens[rows], flat_ends[rows],
                        flat_lengths[rows])
    scores.append(s[:real])
    masks.append(m[:real])
  return (np.concatenate(scores).reshape(p, n, MAX_STEPS),
          np.concatenate(masks).reshape(p, n, MAX_STEPS))


def true_step_labels(samples: GradedSamples) -> np.ndarray:
  """[Q, N, S] bool: the verifier's label of every step (False past the steps)."""
  p, n, _ = samples.tokens.shape
  labels = np.zeros((p, n, MAX_STEPS), bool)
  for i, (problem, rows) in enumerate(zip(samples.problems, sample_steps_texts(samples))):
    for j, steps in enumerate(rows):
      truth = arithmetic.step_labels(problem, steps)[:MAX_STEPS]
      labels[i, j, :len(truth)] = truth
  return labels


def sample_steps_texts(samples: GradedSamples) -> list[list[list[str]]]:
  """Q lists of N lists of step texts (each step's tokens decoded, delimiter kept)."""
  tok = tokenizer()
  out = []
  for i in range(len(samples.problems)):
    rows = []
    for j in range(samples.tokens.shape[1]):
      ends = np.nonzero(samples.step_end[i, j, :samples.lengths[i, j]])[0]
      starts = np.concatenate([[0], ends[:-1] + 1])
      rows.append([tok.decode(samples.tokens[i, j, a:b + 1]) for a, b in zip(starts, ends)])
    out.append(rows)
  return out


def first_errors(labels: np.ndarray, samples: GradedSamples) -> np.ndarray:
  """[Q, N, S] bool: each sample's first wrong step (the wrong steps whose earlier steps
  are all right; labels are prefix-correct). Positions past a sample's steps are not
  errors."""
  exists = np.arange(labels.shape[-1]) < samples.step_end.sum(axis=-1)[..., None]
  prefix_right = np.concatenate([np.ones(labels.shape[:-1] + (1,), bool), labels[..., :-1]],
                                axis=-1)
  return prefix_right & ~labels & exists


def argmax_errors(config: TransformerConfig, params, samples: GradedSamples,
                  labels: np.ndarray, problems_per_batch: int = 64) -> np.ndarray:
  """[Q, N, S] bool: the first errors that are the policy's own greedy step.

  A first error (`first_errors`) is the policy's argmax when its greedy next step
  after the same prefix (the prompt and the sample's earlier steps) is that step. A
  verifier that only re-weights the sampling policy's likelihood cannot see these:
  this subset is where a verifier must know better than the policy.

  Args:
    config, params: the policy that sampled `samples` (or any other to compare with).
    samples: the graded samples.
    labels: [Q, N, S] the verifier's step labels (`true_step_labels`).
  """
  steps = sample_steps_texts(samples)
  errors = first_errors(labels, samples)
  where = [tuple(x) for x in np.argwhere(errors)]
  prefixes = {}
  for i, j, k in where:
    prefix = samples.problems[i].prompt + "".join(steps[i][j][:k])
    prefixes.setdefault(prefix, []).append((i, j, k))
  greedy = SolutionSampler(config, tokenizer(),
                           max_prompt_tokens=MAX_PROMPT_TOKENS + MAX_SOLUTION_TOKENS,
                           max_solution_tokens=MAX_SOLUTION_TOKENS,  # the samples' cap
                           step_delimiter=arithmetic.STEP_DELIMITER, max_steps=1)
  texts = list(prefixes)
  out = np.zeros(labels.shape, bool)
  for first in range(0, len(texts), problems_per_batch):
    chunk = texts[first:first + problems_per_batch]
    padded = chunk + [chunk[-1]] * (problems_per_batch - len(chunk))
    result = greedy.sample(params, padded, 1, Sampler.greedy(), jax.random.PRNGKey(0))
    for text, row in zip(chunk, result.texts):
      for i, j, k in prefixes[text]:
        out[i, j, k] = row[0].strip() == steps[i][j][k].strip()
  return out


def likelihood_step_scores(config: TransformerConfig, params, samples: GradedSamples,
                           rows_per_batch: int = 200) -> tuple[np.ndarray, np.ndarray]:
  """A policy as a verifier: each step scored by its least likely token's log-probability.

  The diagnosis of the testbed's PRM: the information that a step is wrong
  (`128*7=886`) is in a policy's own next-token distribution, even where a value head
  trained on the backbone does not read it. This is that reference scorer.

  Returns:
    (scores [Q, N, S], mask [Q, N, S]): step j's min over its tokens of log p(token |
    prompt and earlier tokens) under the policy; steps past S share the last column.
  """
  q, n, t = samples.tokens.shape
  tok = tokenizer()
  prompts = [tok.encode(prob.prompt, add_bos=True) for prob in samples.problems]
  width = max(len(p) for p in prompts) + t
  run = jax.jit(lambda params, tokens: jax.nn.log_softmax(
      forward(params, config, tokens, logits="all").logits, axis=-1))
  scores = np.zeros((q * n, MAX_STEPS), np.float32)
  mask = np.zeros((q * n, MAX_STEPS), bool)
  rows = [(i, j) for i in range(q) for j in range(n)]
  for first in range(0, len(rows), rows_per_batch):
    chunk = rows[first:first + rows_per_batch]
    tokens = np.full((rows_per_batch, width), tok.pad_id, np.int32)
    for r, (i, j) in enumerate(chunk):
      p, g = len(prompts[i]), samples.lengths[i, j]
      tokens[r, :p] = prompts[i]
      tokens[r, p:p + g] = samples.tokens[i, j, :g]
    log_probs = np.asarray(run(params, jnp.asarray(tokens)))
    for r, (i, j) in enumerate(chunk):
      p, g = len(prompts[i]), samples.lengths[i, j]
      # Token at sequence position x is predicted at x - 1.
      token_lp = log_probs[r, np.arange(p - 1, p + g - 1), tokens[r, p:p + g]]
      ends = np.flatnonzero(samples.step_end[i, j, :g])
      starts = np.concatenate([[0], ends[:-1] + 1])
      for k, (a, b) in enumerate(zip(starts, ends)):
        column = min(k, MAX_STEPS - 1)
        scores[first + r, column] = token_lp[a:b + 1].min()
        mask[first + r, column] = True
  return scores.reshape(q, n, MAX_STEPS), mask.reshape(q, n, MAX_STEPS)


def _subset_auroc(scores, labels, groups, negatives) -> float | None:
  """`metrics.grouped_auroc` over the marked negatives; None when no group holds a
  positive beside a marked negative (a policy that rarely errs greedily)."""
  try:
    return metrics.grouped_auroc(scores, labels, groups, negatives=negatives)
  except ValueError:
    return None


def reward_model_report(config: PrmConfig, params, samples: GradedSamples,
                        argmax: np.ndarray | None = None) -> dict:
  """AUROC of a reward model's step scores on sampled solutions (`step_score_report`)."""
  return step_score_report(*score_samples(config, params, samples), samples, argmax)


def step_score_report(scores: np.ndarray, mask: np.ndarray, samples: GradedSamples,
                      argmax: np.ndarray | None = None) -> dict:
  """AUROC of step scores ([Q, N, S] with their mask) against the verifier's labels.

  Returns:
    {"step_auroc": every scored step vs its true label,
     "sibling_auroc": the same, counting only pairs of steps at the same position of
       the same problem whose earlier steps are all right (the comparison a search
       makes between sibling steps),
     "final_auroc": each solution's last scored step vs its final-answer correctness,
     "steps_scored", "solutions_scored"}; with `argmax` ([Q, N, S], `argmax_errors`)
    also "sibling_auroc_argmax_errors": the sibling AUROC of pairs whose wrong step is
    the policy's own greedy step (None when there is no such pair).
  """
  labels = true_step_labels(samples)
  has_steps = mask.any(axis=-1)
  last = np.where(has_steps, mask.shape[-1] - 1 - np.argmax(mask[..., ::-1], axis=-1), 0)
  last_scores = np.take_along_axis(scores, last[..., None], axis=-1)[..., 0]
  # Step j of a sample competes with step j of the problem's other samples when the
  # steps before it are right (labels are prefix-correct, so check step j - 1).
  p, n, s = mask.shape
  prefix_right = np.concatenate([np.ones((p, n, 1), bool), labels[..., :-1]], axis=-1)
  sibling = mask & prefix_right
  group = np.broadcast_to(np.arange(p)[:, None, None] * s + np.arange(s)[None, None, :], mask.shape)
  return {
      "step_auroc": metrics.auroc(scores[mask], labels[mask]),
      "sibling_auroc": metrics.grouped_auroc(scores[sibling], labels[sibling], group[sibling]),
      "final_auroc": metrics.auroc(last_scores[has_steps], samples.correct[has_steps]),
      "steps_scored": int(mask.sum()),
      "solutions_scored": int(has_steps.sum()),
      **({} if argmax is None else {"sibling_auroc_argmax_errors": _subset_auroc(
          scores[sibling], labels[sibling], group[sibling], argmax[sibling])}),
  }


# --------------------------------------------------------------------------- search


def evaluation_problems(problems_per_level: int) -> list[arithmetic.Problem]:
  """The first `problems_per_level` test problems of every level (50: the whole set)."""
  if not 1 <= problems_per_level <= 50:
    raise ValueError(f"problems_per_level must be in 1..50, got {problems_per_level}.")
  taken: dict[int, int] = {}
  chosen = []
  for problem in arithmetic.test_problems():
    if taken.get(problem.level, 0) < problems_per_level:
      taken[problem.level] = taken.get(problem.level, 0) + 1
      chosen.append(problem)
  return chosen


def problem_id(problem: arithmetic.Problem) -> int:
  """A stable integer id of a test problem: 1000 * level + its index in the level."""
  return 1000 * problem.level + int(problem.uid.rsplit("-", 1)[1])


def load_revision_model(path: str) -> tuple[TransformerConfig, dict, str]:
  """(config, params, attempt separator) of an exported testbed revision model.

  Raises:
    ValueError: the export there is not a revision model (no attempt separator).
  """
  config, params, extra = load_policy(path)
  if extra.get("stage") != "revision_sft" or not extra.get("attempt_separator"):
    raise ValueError(f"{path} holds a policy, not a revision model (its model.json records no "
                     "attempt_separator); point at a `revision_sft` export, e.g. "
                     f"{shipped_checkpoint('revision')}.")
  return config, params, extra["attempt_separator"]


def search_runner(policy_dir: str, prm_dir: str, caps: dict, mesh=None,
                  revision_dir: str | None = None):
  """A `SearchRunner` over exported testbed models (the shipped ones by default); with
  `revision_dir`, strategies that revise run that revision model."""
  policy = load_policy(policy_dir)[:2]
  prm = load_reward_model(prm_dir)[:2]
  revision, separator = None, ""
  if revision_dir:
    *revision, separator = load_revision_model(revision_dir)
    revision = tuple(revision)
  return SearchRunner(policy, prm, tokenizer(),
                      lambda text: arithmetic.canonical_answer(arithmetic.extract_answer(text)),
                      step_delimiter=arithmetic.STEP_DELIMITER, mesh=mesh,
                      revision_policy=revision, attempt_separator=separator, **caps)
