"""The resumable sweep: strategies x hyperparameters x budgets x seeds over a problem set.

A sweep is a list of units, one per (strategy setting, budget, seed, batch of
problems). Each finished unit appends one JSON line per problem to `results.jsonl`
and flushes, so a run killed at any moment loses at most the unit under way; on
restart, problems already recorded are skipped (a line cut by the kill is dropped
first). A line holds everything the analysis needs later: the candidates' answers,
correctness, per-step scores, and the compute record with FLOPs.

Beam widths of "sqrt" take M = 2 ** floor(log2(N) / 2), the largest power of two not
above sqrt(N), which always divides a power-of-two budget (N = 8 gives M = 2).
Settings that do not fit a budget (M > N) are skipped, as in the paper, whose beam
sweeps start at N = 4; so is lookahead at N when N x (k + 1), its generation budget,
exceeds the largest budget (nothing else would be compared with it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Collection, Hashable, Iterable, Sequence

import jax
import numpy as np

from ttcjax import compute, jsonlines
from ttcjax.sampling import Sampler
from ttcjax.search.runner import SearchRunner


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
    label = spec.pop("label", None) or "_".join(
        [name] + [f"{k}{v}" for k, v in sorted(spec.items())])
    return cls(label=label, name=name, hyper=tuple(sorted(spec.items())),
               max_budget_only=max_only)

  def resolve(self, budget: int) -> dict | None:
    """The hyperparameters at budget N, or None when the setting does not fit N."""
    hyper = dict(self.hyper)
    if hyper.get("beam_width") == "sqrt":
      hyper["beam_width"] = 2 ** int(math.floor(math.log2(budget) / 2))
    width = hyper.get("beam_width")
    if width is not None and (width > budget or budget % width):
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
    lookahead = self.setting.resolve(self.budget).get("lookahead_steps", 0)
    return compute.generation_budget(self.budget, lookahead) * num_problems


def record_key(label: str, budget: int, seed: int, uid: str) -> str:
  return f"{label}|{budget}|{seed}|{uid}"


def search_rows(budget: int, hyper: dict) -> int:
  """The rows one problem occupies in a search at `budget`: N, twice that for
  lookahead, whose rollouts run on copies of the frontier's caches."""
  return budget * (2 if hyper.get("lookahead_steps", 0) else 1)


def plan_units(settings: Sequence[StrategySetting], budgets: Sequence[int], seeds: Sequence[int],
               num_problems: int, problems_per_batch: int,
               max_rows_per_batch: int | None = None) -> list[Unit]:
  """Every unit of a sweep, cheapest budgets first (so early results span strategies).

  Args:
    max_rows_per_batch: caps a batch's problems x `search_rows`, which is what its
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
      rows = search_rows(budget, setting.resolve(budget))
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
      if compute.generation_budget(budget, hyper.get("lookahead_steps", 0)) > max(budgets):
        continue
      runs.append((setting, budget))
  return runs


def done_keys(path: str) -> set[str]:
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {json.loads(line)["key"] for line in f if line.strip()}


def read_results(path: str) -> list[dict]:
  if not os.path.exists(path):
    raise ValueError(f"No sweep results at {path}; run experiments.search first.")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def same_answer(answer: Hashable | None, correct_answer: Any, text: str) -> bool:
  """The default judge: a canonical answer is right when it equals the canonical
  correct one (the candidate's text is not needed)."""
  del text
  return answer is not None and answer == correct_answer


def _records(unit: Unit, hyper: dict, result, problems: Sequence[Any], correct_answers: Sequence,
             policy_cost: compute.ModelCost, prm_cost: compute.ModelCost,
             judge: Callable[[Hashable | None, Any, str], bool],
             unit_wall_s: float) -> list[dict]:
  flops = compute.search_flops(result.compute, policy_cost, prm_cost)
  out = []
  for i, problem in enumerate(problems):
    mask = result.step_mask[i]
    out.append({
        "key": record_key(unit.setting.label, unit.budget, unit.seed, problem.uid),
        "uid": problem.uid, "level": getattr(problem, "level", None),
        "strategy": unit.setting.label, "name": unit.setting.name, "hyper": hyper,
        "budget": unit.budget, "seed": unit.seed,
        "generation_budget": compute.generation_budget(unit.budget,
                                                       hyper.get("lookahead_steps", 0)),
        "answers": result.answers[i], "correct_answer": correct_answers[i],
        "correct": [bool(judge(a, correct_answers[i], t))
                    for a, t in zip(result.answers[i], result.texts[i])],
        "step_scores": [[round(float(s), 5) for s in row[m]]
                        for row, m in zip(result.step_scores[i], mask)],
        "finished": result.finished[i].tolist(),
        "lengths": result.lengths[i].tolist(),
        "compute": {k: float(v[i]) for k, v in result.compute.items()},
        "flops": {k: float(v[i]) for k, v in flops.items()},
        "unit_wall_s": round(unit_wall_s, 3),
        "unit_problems": len(problems),
    })
  return out


def progress_postfix(stats: dict) -> dict[str, str]:
  """What a progress bar shows beside units done: policy tokens per second, and the
  time left estimated from the samples still to run (`run_sweep`'s "eta_s")."""
  wall_s = max(stats["wall_s"], 1e-9)
  minutes = math.ceil(stats.get("eta_s", 0.0) / 60)
  return {"tok_s": f"{stats['tokens_generated'] / wall_s:.0f}",
          "left": f"{minutes // 60}h{minutes % 60:02d}m"}


def run_sweep(runner: SearchRunner, problems: Sequence[Any], prompts: Sequence[str],
              problem_ids: Sequence[int], correct_answers: Sequence, units: Iterable[Unit], path: str,
              sampler: Sampler, stop_after_units: int | None = None,
              progress: Callable[[dict], None] | None = None,
              problem_texts: Sequence[str] | None = None,
              judge: Callable[[Hashable | None, Any, str], bool] = same_answer,
              skip_keys: Collection[str] = frozenset()) -> dict:
  """Runs every unit not yet in `path` (nor in `skip_keys`), appending its records.

  Batches shorter than their unit's `batch_size` are padded by repeating their last
  problem, so each (strategy, budget) compiles once; padding rows are not written.

  Args:
    runner: the models and caps.
    problems: objects with `uid` (and `level`).
    prompts: their prompt texts.
    problem_ids: their stable integer ids (a problem's search depends only on its id).
    correct_answers: their correct answers (what `judge` compares with).
    units: from `plan_units`.
    path: the JSON-lines results file.
    sampler: how steps are sampled.
    stop_after_units: stop after this many units run (for tests of resumption).
    progress: called after each unit with running totals, including "samples_left"
      and "eta_s": the work still to do in samples (each unit left searches a whole
      batch, padding included, at its generation budget), and the time it would take
      at this run's rate so far.
    problem_texts: the problems as a PRM adapter's prompt states them (runners with an
      adapter need them; see `SearchRunner.search`).
    judge: (a candidate's canonical answer, the correct answer, the candidate's text)
      -> right or not.
    skip_keys: record keys done elsewhere (an archive's, `ttcjax.search.archive`).

  Returns:
    {"units_run", "units_skipped", "records_written", "tokens_generated", "wall_s",
     "samples_run", "samples_left"}.
  """
  jsonlines.drop_partial_line(path)
  done = done_keys(path) | set(skip_keys)
  policy_cost = compute.ModelCost.of_policy(runner.policy_config)
  prm_cost = compute.ModelCost.of_prm(runner.prm_config)
  stats = {"units_run": 0, "units_skipped": 0, "records_written": 0, "tokens_generated": 0.0}
  start = time.perf_counter()
  units = list(units)
  # Time left is estimated from samples, not units: a unit's cost grows with its budget.
  # Every unit searches a whole batch (short ones are padded, see below).
  batch_rows = lambda unit: unit.batch_size + (-unit.batch_size % runner.data_shards)
  todo_of = [[i for i in unit.problem_indices
              if record_key(unit.setting.label, unit.budget, unit.seed, problems[i].uid)
              not in done] for unit in units]
  stats["samples_run"] = 0
  stats["samples_left"] = sum(u.samples(batch_rows(u)) for u, todo in zip(units, todo_of) if todo)
  # Across hosts every process runs every unit (the search is one program over the
  # global mesh) and sees the global results; process 0 alone writes them, so the
  # workdir must be on a filesystem all hosts share (they all read it to resume).
  writer = open(path, "a") if jax.process_index() == 0 else open(os.devnull, "w")
  with writer as f:
    for unit, todo in zip(units, todo_of):
      if not todo:
        stats["units_skipped"] += 1
        continue
      if stop_after_units is not None and stats["units_run"] >= stop_after_units:
        break
      hyper = unit.setting.resolve(unit.budget)
      padded = todo + [todo[-1]] * (unit.batch_size - len(todo))
      padded += [todo[-1]] * (-len(padded) % runner.data_shards)
      unit_start = time.perf_counter()
      result = runner.search(unit.setting.name, [prompts[i] for i in padded],
                             [problem_ids[i] for i in padded],
                             budget=unit.budget, rng=jax.random.PRNGKey(unit.seed),
                             sampler=sampler,
                             problem_texts=None if problem_texts is None else
                             [problem_texts[i] for i in padded], **hyper)
      result = result.take(len(todo))
      records = _records(unit, hyper, result, [problems[i] for i in todo],
                         [correct_answers[i] for i in todo], policy_cost, prm_cost, judge,
                         time.perf_counter() - unit_start)
      for record in records:
        f.write(json.dumps(record) + "\n")
      f.flush()
      stats["units_run"] += 1
      stats["records_written"] += len(todo)
      stats["tokens_generated"] += float(np.sum(result.compute["policy_generated"]))
      stats["samples_run"] += unit.samples(len(padded))
      stats["samples_left"] -= unit.samples(len(padded))
      if progress is not None:
        wall_s = time.perf_counter() - start
        progress(dict(stats, units_total=len(units), wall_s=wall_s,
                      eta_s=wall_s / stats["samples_run"] * stats["samples_left"]))
  stats["wall_s"] = time.perf_counter() - start
  return stats
