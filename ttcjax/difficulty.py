"""Question difficulty: oracle bins from pass@1, predicted bins from PRM scores.

Snell et al. bin questions into five quantiles of the base policy's pass@1 over many
samples (oracle difficulty, it needs the answers), or of the mean final-answer PRM
score over the same samples (predicted difficulty, it does not). Bin 0 holds the
easiest questions (highest pass@1 or score), bin K-1 the hardest. Estimating either
costs the samples it reads; `DifficultyBins.cost` records it (per question) so that
it can be charged to a question's budget, which the paper does not do.

P denotes questions, S samples per question, K bins.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DifficultyBins:
  """Bins of P questions.

  Attributes:
    kind: "oracle" or "predicted".
    values: [P] the binned statistic (pass@1, or the mean final PRM score).
    bins: [P] int, 0 (easiest) .. K-1 (hardest).
    num_bins: K.
    cost: [P] what estimating each question's difficulty spent (e.g. FLOPs).
  """

  kind: str
  values: np.ndarray
  bins: np.ndarray
  num_bins: int
  cost: np.ndarray


def quantile_bins(values: np.ndarray, num_bins: int = 5) -> np.ndarray:
  """Equal-count bins by descending value: bin 0 holds the highest values.

  Ties are broken by question order (a stable sort), so bins always have sizes
  floor(P / K) or ceil(P / K) even when many questions share a value.
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
  """Bins by pass@1: `correct` is [P, S] bool over S policy samples per question."""
  correct = np.asarray(correct, bool)
  if correct.ndim != 2 or correct.shape[1] == 0:
    raise ValueError(f"correct must be [questions, samples] with samples > 0, got {correct.shape}.")
  values = correct.mean(axis=1)
  return DifficultyBins("oracle", values, quantile_bins(values, num_bins), num_bins,
                        _cost(cost, values.size))


def predicted_bins(final_scores: np.ndarray, num_bins: int = 5,
                   cost: np.ndarray | None = None) -> DifficultyBins:
  """Bins by the mean final-answer verifier score: `final_scores` is [P, S]."""
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
