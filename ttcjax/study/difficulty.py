"""Question difficulty: oracle bins from pass@1, predicted bins from PRM scores.

Snell et al. bin questions into five quantiles of the base policy's pass@1 over many
samples (oracle difficulty, it needs the answers), or of the mean final-answer PRM
score over the same samples (predicted difficulty, it does not). Bin 0 holds the
easiest questions (highest pass@1 or score), bin K-1 the hardest. Estimating either
costs the samples it reads; `DifficultyBins.cost` records it (per question) so that
it can be charged to a question's budget, which the paper does not do.

Q denotes questions, X samples per question, Y bins.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ttcjax.study.outcomes import BEST_OF_N
from ttcjax.sweep import report, select


@dataclasses.dataclass(frozen=True)
class DifficultyBins:
  """Bins of Q questions.

  Attributes:
    kind: "oracle" or "predicted".
    values: [Q] the binned statistic (pass@1, or the mean final PRM score).
    bins: [Q] int, 0 (easiest) .. Y-1 (hardest).
    num_bins: Y.
    cost: [Q] what estimating each question's difficulty spent (e.g. FLOPs).
  """

  kind: str
  values: np.ndarray
  bins: np.ndarray
  num_bins: int
  cost: np.ndarray


def quantile_bins(values: np.ndarray, num_bins: int = 5) -> np.ndarray:
  """Equal-count bins by descending value: bin 0 holds the highest values.

  Ties are broken by question order (a stable sort), so bins always have sizes
  floor(Q / Y) or ceil(Q / Y) even when many questions share a value.
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 1:
    raise ValueError(f"values must be one per question, got shape {values.shape}.")
  if num_bins < 1:
    raise ValueError(f"num_bins must be positive, got {num_bins}.")
  if values.size < num_bins:
    raise ValueError(f"{values.size} questions cannot fill {num_bins} difficulty bins; "
                     "use fewer bins or more questions.")
  order = np.argsort(-values, kind="stable")
  bins = np.empty(values.size, np.int64)
  bins[order] = np.arange(values.size) * num_bins // values.size
  return bins


def oracle_bins(correct: np.ndarray, num_bins: int = 5,
                cost: np.ndarray | None = None) -> DifficultyBins:
  """Bins by pass@1: `correct` is [Q, X] bool over X policy samples per question."""
  correct = np.asarray(correct, bool)
  if correct.ndim != 2 or correct.shape[1] == 0:
    raise ValueError(f"correct must be [questions, samples] with samples > 0, got {correct.shape}.")
  values = correct.mean(axis=1)
  return DifficultyBins("oracle", values, quantile_bins(values, num_bins), num_bins,
                        _cost(cost, values.size))


def predicted_bins(final_scores: np.ndarray, num_bins: int = 5,
                   cost: np.ndarray | None = None) -> DifficultyBins:
  """Bins by the mean final-answer verifier score: `final_scores` is [Q, X]."""
  final_scores = np.asarray(final_scores, np.float64)
  if final_scores.ndim != 2 or final_scores.shape[1] == 0:
    raise ValueError(
        f"final_scores must be [questions, samples] with samples > 0, got {final_scores.shape}.")
  values = final_scores.mean(axis=1)
  return DifficultyBins("predicted", values, quantile_bins(values, num_bins), num_bins,
                        _cost(cost, values.size))


def _cost(cost, size: int) -> np.ndarray:
  if cost is None:
    return np.zeros(size)
  cost = np.broadcast_to(np.asarray(cost, np.float64), (size,))
  return np.array(cost)


def difficulty_bins(records: Sequence[dict], uids: Sequence[str], num_bins: int
                    ) -> dict[str, DifficultyBins]:
  """Oracle and predicted bins from one best-of-N run of X samples per question.

  The oracle statistic is pass@1 over the X samples; the predicted one is the mean
  of the PRM's final step score over them (0 for a sample with no scored step).
  Each question's cost is the run's FLOPs for it.
  """
  by_uid = {r["uid"]: r for r in records}
  missing = [u for u in uids if u not in by_uid]
  if missing:
    raise ValueError(f"The difficulty samples lack {len(missing)} questions (e.g. {missing[0]}).")
  run = [by_uid[u] for u in uids]
  if {r["name"] for r in run} != {BEST_OF_N} or len({len(r["answers"]) for r in run}) != 1:
    raise ValueError("Difficulty needs one best-of-N run with the same number of samples per question.")
  correct = np.array([r["correct"] for r in run], bool)
  scores, mask = report.score_table(run)
  final = select.aggregate(scores, mask, "last")
  cost = np.array([r["flops"]["total_flops"] for r in run])
  return {"oracle": oracle_bins(correct, num_bins, cost),
          "predicted": predicted_bins(final, num_bins, cost)}
