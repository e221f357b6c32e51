"""The compute-optimal scaling study on the testbed (`ttcjax.study_runner` does the run).

`run_study(config, workdir)` runs the study of a `configs/arith/study.py` config: the
small and large shipped policies and the shipped PRM over the testbed's test problems.
`apply_allocation` then solves new problems with a fitted allocation.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from ttcjax import allocation, compute, study, study_runner
from ttcjax.sampling import Sampler
from ttcjax.search import report, select, sweep
from ttcjax.study_runner import STAGES, resolve_config  # pylint: disable=unused-import
from ttcjax.tasks import arith, testbed

TASK = "arith"


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


def _run_stage(stage_config: ml_collections.ConfigDict, workdir: str,
               progress: Callable[[dict], None] | None) -> dict:
  stats = testbed.run_search_sweep(stage_config, workdir, progress=progress)
  uids = [p.uid for p in testbed.evaluation_problems(stage_config.problems_per_level)]
  return dict(stats, uids=uids, skipped=[])


def _model_facts(config: ml_collections.ConfigDict) -> study_runner.ModelFacts:
  small, _, small_extra = testbed.load_policy(config.policy_dir)
  large, _, large_extra = testbed.load_policy(config.large_policy_dir)
  prm = testbed.load_reward_model(config.prm_dir)[0]
  tokens = {small_extra.get("train_tokens"), large_extra.get("train_tokens")}
  if None in tokens:
    raise ValueError("The policies' exports do not record their training tokens (extra."
                     "train_tokens); the exchange needs D_pretrain.")
  return study_runner.ModelFacts(
      policy_cost=compute.ModelCost.of_policy(small), prm_cost=compute.ModelCost.of_prm(prm),
      small_params=small.num_params, large_params=large.num_params,
      # The exchange assumes one D_pretrain for both models, as the shipped ones have.
      pretraining_tokens=float(max(tokens)),
      extra={"small_train_tokens": small_extra["train_tokens"],
             "large_train_tokens": large_extra["train_tokens"]})


STUDY_TASK = study_runner.StudyTask(
    name=TASK, title="the arithmetic testbed",
    num_problems=lambda config: 10 * config.problems_per_level,
    stage_configs=stage_configs, run_stage=_run_stage, model_facts=_model_facts)


def run_study(config: ml_collections.ConfigDict, workdir: str,
              progress: Callable[[str, dict], None] | None = None) -> dict:
  """Runs (or resumes) the testbed study; returns `summary.json`'s dict (see
  `study_runner.run_study`)."""
  return study_runner.run_study(STUDY_TASK, config, workdir, progress)


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
