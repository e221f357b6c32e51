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
  """Per-problem pass@1 estimates: [Q, N] bools (N samples each) -> [Q] fractions."""
  correct = np.asarray(correct, bool)
  if correct.ndim != 2 or correct.shape[1] == 0:
    raise ValueError(f"Expected [problems, samples] with samples > 0, got {correct.shape}.")
  return correct.mean(axis=1)


def grouped_auroc(scores: Sequence[float], labels: Sequence[bool], groups: Sequence[int],
                  negatives: Sequence[bool] | None = None) -> float:
  """AUROC counting only (positive, negative) pairs from the same group.

  P(score of a positive > score of a negative of its own group), ties one half,
  pooled over all within-group pairs. Ranking inside groups is what a search needs
  (it compares siblings), which a pooled AUROC can hide: a scorer that only knows how
  hard each group is gets a high `auroc` but 0.5 here.

  Args:
    scores: [M] real scores.
    labels: [M] bools, True for positives.
    groups: [M] group ids.
    negatives: optional [M] bools: count only pairs whose negative is marked (e.g. the
      errors a policy makes greedily), so that AUROC measures that kind of error alone.

  Raises:
    ValueError: lengths differ, or no group has both classes.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels, bool).reshape(-1)
  groups = np.asarray(groups).reshape(-1)
  chosen = (np.ones_like(labels) if negatives is None
            else np.asarray(negatives, bool).reshape(-1))
  if not scores.shape == labels.shape == groups.shape == chosen.shape:
    raise ValueError(f"{scores.size} scores, {labels.size} labels, {groups.size} groups and "
                     f"{chosen.size} negative marks.")
  wins, pairs = 0.0, 0
  for g in np.unique(groups):
    member = groups == g
    pos, neg = scores[member & labels], scores[member & ~labels & chosen]
    if pos.size and neg.size:
      diff = pos[:, None] - neg[None, :]
      wins += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
      pairs += diff.size
  if pairs == 0:
    raise ValueError("No group holds both a positive and a negative; AUROC within groups is "
                     "undefined.")
  return wins / pairs
