"""The resumable sweep: strategies x hyperparameters x budgets x seeds over a problem set.

A sweep is a list of units, one per (strategy setting, budget, seed, batch of
problems). Each finished unit appends one JSON line per problem to `results.jsonl`
and flushes, so a run killed at any moment loses at most the unit under way; on
restart, problems already recorded are skipped (a line cut by the kill is dropped
first). A line holds everything the analysis needs later: the candidates' answers,
correctness, per-step scores, and the compute record with FLOPs.

Beam widths of "sqrt" take M = 2 ** floor(log2(N) / 2), the largest power of two not
above sqrt(N), which always divides a power-of-two budget (N = 8 gives M = 2).
Settings that do not fit a budget (M > N, or a revision chain longer than N) are
skipped, as in the paper, whose beam sweeps start at N = 4; so is lookahead at N when N x (k + 1), its generation budget,
exceeds the largest budget (nothing else would be compared with it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from absl import logging

from ttcjax.search import Strategy, get_strategy


@dataclasses.dataclass(frozen=True)
class StrategySetting:
  """One strategy with fixed hyperparameters, e.g. beam with M = 4.

  Attributes:
    label: unique name in results ("beam_m4", "lookahead_msqrt_k3", ...).
    name: the registered strategy.
    hyper: hyperparameters; beam_width may be "sqrt".
    max_budget_only: run at the sweep's largest budget only (best-of-N: smaller
      budgets are read from its samples by drawing subsets).
  """

  label: str
  name: str
  hyper: tuple[tuple[str, Any], ...] = ()
  max_budget_only: bool = False

  @classmethod
  def from_dict(cls, spec: dict) -> "StrategySetting":
    """From {"name": ..., "label": optional, "max_budget_only": optional, **hyper}."""
    spec = dict(spec)
    if "name" not in spec:
      raise ValueError(f"A strategy setting needs a 'name', got {spec}.")
    name = spec.pop("name")
    max_only = bool(spec.pop("max_budget_only", False))
    spec_label = spec.get("label")
    unknown = sorted(set(spec) - {"label"} - set(get_strategy(name).hyperparameters))
    if unknown:
      raise ValueError(f"Strategy setting {spec_label or name!r}: {name!r} takes no "
                       f"hyperparameter {unknown}; it takes "
                       f"{sorted(get_strategy(name).hyperparameters) or 'none'}.")
    label = spec.pop("label", None) or "_".join(
        [name] + [f"{k}{v}" for k, v in sorted(spec.items())])
    return cls(label=label, name=name, hyper=tuple(sorted(spec.items())),
               max_budget_only=max_only)

  @property
  def strategy(self) -> Strategy:
    """The registered strategy this setting runs."""
    return get_strategy(self.name)

  def resolve(self, budget: int) -> dict | None:
    """The hyperparameters at budget N, or None when the setting does not fit N."""
    hyper = dict(self.hyper)
    if hyper.get("beam_width") == "sqrt":
      hyper["beam_width"] = 2 ** int(math.floor(math.log2(budget) / 2))
    width = hyper.get("beam_width")
    if width is not None and (width > budget or budget % width):
      return None
    length = hyper.get("chain_length")  # revisions: N / L whole chains
    if length is not None and (length > budget or budget % length):
      return None
    return hyper


@dataclasses.dataclass(frozen=True)
class Unit:
  """One search call: a setting at one budget and seed over a batch of problems.

  Attributes:
    batch_size: the problems the call searches, `problem_indices` padded by repeating
      the last (so every unit of a setting and budget compiles once).
  """

  setting: StrategySetting
  budget: int
  seed: int
  problem_indices: tuple[int, ...]
  batch_size: int

  def samples(self, num_problems: int) -> int:
    """Work in the paper's unit: the generation budget times `num_problems` problems."""
    hyper = self.setting.resolve(self.budget)
    return self.setting.strategy.generation_budget(self.budget, hyper) * num_problems




def plan_units(settings: Sequence[StrategySetting], budgets: Sequence[int], seeds: Sequence[int],
               num_problems: int, problems_per_batch: int,
               max_rows_per_batch: int | None = None) -> list[Unit]:
  """Every unit of a sweep, cheapest budgets first (so early results span strategies).

  Args:
    max_rows_per_batch: caps a batch's problems x `Strategy.rows_per_problem`, which is what its
      caches' memory grows with: large budgets then search fewer problems at a time
      (at least one). None: `problems_per_batch` at every budget.
  """
  if not settings or not budgets or not seeds:
    raise ValueError("A sweep needs at least one strategy, budget and seed.")
  if num_problems <= 0 or problems_per_batch <= 0:
    raise ValueError(f"Need positive problem counts, got {num_problems}, {problems_per_batch}.")
  if max_rows_per_batch is not None and max_rows_per_batch <= 0:
    raise ValueError(f"max_rows_per_batch must be positive (or None), got {max_rows_per_batch}.")
  labels = [s.label for s in settings]
  if len(set(labels)) != len(labels):
    raise ValueError(f"Strategy labels must be unique, got {labels}.")
  if min(budgets) < 1:
    raise ValueError(f"Budgets must be positive, got {sorted(budgets)}.")
  if len(set(budgets)) != len(budgets) or len(set(seeds)) != len(seeds):
    raise ValueError(f"Budgets and seeds must not repeat, got {list(budgets)} and {list(seeds)}.")
  units = []
  for setting, budget in planned_runs(settings, budgets):
    size = problems_per_batch
    if max_rows_per_batch is not None:
      rows = setting.strategy.rows_per_problem(budget, setting.resolve(budget))
      size = max(1, min(problems_per_batch, max_rows_per_batch // rows))
    for seed in seeds:
      for start in range(0, num_problems, size):
        indices = tuple(range(start, min(start + size, num_problems)))
        units.append(Unit(setting, budget, seed, indices, size))
  return units


def planned_runs(settings: Sequence[StrategySetting],
                 budgets: Sequence[int]) -> list[tuple[StrategySetting, int]]:
  """The (setting, budget) pairs a sweep over `budgets` runs, cheapest budgets first:
  settings that fit the budget; max-budget-only ones at the largest budget alone; no
  lookahead whose generation budget exceeds the largest budget (nothing else would be
  compared with it)."""
  runs = []
  for budget in sorted(budgets):
    for setting in settings:
      hyper = setting.resolve(budget)
      if hyper is None or (setting.max_budget_only and budget != max(budgets)):
        continue
      if setting.strategy.generation_budget(budget, hyper) > max(budgets):
        continue
      runs.append((setting, budget))
  return runs


def check_settings_run(settings: Sequence[StrategySetting], budgets: Sequence[int]) -> None:
  """Refuses a setting that runs at none of the budgets; warns (absl logging) about one
  that some budgets skip, naming them. Launchers call it before anything is recorded.

  Raises:
    ValueError: a setting runs at no budget (e.g. a beam width dividing none of them).
  """
  runs = planned_runs(settings, budgets)
  for setting in settings:
    at = sorted(b for s, b in runs if s.label == setting.label)
    if not at:
      raise ValueError(
          f"Strategy setting {setting.label!r} runs at none of the budgets {sorted(budgets)}: "
          "its hyperparameters fit none of them (a beam width must divide the budget) or "
          "its generation budget exceeds the largest. Change its hyperparameters or the "
          "budgets, or drop it.")
    expected = [max(budgets)] if setting.max_budget_only else sorted(budgets)
    skipped = [b for b in expected if b not in at]
    if skipped:
      logging.warning("Strategy setting %r skips budgets %s (its hyperparameters do not fit "
                      "them, or its generation budget exceeds the largest).", setting.label,
                      skipped)
