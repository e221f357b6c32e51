import itertools
import json

import numpy as np
import pytest

from ttcjax.study import allocation, difficulty
from ttcjax.study.allocation import Option, ResultTable


def test_quantile_bins_put_the_easiest_first_and_split_ties_evenly():
  bins = difficulty.quantile_bins(np.array([0.9, 0.1, 0.5, 0.5, 0.5, 0.0, 1.0, 0.3, 0.7, 0.2]), 5)
  assert bins.tolist() == [0, 4, 1, 2, 2, 4, 0, 3, 1, 3]
  assert np.bincount(difficulty.quantile_bins(np.zeros(11), 5)).tolist() == [3, 2, 2, 2, 2]


def test_oracle_and_predicted_bins():
  correct = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]], bool)
  oracle = difficulty.oracle_bins(correct, num_bins=2, cost=3.0)
  assert oracle.values.tolist() == [1.0, 0.0, 0.5, 0.75]
  assert oracle.bins.tolist() == [0, 1, 1, 0] and oracle.cost.tolist() == [3.0] * 4
  predicted = difficulty.predicted_bins(np.array([[0.9], [0.2], [0.4], [0.8]]), num_bins=2)
  assert predicted.bins.tolist() == [0, 1, 1, 0] and predicted.kind == "predicted"


def test_fewer_questions_than_bins_is_refused():
  with pytest.raises(ValueError, match="cannot fill"):
    difficulty.quantile_bins(np.zeros(3), 5)


def synthetic_table():
  """Two bins of four questions; "beam" wins on bin 0, "bon" on bin 1, at budget 4."""
  options = (Option("bon", 4), Option("beam", 4), Option("bon", 16))
  accuracy = np.array([
      [0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9],
      [0.8, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1],
      [0.9, 0.9, 0.9, 0.9, 0.95, 0.95, 0.95, 0.95]])
  cost = np.array([[4.0] * 8, [4.0] * 8, [16.0] * 8])
  return ResultTable(options, accuracy, cost, tuple(f"q{i}" for i in range(8)))


def test_per_bin_choice_finds_the_known_optimum():
  table = synthetic_table()
  bins = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  choice = allocation.per_bin_choice(table, bins, 4, np.ones(8, bool), num_bins=2)
  assert [table.options[i].strategy for i in choice] == ["beam", "bon"]
  cv = allocation.cross_validate(
      table, bins, lambda fit: allocation.per_bin_choice(table, bins, 4, fit, 2), repeats=5)
  assert cv["accuracy"] == pytest.approx(0.85) and cv["cost"] == 4.0


def test_cross_validation_never_scores_on_the_fold_it_fitted():
  # Option o is right on question o alone, and a fit picks the option of its own
  # first question: any question scored by a choice fitted on it would score 1.
  p = 8
  options = tuple(Option("s", o) for o in range(p))
  table = ResultTable(options, np.eye(p), np.ones((p, p)), tuple(f"q{i}" for i in range(p)))
  bins = np.zeros(p, int)
  fits = []

  def fit_fn(fit):
    fits.append(fit.copy())
    return np.array([int(np.nonzero(fit)[0][0])])

  accuracy, cost = allocation.cross_validated_outcomes(table, bins, fit_fn, repeats=7)
  assert accuracy.shape == cost.shape == (7, p)
  assert len(fits) == 14 and all(f.sum() == p // 2 for f in fits)
  assert (accuracy == 0).all() and (cost == 1).all()  # every question scored, never leaked


def test_knapsack_matches_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(30):
    k, o = rng.integers(1, 4), rng.integers(1, 5)
    values = rng.random((k, o))
    costs = rng.integers(1, 20, (k, o)).astype(float)
    weights = rng.dirichlet(np.ones(k))
    budget = float(rng.uniform(costs.min(), costs.max()))
    best = -1.0
    for combo in itertools.product(range(o), repeat=k):
      c = sum(weights[i] * costs[i, j] for i, j in enumerate(combo))
      v = sum(weights[i] * values[i, j] for i, j in enumerate(combo))
      if c <= budget + 1e-9:
        best = max(best, v)
    if best < 0:
      with pytest.raises(ValueError, match="fits"):
        allocation.allocate_budget(values, costs, weights, budget)
      continue
    choice, value, cost = allocation.allocate_budget(values, costs, weights, budget)
    assert value == pytest.approx(best) and cost <= budget + 1e-9
    assert value == pytest.approx(sum(weights[i] * values[i, j] for i, j in enumerate(choice)))


def test_efficiency_ratio_interpolates_in_log_budget():
  budgets, acc = [1, 2, 4, 8, 16], [0.1, 0.2, 0.3, 0.4, 0.5]
  assert allocation.efficiency_ratio(4, 0.3, budgets, acc) == pytest.approx(1.0)
  assert allocation.efficiency_ratio(4, 0.45, budgets, acc) == pytest.approx(2 ** 3.5 / 4)
  assert allocation.efficiency_ratio(4, 0.9, budgets, acc) == -4.0  # never reached: > 4x


def test_allocation_file_round_trip_and_task_check(tmp_path):
  path = str(tmp_path / "alloc.json")
  allocation.save_allocation(path, "arith", "oracle", {4: [Option("beam", 4), None]}, [0.5])
  loaded = allocation.load_allocation(path, "arith")
  assert loaded["choices"][4] == [Option("beam", 4), None]
  assert allocation.bin_of(0.7, loaded["bin_edges"]) == 0 and allocation.bin_of(0.2, [0.5]) == 1
  with pytest.raises(ValueError, match="another task|fitted on task"):
    allocation.load_allocation(path, "math500")


def test_missing_strategy_and_bad_shapes_are_refused():
  table = synthetic_table()
  with pytest.raises(ValueError, match="no runs of"):
    table.require(["bon", "lookahead"])
  with pytest.raises(ValueError, match="accuracy must be"):
    ResultTable(table.options, table.accuracy[:, :3], table.cost, table.uids)
  with pytest.raises(ValueError, match="one bin per question"):
    allocation.per_bin_choice(table, np.zeros(3, int), 4, np.ones(8, bool), 2)
