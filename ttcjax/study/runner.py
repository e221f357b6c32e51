"""Runs a compute-optimal study end to end, for any task that can run search sweeps.

`run_study(task, config, workdir)` runs, in `workdir`:

1. `sweep/`: every configured strategy x budget over the evaluation problems with
   the small policy and the PRM (`ttcjax.sweep`, resumable);
2. `difficulty/`: X best-of-N samples per problem from another seed, whose pass@1
   and mean final PRM score bin the problems (oracle and predicted difficulty);
3. `large_greedy/` (when the config names a larger policy): its greedy answer to each
   problem, for the FLOPs-matched exchange;
4. the analysis (`ttcjax.study.analysis.analyse`), written as `study.json`; the fitted
   allocations (`allocation_oracle.json`, `allocation_predicted.json`); the figures
   (`ttcjax.study.plots`); `report.md`; and `summary.json` with the headline figures.

Stages 1-3 append JSON lines as they go and skip what is done, so a killed study
resumes where it stopped and a finished one is re-analysed in seconds. The stages
keep their own run configs: a later, larger study (more problems or budgets) may
reuse a smaller one's workdir, while one with other strategies or models is refused.

A `StudyTask` says how a task builds and runs its stages: the arithmetic testbed
(`ttcjax.tasks.arith.task`) and MATH-style data with open checkpoints
(`ttcjax.tasks.math.task`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import time
from typing import Callable

import jax
import ml_collections
from absl import logging

from ttcjax import compute, rundir, sweep
from ttcjax.study import allocation, analysis, plots, report as study_report
from ttcjax.study.outcomes import BEST_OF_N

STAGES = ("sweep", "difficulty", "large_greedy")


@dataclasses.dataclass(frozen=True)
class ModelFacts:
  """What the analysis needs to know of the models.

  Attributes:
    policy_cost, prm_cost: FLOPs per token of the small policy and the PRM.
    small_params: the small policy's parameters.
    large_params: the larger policy's (None: no larger policy, no exchange).
    pretraining_tokens: the small policy's D_pretrain (None without a larger policy).
    large_pretraining_tokens: the larger policy's (None: the same as the small one's).
    revision_pretraining_tokens: a revision model's (the policy's plus its revision
      SFT; None: no revision model, or the small policy's).
    extra: more facts for `study.json`'s "models" entry.
  """

  policy_cost: compute.ModelCost
  prm_cost: compute.ModelCost
  small_params: int
  large_params: int | None = None
  pretraining_tokens: float | None = None
  large_pretraining_tokens: float | None = None
  revision_pretraining_tokens: float | None = None
  extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StudyTask:
  """How one task runs a study's stages.

  Attributes:
    name: the tag of its allocation files ("arith", "math500").
    title: what the report's title calls it.
    num_problems: config -> how many problems the study asks for.
    stage_configs: config -> {stage: sweep config}; "large_greedy" only when the study
      has a larger policy.
    run_stage: (sweep config, workdir, progress) -> the sweep's totals, with "uids" (the
      problems searched, in order) and "skipped" ([{"uid", "reason"}]: problems left out).
    model_facts: config -> `ModelFacts`.
  """

  name: str
  title: str
  num_problems: Callable[[ml_collections.ConfigDict], int]
  stage_configs: Callable[[ml_collections.ConfigDict], dict[str, ml_collections.ConfigDict]]
  run_stage: Callable[..., dict]
  model_facts: Callable[[ml_collections.ConfigDict], ModelFacts]


def check_study_config(config: ml_collections.ConfigDict, num_problems: int) -> None:
  """ValueError for a study config that cannot run (before anything is computed)."""
  if config.num_bins < 1 or num_problems < 2 * config.num_bins:
    raise ValueError(f"{num_problems} problems cannot fill {config.num_bins} difficulty bins "
                     "in two folds; use more problems or fewer bins (num_bins).")
  if config.difficulty_samples < 1:
    raise ValueError(f"difficulty_samples must be positive, got {config.difficulty_samples}.")
  if config.difficulty_seed in tuple(config.seeds):
    raise ValueError(f"difficulty_seed {config.difficulty_seed} is also a sweep seed; the "
                     "difficulty samples must be drawn apart from the evaluated ones.")
  if not any(s.get("name") == "best_of_n" for s in config.strategies):
    raise ValueError("The study compares against best-of-N: add a best_of_n strategy.")
  if config.cv_repeats < 1 or not config.exchange_ratios:
    raise ValueError("cv_repeats must be positive and exchange_ratios non-empty.")


def _check_enough(uids: list[str], num_bins: int, stage: str) -> None:
  if len(uids) < 2 * num_bins:
    raise ValueError(f"{stage} stage searched {len(uids)} problems after skips; {num_bins} "
                     f"difficulty bins in two folds need at least {2 * num_bins}. See "
                     "skipped.json for why problems were left out.")


def _stage_records(workdir: str, stage_config: ml_collections.ConfigDict,
                   uids: list[str]) -> list[dict]:
  """The stage's records of exactly the runs this config plans, over `uids` (a reused
  workdir may hold more: other problems, budgets, seeds, or best-of-N at an earlier
  largest budget)."""
  settings = [sweep.StrategySetting.from_dict(dict(s)) for s in stage_config.strategies]
  runs = {(setting.label, budget)
          for setting, budget in sweep.planned_runs(settings, list(stage_config.budgets))}
  wanted, seeds = set(uids), set(stage_config.seeds)
  return [r for r in sweep.read_results(os.path.join(workdir, "results.jsonl"))
          if r["uid"] in wanted and (r["strategy"], r["budget"]) in runs
          and r["seed"] in seeds]


def run_study(task: StudyTask, config: ml_collections.ConfigDict, workdir: str,
              progress: Callable[[str, dict], None] | None = None) -> dict:
  """Runs (or resumes) the study and writes its outputs; returns `summary.json`'s dict.

  Args:
    task: how the task runs its stages.
    config: a study config (at its variant's size, `configs/study_analysis.py`).
    workdir: the study's directory.
    progress: called as progress(stage, stats) after each search unit.
  """
  check_study_config(config, task.num_problems(config))
  os.makedirs(workdir, exist_ok=True)
  with rundir.Invocation(workdir, enabled=jax.process_index() == 0) as clock:
    return _run_study(task, config, workdir, progress, clock)


def _run_study(task, config, workdir, progress, clock: rundir.Invocation) -> dict:
  start = time.perf_counter()
  configs = task.stage_configs(config)
  stage_stats = {}
  for name in STAGES:
    if name in configs:
      logging.info("study: stage %s (resumes what %s holds)", name,
                   os.path.join(workdir, name))
      stage_stats[name] = task.run_stage(
          configs[name], os.path.join(workdir, name),
          None if progress is None else (lambda stats, name=name: progress(name, stats)))
      _check_enough(stage_stats[name]["uids"], config.num_bins, name)
  search_s = time.perf_counter() - start
  # The questions every stage searched; a problem one stage skipped (e.g. a larger
  # policy's longer prompt) is left out of all and counted.
  skipped = list(stage_stats["sweep"]["skipped"])
  uids = stage_stats["sweep"]["uids"]
  for name, stats in stage_stats.items():
    searched = set(stats["uids"])
    skipped += [{"uid": u, "reason": f"skipped by the {name} stage"}
                for u in uids if u not in searched]
    uids = [u for u in uids if u in searched]
  _check_enough(uids, config.num_bins, "every")
  # Across hosts every process has the records (the stages end once process 0 wrote
  # them) and analyses them, so each returns the summary; process 0 alone writes.
  writer = jax.process_index() == 0
  if writer:
    with open(os.path.join(workdir, "skipped.json"), "w") as f:
      json.dump(skipped, f, indent=1)
  records = {name: _stage_records(os.path.join(workdir, name), configs[name], uids)
             for name in stage_stats}
  facts = task.model_facts(config)
  logging.info("study: analysing %d questions (cross-validated solvers, bootstrap intervals)",
               len(uids))
  large = records.get("large_greedy")
  results = analysis.analyse(
      records["sweep"], records["difficulty"], large, list(config.budgets),
      facts.policy_cost, facts.prm_cost,
      params_ratio=None if large is None else facts.large_params / facts.small_params,
      pretraining_tokens=facts.pretraining_tokens,
      large_pretraining_tokens=facts.large_pretraining_tokens,
      exchange_ratios=list(config.exchange_ratios), num_bins=config.num_bins,
      selection=config.selection, repeats=config.cv_repeats, num_draws=config.num_draws,
      seed=config.analysis_seed, revision_pretraining_tokens=facts.revision_pretraining_tokens)
  results["models"] = {"small_params": facts.small_params, "large_params": facts.large_params,
                       **facts.extra}
  figures = []  # drawn by process 0 only
  if writer:
    with open(os.path.join(workdir, "study.json"), "w") as f:
      json.dump(results, f, indent=1)
    _save_allocations(task.name, results, workdir)
    logging.info("study: writing study.json, the allocations and the figures")
    figures = plots.study_figures(results, workdir)
  # Every invocation's time: a resumed study's own timer sees only its last one.
  wall = rundir.wall_time(workdir, running=clock, running_within_s=0.0)
  summary = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on "
                 f"{jax.default_backend()}",
      "task": task.name,
      "task_title": task.title,
      "variant": config.get("variant", "default"),
      "questions": results["questions"],
      "skipped_problems": skipped,
      "budgets": results["budgets"],
      "efficiency_ratio": results["efficiency_ratio"],
      "efficiency_ratio_with_estimation": results["efficiency_ratio_with_estimation"],
      "compute_optimal_accuracy": {
          kind: {p["budget"]: {k: p[k] for k in ("accuracy", "low", "high")} for p in points}
          for kind, points in results["compute_optimal"].items()},
      "best_of_n_weighted_accuracy": dict(zip(results["curves"][BEST_OF_N]["budgets"],
                                              results["curves"][BEST_OF_N]["accuracy"])),
      "exchange": None if results["exchange"] is None else results["exchange"]["rows"],
      "findings": results["findings"],
      "search_units": {name: s["units_total"] for name, s in stage_stats.items()},
      "search_units_run_now": {name: s["units_run"] for name, s in stage_stats.items()},
      "search_s": search_s,
      "wall_s": wall["wall_s"],
      "wall_s_this_invocation": time.perf_counter() - start,
      "invocations": wall["invocations"],
      "killed_invocations": wall["killed"],
      "lost_to_kills_s": wall["lost_to_kills_s"],
      "figures": figures,
  }
  if writer:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)
    with open(os.path.join(workdir, "report.md"), "w") as f:
      f.write(study_report.render(results, summary))
  return summary


def _save_allocations(task_name: str, results: dict, workdir: str) -> None:
  """Per bin kind: the per-bin option at every budget, with the bin edges that place a
  new question (its pass@1 or mean final PRM score) into a bin."""
  for kind, points in results["compute_optimal"].items():
    values, bins = results["bins"][kind]["values"], results["bins"][kind]["bins"]
    edges = [min(v for v, b in zip(values, bins) if b == k)
             for k in range(results["num_bins"] - 1)]
    choices = {p["budget"]: [None if c is None else allocation.Option(**c) for c in p["choice"]]
               for p in points}
    allocation.save_allocation(os.path.join(workdir, f"allocation_{kind}.json"), task_name,
                               kind, choices, edges)
