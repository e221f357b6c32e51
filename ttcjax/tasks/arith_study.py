"""The compute-optimal scaling study on the testbed, end to end.

`run_study(config, workdir)` runs, in `workdir`:

1. `sweep/`: every configured strategy x budget over the evaluation problems with
   the small policy and the PRM (`ttcjax.search.sweep`, resumable);
2. `difficulty/`: S best-of-N samples per problem from another seed, whose pass@1
   and mean final PRM score bin the problems (oracle and predicted difficulty);
3. `large_greedy/`: the larger shipped policy's greedy answer to each problem;
4. the analysis (`ttcjax.study.analyse`), written as `study.json`; the fitted
   allocations (`allocation_oracle.json`, `allocation_predicted.json`); the figures
   (`ttcjax.plots`); `report.md`; and `summary.json` with the headline figures.

`apply_allocation` then solves new problems with a fitted allocation.

Stages 1-3 append JSON lines as they go and skip what is done, so a killed study
resumes where it stopped and a finished one is re-analysed in seconds. The stages
keep their own run configs: a later, larger study (more problems or budgets) may
reuse a smaller one's workdir, while one with other strategies or models is refused.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from ttcjax import allocation, compute, plots, study, study_report
from ttcjax.sampling import Sampler
from ttcjax.search import report, select, sweep
from ttcjax.tasks import arith, testbed

TASK = "arith"
STAGES = ("sweep", "difficulty", "large_greedy")


def stage_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The sweep config (`configs/arith/sweep.py`'s shape) of each search stage."""
  common = dict(prm_dir=config.prm_dir, problems_per_level=config.problems_per_level,
                problems_per_batch=config.problems_per_batch, top_p=config.top_p,
                caps=dict(config.caps))
  sweep_config = dict(common, policy_dir=config.policy_dir, budgets=tuple(config.budgets),
                      seeds=tuple(config.seeds), temperature=config.temperature,
                      strategies=[dict(s) for s in config.strategies])
  difficulty_config = dict(common, policy_dir=config.policy_dir,
                           budgets=(config.difficulty_samples,),
                           seeds=(config.difficulty_seed,), temperature=config.temperature,
                           strategies=[dict(name="best_of_n", label="difficulty")])
  large_config = dict(common, policy_dir=config.large_policy_dir, budgets=(1,), seeds=(0,),
                      temperature=0.0, strategies=[dict(name="best_of_n", label="greedy")])
  return {name: ml_collections.ConfigDict(c) for name, c in
          zip(STAGES, (sweep_config, difficulty_config, large_config))}


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of a `configs/arith/study.py` config with its quick overrides applied when
  `quick` is set."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.quick:
    config.update(config.quick_overrides.to_dict())
  return config


def check_config(config: ml_collections.ConfigDict) -> None:
  """ValueError for a study config that cannot run (before anything is computed)."""
  if config.num_bins < 1 or 10 * config.problems_per_level < 2 * config.num_bins:
    raise ValueError(f"{10 * config.problems_per_level} problems cannot fill {config.num_bins} "
                     "difficulty bins in two folds; raise problems_per_level or lower num_bins.")
  if config.difficulty_samples < 1:
    raise ValueError(f"difficulty_samples must be positive, got {config.difficulty_samples}.")
  if config.difficulty_seed in tuple(config.seeds):
    raise ValueError(f"difficulty_seed {config.difficulty_seed} is also a sweep seed; the "
                     "difficulty samples must be drawn apart from the evaluated ones.")
  if not any(s.get("name") == "best_of_n" for s in config.strategies):
    raise ValueError("The study compares against best-of-N: add a best_of_n strategy.")
  if config.cv_repeats < 1 or not config.exchange_ratios:
    raise ValueError("cv_repeats must be positive and exchange_ratios non-empty.")


def _records(workdir: str, stage_config: ml_collections.ConfigDict) -> list[dict]:
  """The stage's records for exactly this config's problems, budgets and seeds (a
  reused workdir may hold more)."""
  uids = {p.uid for p in testbed.evaluation_problems(stage_config.problems_per_level)}
  budgets, seeds = set(stage_config.budgets), set(stage_config.seeds)
  return [r for r in sweep.read_results(os.path.join(workdir, "results.jsonl"))
          if r["uid"] in uids and r["budget"] in budgets and r["seed"] in seeds]


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: Callable[[str, dict], None] | None = None) -> dict:
  """Runs (or resumes) the study and writes its outputs; returns `summary.json`'s dict.

  Args:
    config: a `configs/arith/study.py` config (`resolve_config` applies `quick`).
    workdir: the study's directory.
    progress: called as progress(stage, stats) after each search unit.
  """
  config = resolve_config(config)
  check_config(config)
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  configs = stage_configs(config)
  stage_stats = {}
  for name in STAGES:
    stage_stats[name] = testbed.run_search_sweep(
        configs[name], os.path.join(workdir, name),
        progress=None if progress is None else (lambda stats, name=name: progress(name, stats)))
  search_s = time.perf_counter() - start

  small, _, small_extra = testbed.load_policy(config.policy_dir)
  large, _, large_extra = testbed.load_policy(config.large_policy_dir)
  prm = testbed.load_reward_model(config.prm_dir)[0]
  tokens = {small_extra.get("train_tokens"), large_extra.get("train_tokens")}
  if None in tokens:
    raise ValueError("The policies' exports do not record their training tokens (extra."
                     "train_tokens); the exchange needs D_pretrain.")
  records = {name: _records(os.path.join(workdir, name), configs[name]) for name in STAGES}
  results = study.analyse(
      records["sweep"], records["difficulty"], records["large_greedy"], list(config.budgets),
      compute.ModelCost.of_policy(small), compute.ModelCost.of_prm(prm),
      params_ratio=large.num_params / small.num_params,
      # The exchange assumes one D_pretrain for both models, as the shipped ones have.
      pretraining_tokens=float(max(tokens)), exchange_ratios=list(config.exchange_ratios),
      num_bins=config.num_bins, selection=config.selection, repeats=config.cv_repeats,
      num_draws=config.num_draws, seed=config.analysis_seed)
  results["models"] = {"small_params": small.num_params, "large_params": large.num_params,
                       "small_train_tokens": small_extra["train_tokens"],
                       "large_train_tokens": large_extra["train_tokens"]}
  with open(os.path.join(workdir, "study.json"), "w") as f:
    json.dump(results, f, indent=1)
  _save_allocations(results, workdir)
  figures = plots.study_figures(results, workdir)
  wall_s = time.perf_counter() - start
  summary = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on "
                 f"{jax.default_backend()}",
      "quick": bool(config.quick),
      "questions": results["questions"],
      "budgets": results["budgets"],
      "efficiency_ratio": results["efficiency_ratio"],
      "efficiency_ratio_with_estimation": results["efficiency_ratio_with_estimation"],
      "compute_optimal_accuracy": {
          kind: {p["budget"]: {k: p[k] for k in ("accuracy", "low", "high")} for p in points}
          for kind, points in results["compute_optimal"].items()},
      "best_of_n_weighted_accuracy": dict(zip(results["curves"][study.BEST_OF_N]["budgets"],
                                              results["curves"][study.BEST_OF_N]["accuracy"])),
      "exchange": results["exchange"]["rows"],
      "findings": results["findings"],
      "search_units": {name: s["units_total"] for name, s in stage_stats.items()},
      "search_units_run_now": {name: s["units_run"] for name, s in stage_stats.items()},
      "search_s": search_s,
      "wall_s": wall_s,
      "figures": figures,
  }
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(study_report.render(results, summary))
  return summary


def _save_allocations(results: dict, workdir: str) -> None:
  """Per bin kind: the per-bin option at every budget, with the bin edges that place a
  new question (its pass@1 or mean final PRM score) into a bin."""
  for kind, points in results["compute_optimal"].items():
    values, bins = results["bins"][kind]["values"], results["bins"][kind]["bins"]
    edges = [min(v for v, b in zip(values, bins) if b == k)
             for k in range(results["num_bins"] - 1)]
    choices = {p["budget"]: [None if c is None else allocation.Option(**c) for c in p["choice"]]
               for p in points}
    allocation.save_allocation(os.path.join(workdir, f"allocation_{kind}.json"), TASK, kind,
                               choices, edges)


def _selected_answers(result, selection: str) -> list:
  """The answer each problem's candidates select under a `report.SELECTIONS` label."""
  how, rule = report.rule_of(selection)
  ids, vocab = select.answer_ids(result.answers)
  scores = None if how is None else select.aggregate(result.step_scores, result.step_mask, how)
  chosen = select.select_answers(ids, scores, rule)
  return [None if c == select.NO_ANSWER else v[c] for c, v in zip(chosen, vocab)]


def apply_allocation(config: ml_collections.ConfigDict, allocation_path: str,
                     problems: Sequence[arith.Problem], budget: int, seed: int = 0) -> list[dict]:
  """Solves new problems with a fitted allocation: estimate, look up, run.

  Each problem's difficulty statistic comes from `difficulty_samples` fresh best-of-N
  samples (the mean final PRM score for a "predicted" allocation; pass@1 against the
  problem's answer for an "oracle" one), which places it in a bin; the allocation's
  option for that bin at `budget` is then run with the study's strategy settings
  and its answer picked by the study's selection rule.

  Returns:
    one dict per problem: uid, bin, statistic, strategy, budget, answer, correct.
  """
  config = resolve_config(config)
  fitted = allocation.load_allocation(allocation_path, TASK)
  if budget not in fitted["choices"]:
    raise ValueError(f"The allocation has no choice at budget {budget}; it has "
                     f"{sorted(fitted['choices'])}.")
  if not problems:
    raise ValueError("No problems to solve.")
  settings = {s.label: s for s in (sweep.StrategySetting.from_dict(dict(s))
                                   for s in config.strategies)}
  runner = testbed.search_runner(config.policy_dir, config.prm_dir, dict(config.caps))
  sampler = Sampler(temperature=config.temperature, top_p=config.top_p)
  rng = jax.random.PRNGKey(seed)
  prompts = [p.prompt for p in problems]
  ids = [testbed.problem_id(p) for p in problems]
  truth = [arith.canonical_answer(p.answer) for p in problems]
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
    if option.strategy in (study.BEST_OF_N, study.MAJORITY):
      name, run_budget, hyper = "best_of_n", option.budget, {}
      selection = "majority" if option.strategy == study.MAJORITY else config.selection
    else:
      setting = settings.get(option.strategy)
      if setting is None:
        raise ValueError(f"The allocation chose {option.strategy!r}, which the config's "
                         f"strategies lack ({sorted(settings)}).")
      lookahead = dict(setting.hyper).get("lookahead_steps", 0)
      name, run_budget = setting.name, option.budget // (lookahead + 1)
      hyper, selection = setting.resolve(run_budget), config.selection
    result = runner.search(name, [prompts[i] for i in members], [ids[i] for i in members],
                           budget=run_budget, rng=rng, sampler=sampler, **hyper)
    for i, answer in zip(members, _selected_answers(result, selection)):
      answers[i] = answer
  return [{"uid": p.uid, "bin": b, "statistic": float(s), "strategy": o.strategy,
           "budget": o.budget, "answer": a, "correct": a is not None and a == t}
          for p, b, s, o, a, t in zip(problems, bins, statistic, options, answers, truth)]
