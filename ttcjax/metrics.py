"""Evaluation metrics shared by the testbed and the search experiments."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
  """Area under the ROC curve: P(score of a positive > score of a negative).

  Ties count one half (the Mann-Whitney U statistic over average ranks), so a
  constant scorer gets 0.5.

  Args:
    scores: [M] real scores.
    labels: [M] bools, True for positives.

  Raises:
    ValueError: lengths differ, or the labels are all one class (AUROC undefined).
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels, bool).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f"{scores.size} scores but {labels.size} labels.")
  positives = int(labels.sum())
  negatives = labels.size - positives
  if positives == 0 or negatives == 0:
    raise ValueError(
        f"AUROC needs both classes; got {positives} positives and {negatives} negatives.")
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  # 1-based average rank of each distinct value: its last rank minus half its ties.
  average_rank = np.cumsum(counts) - (counts - 1) / 2.0
  rank_sum = average_rank[inverse][labels].sum()
  return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def pass_rates(correct: np.ndarray) -> np.ndarray:
  """Per-problem pass@1 estimates: [P, N] bools (N samples each) -> [P] fractions."""
  correct = np.asarray(correct, bool)
  if correct.ndim != 2 or correct.shape[1] == 0:
    raise ValueError(f"Expected [problems, samples] with samples > 0, got {correct.shape}.")
  return correct.mean(axis=1)
