"""Running a sweep's units, resumably: each finished unit appends its records and
flushes, so a killed run loses at most the unit under way (see `ttcjax.sweep.plan`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from typing import Any, Callable, Collection, Hashable, Iterable, Sequence

import jax
import numpy as np

from ttcjax import compute, parallel, rundir
from ttcjax.sampling import Sampler
from ttcjax.sweep.plan import Unit
from ttcjax.sweep.records import make_records, record_key, recorded_keys, same_answer
from ttcjax.sweep.runner import SearchRunner


def progress_postfix(stats: dict) -> dict[str, str]:
  """What a progress bar shows beside units done: policy tokens per second, and the
  time left estimated from the samples still to run (`run_sweep`'s "eta_s")."""
  wall_s = max(stats["wall_s"], 1e-9)
  minutes = math.ceil(stats.get("eta_s", 0.0) / 60)
  return {"tok_s": f"{stats['tokens_generated'] / wall_s:.0f}",
          "left": f"{minutes // 60}h{minutes % 60:02d}m"}


def _open_results(path: str):
  """The results file for appending (a sink on processes other than 0)."""
  if jax.process_index() != 0:
    return open(os.devnull, "w")
  try:
    return open(path, "a")
  except OSError as e:
    raise ValueError(f"Cannot append to {path} ({e.strerror}): units are left to run "
                     "there. Make the workdir writable, or copy it somewhere writable "
                     "and resume there.") from e


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
    skip_keys: record keys done elsewhere (an archive's, `ttcjax.sweep.archive`).

  Returns:
    {"units_run", "units_skipped", "records_written", "tokens_generated", "wall_s",
     "samples_run", "samples_left"}.
  """
  if jax.process_index() == 0:  # the writer repairs; the others skip a cut line as it is
    rundir.drop_partial_line(path)
  done = recorded_keys(path) | set(skip_keys)
  policy_cost = compute.ModelCost.of_policy(runner.policy_config)
  prm_cost = compute.ModelCost.of_prm(runner.prm_config)
  # Strategies that revise run the revision model: its FLOPs per token.
  revision_config = getattr(runner, "revision_config", None)
  revision_cost = None if revision_config is None else compute.ModelCost.of_policy(revision_config)
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
  # workdir must be on a filesystem all hosts share (they all read it to resume), and
  # all must plan the same units, else they would wait on each other's programs.
  plan = [(u.setting.label, u.budget, u.seed, todo) for u, todo in zip(units, todo_of)]
  parallel.check_same_on_every_process(
      hashlib.sha256(repr(plan).encode()).hexdigest(), f"the units left to run in {path}")
  # The file is opened only when a unit is to run: a finished sweep in a read-only
  # workdir resumes (runs nothing) and reports.
  f = None
  clock = rundir.Invocation(os.path.dirname(path) or ".", enabled=jax.process_index() == 0)
  with clock, contextlib.ExitStack() as files:
    for unit, todo in zip(units, todo_of):
      if not todo:
        stats["units_skipped"] += 1
        continue
      if stop_after_units is not None and stats["units_run"] >= stop_after_units:
        break
      if f is None:
        f = files.enter_context(_open_results(path))
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
      unit_policy_cost = revision_cost if unit.setting.strategy.revises else policy_cost
      records = make_records(unit, hyper, result, [problems[i] for i in todo],
                             [correct_answers[i] for i in todo], unit_policy_cost, prm_cost, judge,
                             time.perf_counter() - unit_start)
      for record in records:
        f.write(json.dumps(record) + "\n")
      f.flush()
      clock.saved()
      stats["units_run"] += 1
      stats["records_written"] += len(todo)
      stats["tokens_generated"] += float(np.sum(result.compute["policy_generated"]))
      stats["samples_run"] += unit.samples(len(padded))
      stats["samples_left"] -= unit.samples(len(padded))
      if progress is not None:
        wall_s = time.perf_counter() - start
        progress(dict(stats, units_total=len(units), wall_s=wall_s,
                      eta_s=wall_s / stats["samples_run"] * stats["samples_left"]))
  # Process 0 wrote every record once the others get past this: a reader of `path`
  # on any host (the study's analysis) sees them all.
  parallel.sync_processes("run_sweep: results written")
  stats["wall_s"] = time.perf_counter() - start
  return stats
