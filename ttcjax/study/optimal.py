"""Compute-optimal curves and the budget-allocating solver, scored held out.

Per budget, each difficulty bin picks the option with the best accuracy on half of
the questions and is scored on the other half (two-fold cross-validation, repeated);
the best-of-N reference curve is its plain mean over all questions. Efficiency
ratios compare the budget best-of-N needs to match a compute-optimal point. Y
denotes bins, Q questions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttcjax.study import allocation
from ttcjax.study.allocation import Option, ResultTable


def compute_optimal(table: ResultTable, bins: np.ndarray, num_bins: int, budgets: Sequence[int],
                    repeats: int, seed: int = 0) -> list[dict]:
  """Per budget: the per-bin best option, scored by two-fold cross-validation.

  Returns:
    one dict per budget with the held-out "accuracy" (mean over repeats), its 2.5-97.5
    percentile interval "low"/"high", "per_question" [Q] held-out accuracy averaged
    over repeats, and "choice": the option per bin fitted on all questions (what a
    user would deploy).
  """
  out = []
  everyone = np.ones(len(table.uids), bool)
  for budget in budgets:
    def fit_fn(fit, budget=budget):
      return allocation.per_bin_choice(table, bins, budget, fit, num_bins)

    acc, _ = allocation.cross_validated_outcomes(table, bins, fit_fn, repeats, seed)
    per_repeat = acc.mean(axis=1)
    choice = fit_fn(everyone)
    out.append({"budget": int(budget), "accuracy": float(per_repeat.mean()),
                "low": float(np.percentile(per_repeat, 2.5)),
                "high": float(np.percentile(per_repeat, 97.5)),
                "per_question": acc.mean(axis=0).tolist(),
                "choice": [None if c < 0 else _option_dict(table.options[c]) for c in choice]})
  return out


def _option_dict(option: Option) -> dict:
  return {"strategy": option.strategy, "budget": option.budget}


def efficiency_ratios(points: Sequence[dict], reference: tuple[Sequence[int], Sequence[float]],
                      extra_budget: float = 0.0) -> dict[int, dict]:
  """How many times more budget best-of-N needs to match each compute-optimal point.

  Args:
    points: `compute_optimal`'s output.
    reference: (budgets, accuracy) of best-of-N weighted.
    extra_budget: per-question budget charged on top (difficulty estimation).

  Returns:
    {budget: {"ratio", "bound", "low", "low_bound", "high", "high_bound"}}: the ratio
    at the point's accuracy and at its interval's ends. A bound is "exact", "at least"
    (best-of-N never reaches that accuracy: its largest budget over the spent one) or
    "at most" (best-of-N's smallest budget already does).
  """
  budgets, accuracy = reference
  out = {}
  for p in points:
    spent = p["budget"] + extra_budget
    entry = {}
    for name, key in (("ratio", "accuracy"), ("low", "low"), ("high", "high")):
      value = allocation.efficiency_ratio(spent, p[key], budgets, accuracy)
      bound = "at least" if value < 0 else (
          "at most" if p[key] <= accuracy[int(np.argmin(budgets))] else "exact")
      entry[name] = abs(value)
      entry["bound" if name == "ratio" else f"{name}_bound"] = bound
    out[p["budget"]] = entry
  return out


def ratio_text(value: float, bound: str) -> str:
  """"2.00x", ">2.00x" (at least) or "<=2.00x" (at most)."""
  return {"exact": "", "at least": ">", "at most": "<="}[bound] + f"{value:.2f}x"


def allocate(table: ResultTable, bins: np.ndarray, num_bins: int, mean_budget: float,
             fit: np.ndarray) -> np.ndarray:
  """One option per bin maximising accuracy on `fit` under a mean cost per question.

  Returns [Y] option indices (-1 for a bin without fitted questions, which then
  spends nothing). Costs are the table's (samples or FLOPs), averaged per bin.
  """
  present = [k for k in range(num_bins) if (fit & (bins == k)).any()]
  values = np.array([table.accuracy[:, fit & (bins == k)].mean(axis=1) for k in present])
  costs = np.array([table.cost[:, fit & (bins == k)].mean(axis=1) for k in present])
  weights = np.array([(fit & (bins == k)).sum() for k in present], np.float64)
  chosen, _, _ = allocation.allocate_budget(values, costs, weights / weights.sum(), mean_budget)
  choice = np.full(num_bins, -1)
  choice[present] = chosen
  return choice


def allocation_curve(table: ResultTable, bins: np.ndarray, num_bins: int,
                     mean_budgets: Sequence[float], repeats: int, seed: int = 0) -> list[dict]:
  """The budget-allocating solver, cross-validated, at each mean budget.

  Returns one dict per mean budget: held-out "accuracy", "low", "high", the held-out
  mean "cost" actually spent, and "choice" fitted on all questions.
  """
  out = []
  everyone = np.ones(len(table.uids), bool)
  for budget in mean_budgets:
    def fit_fn(fit, budget=budget):
      return allocate(table, bins, num_bins, budget, fit)

    try:
      acc, cost = allocation.cross_validated_outcomes(table, bins, fit_fn, repeats, seed)
    except ValueError:  # the cheapest options exceed this mean budget
      continue
    per_repeat = acc.mean(axis=1)
    out.append({"mean_budget": float(budget), "accuracy": float(per_repeat.mean()),
                "low": float(np.percentile(per_repeat, 2.5)),
                "high": float(np.percentile(per_repeat, 97.5)), "cost": float(cost.mean()),
                "choice": [None if c < 0 else _option_dict(table.options[c])
                           for c in fit_fn(everyone)]})
  return out
