import numpy as np
import pytest

from ttcjax import metrics


def brute_force_auroc(scores, labels):
  pos = [s for s, l in zip(scores, labels) if l]
  neg = [s for s, l in zip(scores, labels) if not l]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auroc_hand_computed():
  assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert metrics.auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
  assert metrics.auroc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
  assert metrics.auroc([0.5] * 6, [0, 1, 0, 1, 1, 0]) == 0.5


def test_auroc_matches_pairwise_count_with_ties():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, 200) / 4.0  # many ties
  labels = rng.random(200) < scores * 0.8
  assert metrics.auroc(scores, labels) == pytest.approx(brute_force_auroc(scores, labels))


def test_auroc_rejects_bad_input():
  with pytest.raises(ValueError, match="both classes"):
    metrics.auroc([0.1, 0.2], [1, 1])
  with pytest.raises(ValueError, match="labels"):
    metrics.auroc([0.1, 0.2, 0.3], [1, 0])


def test_pass_rates():
  np.testing.assert_allclose(metrics.pass_rates([[1, 0, 1, 1], [0, 0, 0, 0]]), [0.75, 0.0])
  with pytest.raises(ValueError, match="samples"):
    metrics.pass_rates(np.zeros((3, 0)))


def test_grouped_auroc_sees_through_a_difficulty_only_scorer():
  # Two groups: an easy one (all scored 0.9) and a hard one (all 0.1). A scorer that
  # only knows the group ranks positives above negatives across groups, not within.
  labels = [True, True, False, True, False, False]
  groups = [0, 0, 0, 1, 1, 1]
  scores = [0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
  assert metrics.auroc(scores, labels) == pytest.approx(6 / 9)
  assert metrics.grouped_auroc(scores, labels, groups) == pytest.approx(0.5)
  # Within-group ranking: group 0 right (2 of 2 pairs), group 1 wrong (0 of 2).
  ranked = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]
  assert metrics.grouped_auroc(ranked, labels, groups) == pytest.approx(0.5)
  assert metrics.grouped_auroc([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], labels, groups) == 1.0
  with pytest.raises(ValueError, match="No group"):
    metrics.grouped_auroc([0.1, 0.2], [True, False], [0, 1])


def test_grouped_auroc_over_a_subset_of_negatives():
  # One group: positives 0.9, 0.5; negatives 0.8 (an error the policy makes greedily)
  # and 0.1 (one it does not). All pairs: 3 of 4 right; pairs with the marked
  # negative only: 1 of 2.
  scores, labels, groups = [0.9, 0.5, 0.8, 0.1], [True, True, False, False], [0, 0, 0, 0]
  assert metrics.grouped_auroc(scores, labels, groups) == pytest.approx(0.75)
  marked = [False, False, True, False]
  assert metrics.grouped_auroc(scores, labels, groups, negatives=marked) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="No group"):
    metrics.grouped_auroc(scores, labels, groups, negatives=[False] * 4)
  with pytest.raises(ValueError, match="negative marks"):
    metrics.grouped_auroc(scores, labels, groups, negatives=[True])
