"""Outcome tables: per-question expected correctness and cost of every option.

An option is a (strategy label, generation budget) pair. The records are a sweep's
JSON lines (`ttcjax.sweep`); best-of-N contributes every budget up to its run's N,
read from random subsets of its samples, and majority voting over best-of-N's samples
is an option of its own, so the solver may pick it. Q denotes questions, O options.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from ttcjax import compute
from ttcjax.search import get_strategy
from ttcjax.study.allocation import Option, ResultTable
from ttcjax.sweep import report

MAJORITY = "majority"  # the option label of majority voting over best-of-N's samples
BEST_OF_N = "best_of_n"


def _group(records: Sequence[dict]) -> dict[tuple[str, int], dict[int, dict[str, dict]]]:
  """{(strategy label, run budget): {seed: {uid: record}}}."""
  groups: dict = collections.defaultdict(lambda: collections.defaultdict(dict))
  for r in records:
    groups[(r["strategy"], r["budget"])][r["seed"]][r["uid"]] = r
  return groups


def outcome_tables(records: Sequence[dict], uids: Sequence[str], budgets: Sequence[int],
                   policy_cost: compute.ModelCost, prm_cost: compute.ModelCost,
                   selection: str = "weighted_last", num_draws: int = 16,
                   revision_selection: str = "hierarchical_last"
                   ) -> tuple[ResultTable, ResultTable, ResultTable]:
  """Per-question expected correctness of every option, with three costs.

  Args:
    records: a sweep's records; every (strategy, budget) must cover `uids`.
    uids: the Q questions, in the order of the tables' columns.
    budgets: the generation budgets compared: best-of-N is read at those up to its
      run's N; other runs at a generation budget outside them are left out.
    policy_cost, prm_cost: for best-of-N's FLOPs at smaller budgets.
    selection: the rule every strategy's answer is picked by (`report.REPORTED_SELECTIONS`).
    num_draws: random subsets averaged for best-of-N below its run's N.
    revision_selection: the rule of strategies that revise (`Strategy.revises`): the
      paper's hierarchical best-of-N weighted by default.

  Returns:
    (samples table, FLOPs table, verifier FLOPs table): the same options and accuracy
    [O, Q]; cost is the generation budget in the first, the FLOPs spent (policy and
    verifier) in the second, and the verifier's share of them in the third. Seeds
    are averaged.

  Raises:
    ValueError: a (strategy, budget) run lacks some of the questions.
  """
  options, accuracy, flops, verifier_flops = [], [], [], []

  def add(option: Option, per_seed: list[np.ndarray], per_seed_flops: list[np.ndarray],
          per_seed_verifier: list[np.ndarray]):
    options.append(option)
    accuracy.append(np.mean(per_seed, axis=0))
    flops.append(np.mean(per_seed_flops, axis=0))
    verifier_flops.append(np.mean(per_seed_verifier, axis=0))

  for (label, run_budget), by_seed in sorted(_group(records).items()):
    for seed, by_uid in by_seed.items():
      missing = [u for u in uids if u not in by_uid]
      if missing:
        raise ValueError(f"{label} at budget {run_budget} (seed {seed}) lacks {len(missing)} of "
                         f"the {len(uids)} questions (e.g. {missing[0]}); finish the sweep first.")
    first = next(iter(by_seed.values()))[uids[0]]
    strategy = get_strategy(first["name"])
    if not strategy.independent_samples:
      if first["generation_budget"] not in budgets:
        continue  # e.g. lookahead's N (k + 1) beyond the largest budget compared
      runs = [[by_uid[u] for u in uids] for by_uid in by_seed.values()]
      rule = revision_selection if strategy.revises else selection
      add(Option(label, first["generation_budget"]),
          [report.problem_accuracy(run, rule) for run in runs],
          [np.array([r["flops"]["total_flops"] for r in run]) for run in runs],
          [np.array([r["flops"]["prm_flops"] for r in run]) for run in runs])
      continue
    for size in [b for b in budgets if b <= run_budget]:
      for option_label, rule in ((label, selection), (MAJORITY, "majority")):
        per_seed, per_seed_flops, per_seed_verifier = [], [], []
        for seed, by_uid in sorted(by_seed.items()):
          run = [by_uid[u] for u in uids]
          per_seed.append(report.problem_accuracy(run, rule, size, num_draws, seed))
          per_seed_flops.append(np.array([report.subset_flops(r, size / run_budget, policy_cost,
                                                              prm_cost) for r in run]))
          # Majority voting reads no verifier score, but the samples were scored in the
          # search: the FLOPs were spent either way.
          per_seed_verifier.append(np.array([report.subset_flops(
              r, size / run_budget, policy_cost, prm_cost, "prm_flops") for r in run]))
        add(Option(option_label, size), per_seed, per_seed_flops, per_seed_verifier)
  if len({(o.strategy, o.budget) for o in options}) != len(options):
    raise ValueError("Two runs give the same (strategy, budget); keep one best-of-N run per label.")
  # Best-of-N first: the solvers break ties by the first option listed, so they leave
  # the reference only for a strategy that did strictly better.
  order = sorted(range(len(options)), key=lambda i: (options[i].strategy != BEST_OF_N,
                                                      options[i].strategy, options[i].budget))
  options = [options[i] for i in order]
  acc = np.array(accuracy)[order]
  samples = np.array([[float(o.budget)] * len(uids) for o in options])
  return (ResultTable(tuple(options), acc, samples, tuple(uids)),
          ResultTable(tuple(options), acc, np.array(flops)[order], tuple(uids)),
          ResultTable(tuple(options), acc, np.array(verifier_flops)[order], tuple(uids)))


def curve(table: ResultTable, strategy: str) -> tuple[list[int], list[float], list[float]]:
  """(budgets, mean accuracy, mean cost) of one strategy over all questions, budgets
  ascending."""
  points = sorted((o.budget, float(table.accuracy[i].mean()), float(table.cost[i].mean()))
                  for i, o in enumerate(table.options) if o.strategy == strategy)
  if not points:
    raise ValueError(f"No runs of {strategy!r}; the table holds {table.strategies()}.")
  return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
