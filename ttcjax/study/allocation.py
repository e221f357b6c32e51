"""The compute-optimal solver: which strategy (and which budget) each difficulty bin gets.

Input is a result table: for every option (a strategy with its hyperparameters at
one budget) and every question, the expected correctness of the selected answer
and the compute spent. Two solvers:

* `per_bin_choice` (the paper's): per bin and per budget, the option with the best
  mean accuracy on the questions it is fitted on.
* `allocate_budget` (beyond the paper): under a mean budget per question, one option
  per bin maximising expected accuracy, solved exactly as a multiple-choice knapsack
  by merging the bins' Pareto fronts of (cost, accuracy).

Both are scored by two-fold cross-validation (`cross_validate`): questions are split
at random into halves, the choice is fitted on one half and scored on the other and
the other way round, and splits are repeated; the interval is the 2.5-97.5
percentile range over repeats.

O denotes options, Q questions, Y bins (the glossary of `ttcjax.search.base`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Option:
  """A strategy setting at one budget. `budget` is in the paper's unit (samples)."""

  strategy: str
  budget: int


@dataclasses.dataclass(frozen=True)
class ResultTable:
  """Expected correctness and cost of every option on every question.

  Attributes:
    options: O options.
    accuracy: [O, Q] in [0, 1].
    cost: [O, Q] compute per question (samples, or FLOPs).
    uids: Q question ids.
  """

  options: tuple[Option, ...]
  accuracy: np.ndarray
  cost: np.ndarray
  uids: tuple[str, ...]

  def __post_init__(self):
    o, p = len(self.options), len(self.uids)
    for name in ("accuracy", "cost"):
      if np.shape(getattr(self, name)) != (o, p):
        raise ValueError(f"{name} must be [options={o}, questions={p}], got "
                         f"{np.shape(getattr(self, name))}.")

  def budgets(self) -> list[int]:
    return sorted({opt.budget for opt in self.options})

  def strategies(self) -> list[str]:
    return sorted({opt.strategy for opt in self.options})

  def only(self, strategies: Sequence[str]) -> "ResultTable":
    """The table restricted to the options of `strategies` (order kept)."""
    keep = [i for i, o in enumerate(self.options) if o.strategy in set(strategies)]
    return ResultTable(tuple(self.options[i] for i in keep), self.accuracy[keep],
                       self.cost[keep], self.uids)

  def require(self, strategies: Sequence[str]) -> None:
    """ValueError if the table lacks a strategy the caller asks for."""
    missing = sorted(set(strategies) - set(self.strategies()))
    if missing:
      raise ValueError(f"The results hold no runs of {missing}; they have {self.strategies()}. "
                       "Run the sweep with those strategies first.")


def _check_bins(table: ResultTable, bins: np.ndarray) -> np.ndarray:
  bins = np.asarray(bins)
  if bins.shape != (len(table.uids),):
    raise ValueError(f"Need one bin per question ({len(table.uids)}), got shape {bins.shape}.")
  return bins


def per_bin_choice(table: ResultTable, bins: np.ndarray, budget: int, fit: np.ndarray,
                   num_bins: int, allowed: Callable[[Option], bool] = lambda o: True
                   ) -> np.ndarray:
  """Per bin, the index of the best option at `budget` on the questions `fit` selects.

  Args:
    table: the results.
    bins: [Q] bin of each question.
    budget: the budget every chosen option must have.
    fit: [Q] bool, the questions the choice may look at.
    num_bins: Y.
    allowed: which options may be chosen (e.g. leave out a strategy).

  Returns:
    [Y] option indices (-1 for a bin with no fitting question or no option).
  """
  bins = _check_bins(table, bins)
  candidates = [i for i, o in enumerate(table.options) if o.budget == budget and allowed(o)]
  choice = np.full(num_bins, -1)
  if not candidates:
    return choice
  for k in range(num_bins):
    members = fit & (bins == k)
    if members.any():
      means = table.accuracy[candidates][:, members].mean(axis=1)
      choice[k] = candidates[int(np.argmax(means))]  # ties: the first option listed
  return choice


def cross_validated_outcomes(table: ResultTable, bins: np.ndarray,
                             fit_fn: Callable[[np.ndarray], np.ndarray], repeats: int = 20,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Every question's held-out accuracy and cost under two-fold cross-validation.

  In each repeat the questions are split at random into halves; the choice fitted on
  one half is applied to the other, and the other way round, so every question is
  scored once per repeat by a choice that never saw it.

  Args:
    table: the results.
    bins: [Q] bin of each question.
    fit_fn: fit mask [Q] -> choice [Y] (option per bin, -1 for none), fitted only on
      that mask.
    repeats: random splits.
    seed: the splits' seed.

  Returns:
    (accuracy [repeats, Q], cost [repeats, Q]); a bin without a choice scores 0 at
    no cost.
  """
  bins = _check_bins(table, bins)
  p = len(table.uids)
  if p < 2:
    raise ValueError("Cross-validation needs at least two questions.")
  if repeats < 1:
    raise ValueError(f"repeats must be positive, got {repeats}.")
  rng = np.random.default_rng(seed)
  accuracy, cost = np.zeros((repeats, p)), np.zeros((repeats, p))
  for r in range(repeats):
    half = np.zeros(p, bool)
    half[rng.permutation(p)[:p // 2]] = True
    for fit in (half, ~half):
      held_out = np.nonzero(~fit)[0]
      picked = fit_fn(fit)[bins[held_out]]
      valid = picked >= 0
      accuracy[r, held_out] = np.where(
          valid, table.accuracy[np.maximum(picked, 0), held_out], 0.0)
      cost[r, held_out] = np.where(valid, table.cost[np.maximum(picked, 0), held_out], 0.0)
  return accuracy, cost


def cross_validate(table: ResultTable, bins: np.ndarray,
                   fit_fn: Callable[[np.ndarray], np.ndarray], repeats: int = 20,
                   seed: int = 0) -> dict[str, float]:
  """Two-fold cross-validated accuracy and cost of a solver.

  Args:
    table, bins, fit_fn, repeats: as for `cross_validated_outcomes`.

  Returns:
    {"accuracy", "accuracy_low", "accuracy_high", "cost"}: the mean over repeats of
    the held-out accuracy, and its 2.5 / 97.5 percentiles over repeats.
  """
  accuracy, cost = cross_validated_outcomes(table, bins, fit_fn, repeats, seed)
  per_repeat = accuracy.mean(axis=1)
  return {"accuracy": float(per_repeat.mean()),
          "accuracy_low": float(np.percentile(per_repeat, 2.5)),
          "accuracy_high": float(np.percentile(per_repeat, 97.5)),
          "cost": float(cost.mean())}


# ------------------------------------------------------------- budget allocation


def _pareto(costs: np.ndarray, values: np.ndarray, labels: list) -> tuple:
  """Points not dominated (lower-or-equal cost with higher value), sorted by cost."""
  order = np.lexsort((-values, costs))
  keep_c, keep_v, keep_l = [], [], []
  best = -np.inf
  for i in order:
    if values[i] > best:
      keep_c.append(costs[i])
      keep_v.append(values[i])
      keep_l.append(labels[i])
      best = values[i]
  return np.array(keep_c), np.array(keep_v), keep_l


def allocate_budget(values: np.ndarray, costs: np.ndarray, weights: np.ndarray,
                    mean_budget: float) -> tuple[np.ndarray, float, float]:
  """One option per bin maximising the weighted mean value under a mean-cost cap.

  Exact: the bins' Pareto fronts are merged one bin at a time (a multiple-choice
  knapsack), keeping every combination not dominated in (total cost, total value).

  Args:
    values: [Y, O] expected accuracy of option o on bin k (NaN: not available).
    costs: [Y, O] mean cost per question of option o on bin k.
    weights: [Y] share of questions in each bin (sums to 1).
    mean_budget: the cap on the weighted mean cost.

  Returns:
    (choice [Y] option indices, weighted mean value, weighted mean cost).

  Raises:
    ValueError: no combination fits the budget.
  """
  values, costs = np.asarray(values, np.float64), np.asarray(costs, np.float64)
  weights = np.asarray(weights, np.float64)
  if values.shape != costs.shape or values.shape[0] != weights.shape[0]:
    raise ValueError(f"values {values.shape}, costs {costs.shape} and weights {weights.shape} "
                     "must agree on bins and options.")
  front_c, front_v, front_l = np.zeros(1), np.zeros(1), [()]
  for k in range(values.shape[0]):
    ok = np.isfinite(values[k]) & np.isfinite(costs[k])
    if not ok.any():
      raise ValueError(f"Bin {k} has no option with a finite accuracy and cost.")
    opts = np.nonzero(ok)[0]
    bc, bv, bl = _pareto(weights[k] * costs[k, opts], weights[k] * values[k, opts], list(opts))
    c = (front_c[:, None] + bc[None, :]).ravel()
    v = (front_v[:, None] + bv[None, :]).ravel()
    labels = [fl + (o,) for fl in front_l for o in bl]
    within = c <= mean_budget * (1 + 1e-12)
    if not within.any():
      raise ValueError(f"No choice of options fits a mean budget of {mean_budget}; the cheapest "
                       f"costs {float(c.min())}.")
    front_c, front_v, front_l = _pareto(c[within], v[within], [l for l, w in zip(labels, within) if w])
  best = int(np.argmax(front_v))
  return np.array(front_l[best]), float(front_v[best]), float(front_c[best])


def efficiency_ratio(budget: float, accuracy: float, reference_budgets: Sequence[float],
                     reference_accuracy: Sequence[float]) -> float:
  """How many times more budget the reference needs to match `accuracy` at `budget`.

  The reference curve is interpolated linearly in log2(budget) between its points;
  the first budget where it reaches `accuracy` counts. When it never does, the
  result is a lower bound, max budget / budget, returned negated (-x means "more
  than x").
  """
  b = np.log2(np.asarray(reference_budgets, np.float64))
  a = np.asarray(reference_accuracy, np.float64)
  order = np.argsort(b)
  b, a = b[order], a[order]
  if a[0] >= accuracy:
    return float(2 ** b[0] / budget)
  for i in range(1, len(b)):
    if a[i] >= accuracy:
      t = (accuracy - a[i - 1]) / (a[i] - a[i - 1])
      return float(2 ** (b[i - 1] + t * (b[i] - b[i - 1])) / budget)
  return -float(2 ** b[-1] / budget)


# ---------------------------------------------------------------------- persistence


def save_allocation(path: str, task: str, kind: str, choices: dict[int, list[Option | None]],
                    bin_edges: Sequence[float]) -> None:
  """Writes a fitted per-bin allocation: {budget: option per bin}, with the bin edges
  (descending statistic thresholds) needed to bin new questions."""
  payload = {"task": task, "kind": kind, "bin_edges": [float(e) for e in bin_edges],
             "choices": {str(b): [None if o is None else dataclasses.asdict(o) for o in opts]
                         for b, opts in choices.items()}}
  with open(path, "w") as f:
    json.dump(payload, f, indent=2)


def load_allocation(path: str, task: str) -> dict:
  """Reads `save_allocation`'s file; ValueError if it was fitted on another task."""
  with open(path) as f:
    payload = json.load(f)
  if payload.get("task") != task:
    raise ValueError(f"{path} holds an allocation fitted on task {payload.get('task')!r}, "
                     f"not {task!r}; fit one on this task's results.")
  payload["choices"] = {int(b): [None if o is None else Option(**o) for o in opts]
                        for b, opts in payload["choices"].items()}
  return payload


def bin_of(value: float, bin_edges: Sequence[float]) -> int:
  """The bin of a new question's statistic: edges are the lower bounds of bins 0..Y-2."""
  for k, edge in enumerate(bin_edges):
    if value >= edge:
      return k
  return len(bin_edges)
