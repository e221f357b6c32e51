"""The testbed as a task: its search sweep, its compute-optimal study, and applying a
fitted allocation to new problems.

* `run_search_sweep` runs (or resumes) a `configs/arith/sweep.py` sweep of the shipped
  (or any exported) testbed models over the test problems, optionally continuing from
  an archive of finished groups (`ttcjax.sweep.archive`);
* `TASK`, the task's entry in `ttcjax.tasks`, runs it and the study of a
  `configs/arith/study.py` config (`ttcjax.study.runner`): the small and large
  policies and the PRM over the testbed's test problems;
* `apply_allocation` solves new problems with a fitted allocation.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from ttcjax import compute, parallel, rundir, sweep
from ttcjax.models import export
from ttcjax.sampling import Sampler
from ttcjax.study import allocation, runner as study_runner
from ttcjax.study.outcomes import BEST_OF_N, MAJORITY
from ttcjax.study.runner import STAGES
from ttcjax.sweep import archive, report, select, view
from ttcjax.tasks.arith import arithmetic, testbed
from ttcjax.tasks.base import Task

NAME = "arith"


# ---------------------------------------------------------------------------- sweep


SWEEP_WIDENABLE = ("budgets", "seeds", "problems_per_level", "problems_per_batch",
                   "max_rows_per_batch")
# Left out of an archive's identity too: an archive holds one task's sweeps (and those
# archived before configs named their task lack it).
_NOT_IDENTITY = SWEEP_WIDENABLE + ("task",)


def sweep_identity(config: dict) -> dict:
  """A sweep config less the fields a sweep may be widened in: what results of the
  same sweep share (models, caps, sampling, strategies)."""
  return {k: v for k, v in config.items() if k not in _NOT_IDENTITY}


def recorded_config(config) -> dict:
  """The sweep config as its workdir and archive record it: with the fingerprints of
  the weights it searched with, since retrained checkpoints keep their paths."""
  weights = {"policy": export.weights_fingerprint(config.policy_dir),
             "prm": export.weights_fingerprint(config.prm_dir)}
  if config.get("revision_dir"):
    weights["revision"] = export.weights_fingerprint(config.revision_dir)
  return dict(config.to_dict(), weights=weights)


def _check_revision_model(config, settings) -> None:
  """ValueError, before anything loads, when a setting revises but no revision model is set."""
  revising = [s.label for s in settings if s.strategy.revises]
  if revising and not config.get("revision_dir"):
    raise ValueError(f"The settings {revising} run sequential revisions, which need a revision "
                     "model: set revision_dir (e.g. checkpoints/arith/revision).")


def run_search_sweep(config, workdir: str, mesh=None, stop_after_units: int | None = None,
                     progress=None, archive_dir: str | None = None) -> dict:
  """Runs (or resumes) the sweep a `configs/arith/sweep.py` config describes.

  Writes `workdir/results.jsonl` (see `ttcjax.sweep`) and returns the run's totals.
  Groups summarised in `archive_dir` (`ttcjax.sweep.archive`) are skipped; an archive
  of another config or problem set is refused with a ValueError.
  """
  # The whole plan is checked before a model loads or the workdir records anything, so
  # a refused config never blocks its fix there.
  sampler = Sampler(temperature=config.temperature, top_p=config.top_p).check()
  settings = [sweep.StrategySetting.from_dict(dict(s)) for s in config.strategies]
  sweep.check_settings_run(settings, list(config.budgets))
  _check_revision_model(config, settings)
  problems = testbed.evaluation_problems(config.problems_per_level)
  units = sweep.plan_units(settings, list(config.budgets), list(config.seeds), len(problems),
                           config.problems_per_batch, config.get("max_rows_per_batch"))
  recorded = recorded_config(config)
  summaries = archive.read(archive_dir)
  archive.check_same_sweep(summaries, sweep_identity(recorded))
  archive.check_problems(summaries, [p.uid for p in problems])
  runner = testbed.search_runner(config.policy_dir, config.prm_dir, dict(config.caps), mesh,
                                 revision_dir=config.get("revision_dir") or None)
  # Results are keyed by (strategy, budget, seed, problem) and a problem's search
  # depends only on its id, so a sweep may be widened in place.
  rundir.check_run_config(workdir, recorded, ignore=_NOT_IDENTITY)
  stats = sweep.run_sweep(
      runner, problems, [p.prompt for p in problems], [testbed.problem_id(p) for p in problems],
      [arithmetic.canonical_answer(p.answer) for p in problems], units,
      os.path.join(workdir, "results.jsonl"), sampler,
      stop_after_units=stop_after_units, progress=progress,
      skip_keys=archive.archived_keys(summaries))
  stats["units_total"] = len(units)
  return stats


def search_problem(config: Mapping[str, Any], uid: str, setting: sweep.StrategySetting,
                   budget: int, seed: int) -> view.ProblemSearch:
  """One test problem searched again as the sweep of `config` (its recorded
  `run_config.json`) searched it in unit (setting, budget, seed), traced.

  Raises:
    ValueError: the problem is not in the sweep, or its checkpoints changed since.
  """
  problems = testbed.evaluation_problems(config["problems_per_level"])
  by_uid = {p.uid: p for p in problems}
  if uid not in by_uid:
    raise ValueError(f"Problem {uid!r} is not among this sweep's {len(problems)} test problems "
                     f"(uids look like {problems[0].uid!r}).")
  _check_same_weights(config)
  problem = by_uid[uid]
  runner = testbed.search_runner(config["policy_dir"], config["prm_dir"], dict(config["caps"]),
                                 revision_dir=config.get("revision_dir") or None)
  sampler = Sampler(temperature=config["temperature"], top_p=config["top_p"]).check()
  return view.search_problem(
      runner, setting, budget, seed, sampler, uid=uid, prompt=problem.prompt,
      problem_id=testbed.problem_id(problem),
      correct_answer=arithmetic.canonical_answer(problem.answer), judge=sweep.same_answer)


def _check_same_weights(config: Mapping[str, Any]) -> None:
  """ValueError when a recorded sweep's checkpoints no longer hold the weights it ran."""
  recorded = config.get("weights") or {}
  dirs = {"policy": config["policy_dir"], "prm": config["prm_dir"],
          "revision": config.get("revision_dir")}
  for role, fingerprint in recorded.items():
    if dirs.get(role) and export.weights_fingerprint(dirs[role]) != fingerprint:
      raise ValueError(f"The {role} checkpoint {dirs[role]} holds other weights than this sweep "
                       "ran with (it was retrained since): a search now would not be the "
                       "recorded one.")


# ---------------------------------------------------------------------------- study


def stage_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The sweep config (`configs/arith/sweep.py`'s shape) of each search stage."""
  common = dict(prm_dir=config.prm_dir, problems_per_level=config.problems_per_level,
                problems_per_batch=config.problems_per_batch, top_p=config.top_p,
                caps=dict(config.caps))
  sweep_config = dict(common, policy_dir=config.policy_dir, budgets=tuple(config.budgets),
                      seeds=tuple(config.seeds), temperature=config.temperature,
                      strategies=[dict(s) for s in config.strategies])
  if config.get("revision_dir"):
    sweep_config["revision_dir"] = config.revision_dir
  difficulty_config = dict(common, policy_dir=config.policy_dir,
                           budgets=(config.difficulty_samples,),
                           seeds=(config.difficulty_seed,), temperature=config.temperature,
                           strategies=[dict(name="best_of_n", label="difficulty")])
  large_config = dict(common, policy_dir=config.large_policy_dir, budgets=(1,), seeds=(0,),
                      temperature=0.0, strategies=[dict(name="best_of_n", label="greedy")])
  return {name: ml_collections.ConfigDict(c) for name, c in
          zip(STAGES, (sweep_config, difficulty_config, large_config))}


def _run_stage(stage_config: ml_collections.ConfigDict, workdir: str,
               progress: Callable[[dict], None] | None) -> dict:
  stats = run_search_sweep(stage_config, workdir, progress=progress)
  uids = [p.uid for p in testbed.evaluation_problems(stage_config.problems_per_level)]
  return dict(stats, uids=uids, skipped=[])


def _model_facts(config: ml_collections.ConfigDict) -> study_runner.ModelFacts:
  small, _, small_extra = testbed.load_policy(config.policy_dir)
  large, _, large_extra = testbed.load_policy(config.large_policy_dir)
  policy_cost, prm_cost = model_costs(config)
  tokens = {small_extra.get("train_tokens"), large_extra.get("train_tokens")}
  if None in tokens:
    raise ValueError("The policies' exports do not record their training tokens (extra."
                     "train_tokens); the exchange needs D_pretrain.")
  revision_tokens = None
  if config.get("revision_dir"):
    revision_tokens = float(export.load_exported(config.revision_dir)[2]["train_tokens"])
  return study_runner.ModelFacts(
      policy_cost=policy_cost, prm_cost=prm_cost, revision_pretraining_tokens=revision_tokens,
      small_params=small.num_params, large_params=large.num_params,
      # Each policy is charged the tokens it was trained on (its export records them).
      pretraining_tokens=float(small_extra["train_tokens"]),
      large_pretraining_tokens=float(large_extra["train_tokens"]),
      extra={"small_train_tokens": small_extra["train_tokens"],
             "large_train_tokens": large_extra["train_tokens"]})


def make_mesh(config: ml_collections.ConfigDict, data_shards: int, model_shards: int):
  """Problems over every device by default (weights whole on each: model_shards 1)."""
  del config  # a testbed sweep runs wherever it is started
  model = model_shards or 1
  shards = data_shards or jax.device_count() // model
  return parallel.make_mesh(data=shards, model=model) if shards * model > 1 else None


def model_costs(config) -> tuple[compute.ModelCost, compute.ModelCost]:
  """FLOPs per token of a sweep config's policy and PRM (exported testbed models)."""
  return (compute.ModelCost.of_policy(testbed.load_policy(config["policy_dir"])[0]),
          compute.ModelCost.of_prm(testbed.load_reward_model(config["prm_dir"])[0]))


TASK = Task(
    name=NAME, run_sweep=run_search_sweep, make_mesh=make_mesh, model_costs=model_costs,
    study=study_runner.StudyTask(
        name=NAME, title="the arithmetic testbed",
        num_problems=lambda config: 10 * config.problems_per_level,
        stage_configs=stage_configs, run_stage=_run_stage, model_facts=_model_facts),
    search_problem=search_problem)


def _selected_answers(result, selection: str) -> list:
  """The answer each problem's candidates select under a `report.REPORTED_SELECTIONS` label."""
  how, rule = report.rule_of(selection)
  ids, vocab = select.answer_ids(result.answers)
  scores = None if how is None else select.aggregate(result.step_scores, result.step_mask, how)
  chosen = select.select_answers(ids, scores, rule)
  return [None if c == select.NO_ANSWER else v[c] for c, v in zip(chosen, vocab)]


def apply_allocation(config: ml_collections.ConfigDict, allocation_path: str,
                     problems: Sequence[arithmetic.Problem], budget: int,
                     seed: int = 0) -> list[dict]:
  """Solves new problems with a fitted allocation: estimate, look up, run.

  Each problem's difficulty statistic comes from `difficulty_samples` fresh best-of-N
  samples (the mean final PRM score for a "predicted" allocation; pass@1 against the
  problem's answer for an "oracle" one), which places it in a bin; the allocation's
  option for that bin at `budget` is then run with the study's strategy settings
  and its answer picked by the study's selection rule.

  Returns:
    one dict per problem: uid, bin, statistic, strategy, budget, answer, correct.
  """
  fitted = allocation.load_allocation(allocation_path, NAME)
  if budget not in fitted["choices"]:
    raise ValueError(f"The allocation has no choice at budget {budget}; it has "
                     f"{sorted(fitted['choices'])}.")
  if not problems:
    raise ValueError("No problems to solve.")
  settings = {s.label: s for s in (sweep.StrategySetting.from_dict(dict(s))
                                   for s in config.strategies)}
  runner = testbed.search_runner(config.policy_dir, config.prm_dir, dict(config.caps))
  sampler = Sampler(temperature=config.temperature, top_p=config.top_p).check()
  rng = jax.random.PRNGKey(seed)
  prompts = [p.prompt for p in problems]
  ids = [testbed.problem_id(p) for p in problems]
  truth = [arithmetic.canonical_answer(p.answer) for p in problems]
  samples = runner.search("best_of_n", prompts, ids, budget=config.difficulty_samples,
                          rng=jax.random.fold_in(rng, 1), sampler=sampler)
  if fitted["kind"] == "oracle":
    statistic = [float(np.mean([a == t for a in row])) for row, t in zip(samples.answers, truth)]
  else:
    statistic = select.aggregate(samples.step_scores, samples.step_mask, "last").mean(axis=1)
  bins = [allocation.bin_of(float(s), fitted["bin_edges"]) for s in statistic]
  options = [fitted["choices"][budget][b] for b in bins]
  if any(o is None for o in options):
    raise ValueError("The allocation has no option for some bin at this budget; refit it on "
                     "more questions.")
  answers: list = [None] * len(problems)
  for option in sorted(set(options), key=lambda o: (o.strategy, o.budget)):
    members = [i for i, o in enumerate(options) if o == option]
    if option.strategy in (BEST_OF_N, MAJORITY):
      name, run_budget, hyper = "best_of_n", option.budget, {}
      selection = "majority" if option.strategy == MAJORITY else config.selection
    else:
      setting = settings.get(option.strategy)
      if setting is None:
        raise ValueError(f"The allocation chose {option.strategy!r}, which the config's "
                         f"strategies lack ({sorted(settings)}).")
      # The option's budget is in the paper's unit; the search runs the N that spends it.
      run_budget = setting.strategy.budget_for(option.budget, dict(setting.hyper))
      name, hyper, selection = setting.name, setting.resolve(run_budget), config.selection
    result = runner.search(name, [prompts[i] for i in members], [ids[i] for i in members],
                           budget=run_budget, rng=rng, sampler=sampler, **hyper)
    for i, answer in zip(members, _selected_answers(result, selection)):
      answers[i] = answer
  return [{"uid": p.uid, "bin": b, "statistic": float(s), "strategy": o.strategy,
           "budget": o.budget, "answer": a, "correct": a is not None and a == t}
          for p, b, s, o, a, t in zip(problems, bins, statistic, options, answers, truth)]
