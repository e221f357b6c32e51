"""The testbed's models and how their quality is measured.

The shipped checkpoints (`checkpoints/arith/` in the repository) are a small policy,
a large policy (for the FLOPs-matched comparison), a PRM and an ORM, all trained by
`ttcjax.training.pipeline` on the arithmetic task. This module loads them (checking
that each is what its caller expects) and measures:

* a policy's pass@1 per problem (N samples each), overall, per level, and the
  shares of problems it nearly always / nearly never solves;
* a reward model's AUROC against the verifier's true step labels (every scored
  step) and against final-answer correctness (the last step's score).

P denotes problems, N samples per problem, T the solution buffer, S score columns.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Sequence

import jax
import numpy as np

from ttcjax import metrics
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig
from ttcjax.models.tokenizer import CharTokenizer
from ttcjax.rollouts import SolutionSampler, SolutionScorer
from ttcjax.sampling import Sampler
from ttcjax.search import archive, sweep
from ttcjax.search.runner import SearchRunner
from ttcjax.tasks import arith
from ttcjax.training import checkpoints

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "checkpoints", "arith")
SHIPPED_MODELS = ("policy_small", "policy_large", "prm", "orm")
MAX_PROMPT_TOKENS = 48
MAX_SOLUTION_TOKENS = 160
MAX_STEPS = 12
EASY_THRESHOLD = 0.9  # a problem with pass@1 above this counts as "nearly always"
HARD_THRESHOLD = 0.1  # below this, "nearly never"


def tokenizer() -> CharTokenizer:
  """The testbed's character tokenizer (every testbed model uses it)."""
  return CharTokenizer(arith.ALPHABET)


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
  config, params, extra = checkpoints.load_exported(path)
  if not isinstance(config, TransformerConfig):
    raise ValueError(f"{path} holds a reward model, not a policy; point at a policy export.")
  _check_vocab(path, config.vocab_size)
  return config, params, extra


def load_reward_model(path: str) -> tuple[PrmConfig, dict, dict]:
  """(config, params, extra) of an exported testbed PRM or ORM (see `load_policy`)."""
  config, params, extra = checkpoints.load_exported(path)
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
  """N graded solutions for each of P problems.

  Attributes:
    problems: the P problems.
    texts: P lists of N solution texts.
    correct: [P, N] bool, the final answer is right.
    tokens: [P, N, T] generated tokens (EOS included, pad after).
    step_end: [P, N, T] bool, the last token of each step.
    lengths: [P, N] generated tokens.
    tokens_generated: policy tokens sampled in all.
    wall_s: sampling time, compiles included.
  """

  problems: list[arith.Problem]
  texts: list[list[str]]
  correct: np.ndarray
  tokens: np.ndarray
  step_end: np.ndarray
  lengths: np.ndarray
  tokens_generated: int
  wall_s: float


def sample_and_grade(config: TransformerConfig, params, problems: Sequence[arith.Problem],
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
                                     step_delimiter=arith.STEP_DELIMITER)
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
  correct = np.array([[arith.is_correct(p, t) for t in row] for p, row in zip(problems, texts)])
  return GradedSamples(list(problems), texts, correct, np.concatenate(tokens),
                       np.concatenate(step_end), np.concatenate(lengths), generated, wall)


def pass_rate_report(problems: Sequence[arith.Problem], correct: np.ndarray) -> dict:
  """pass@1 overall and per level, and the shares of near-always / near-never problems.

  Args:
    problems: P problems.
    correct: [P, N] bool.

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
    (scores [P, N, S], mask [P, N, S]): step j of a sample is scored at its last
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
  """[P, N, S] bool: the verifier's label of every step (False past the steps)."""
  p, n, _ = samples.tokens.shape
  tok = tokenizer()
  labels = np.zeros((p, n, MAX_STEPS), bool)
  for i, problem in enumerate(samples.problems):
    for j in range(n):
      ends = np.nonzero(samples.step_end[i, j, :samples.lengths[i, j]])[0]
      starts = np.concatenate([[0], ends[:-1] + 1])
      steps = [tok.decode(samples.tokens[i, j, a:b + 1]) for a, b in zip(starts, ends)]
      truth = arith.step_labels(problem, steps)[:MAX_STEPS]
      labels[i, j, :len(truth)] = truth
  return labels


def reward_model_report(config: PrmConfig, params, samples: GradedSamples) -> dict:
  """AUROC of a reward model's step scores on sampled solutions.

  Returns:
    {"step_auroc": every scored step vs its true label,
     "sibling_auroc": the same, counting only pairs of steps at the same position of
       the same problem whose earlier steps are all right (the comparison a search
       makes between sibling steps),
     "final_auroc": each solution's last scored step vs its final-answer correctness,
     "steps_scored", "solutions_scored"}.
  """
  scores, mask = score_samples(config, params, samples)
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
  }


# --------------------------------------------------------------------------- search


def evaluation_problems(problems_per_level: int) -> list[arith.Problem]:
  """The first `problems_per_level` test problems of every level (50: the whole set)."""
  if not 1 <= problems_per_level <= 50:
    raise ValueError(f"problems_per_level must be in 1..50, got {problems_per_level}.")
  taken: dict[int, int] = {}
  chosen = []
  for problem in arith.test_problems():
    if taken.get(problem.level, 0) < problems_per_level:
      taken[problem.level] = taken.get(problem.level, 0) + 1
      chosen.append(problem)
  return chosen


def problem_id(problem: arith.Problem) -> int:
  """A stable integer id of a test problem: 1000 * level + its index in the level."""
  return 1000 * problem.level + int(problem.uid.rsplit("-", 1)[1])


def search_runner(policy_dir: str, prm_dir: str, caps: dict, mesh=None):
  """A `SearchRunner` over exported testbed models (the shipped ones by default)."""
  policy = load_policy(policy_dir)[:2]
  prm = load_reward_model(prm_dir)[:2]
  return SearchRunner(policy, prm, tokenizer(),
                      lambda text: arith.canonical_answer(arith.extract_answer(text)),
                      step_delimiter=arith.STEP_DELIMITER, mesh=mesh, **caps)


SWEEP_WIDENABLE = ("budgets", "seeds", "problems_per_level", "problems_per_batch",
                   "max_rows_per_batch")


def sweep_identity(config: dict) -> dict:
  """A sweep config less the fields a sweep may be widened in: what results of the
  same sweep share (models, caps, sampling, strategies)."""
  return {k: v for k, v in config.items() if k not in SWEEP_WIDENABLE}


def run_search_sweep(config, workdir: str, mesh=None, stop_after_units: int | None = None,
                     progress=None, archive_dir: str | None = None) -> dict:
  """Runs (or resumes) the sweep a `configs/arith/sweep.py` config describes.

  Writes `workdir/results.jsonl` (see `ttcjax.search.sweep`) and returns the run's totals.
  Groups summarised in `archive_dir` (`ttcjax.search.archive`) are skipped; an archive
  of another config or problem set is refused with a ValueError.
  """
  # Results are keyed by (strategy, budget, seed, problem) and a problem's search
  # depends only on its id, so a sweep may be widened in place.
  checkpoints.check_run_config(workdir, config.to_dict(), ignore=SWEEP_WIDENABLE)
  summaries = archive.read(archive_dir)
  archive.check_config(summaries, sweep_identity(config.to_dict()))
  problems = evaluation_problems(config.problems_per_level)
  archive.check_problems(summaries, [p.uid for p in problems])
  runner = search_runner(config.policy_dir, config.prm_dir, dict(config.caps), mesh)
  settings = [sweep.StrategySetting.from_dict(dict(s)) for s in config.strategies]
  units = sweep.plan_units(settings, list(config.budgets), list(config.seeds), len(problems),
                           config.problems_per_batch, config.get("max_rows_per_batch"))
  stats = sweep.run_sweep(
      runner, problems, [p.prompt for p in problems], [problem_id(p) for p in problems],
      [arith.canonical_answer(p.answer) for p in problems], units,
      os.path.join(workdir, "results.jsonl"),
      Sampler(temperature=config.temperature, top_p=config.top_p),
      stop_after_units=stop_after_units, progress=progress,
      skip_keys=archive.done_keys(summaries))
  stats["units_total"] = len(units)
  return stats
