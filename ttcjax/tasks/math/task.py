"""MATH-style problems searched with open checkpoints: the sweep and the study.

A `configs/math500` config names local Hugging Face checkpoints (the policy, a
published PRM of an adapter family, optionally a larger policy), the data file, the
prompt and the search caps. From it:

* `build_search` loads the models (the policy's own tokenizer and chat template, the
  PRM behind its `PrmAdapter`), reads the problems and lays out their prompts;
* `run_search_sweep` runs (or resumes) the strategy x budget sweep into
  `workdir/results.jsonl`, as `experiments.search` does for the testbed;
* `TASK`, the task's entry in `ttcjax.tasks`, runs the sweep and the compute-optimal study
  (`ttcjax.study.runner`).

Answers: the last `\\boxed{}` of a candidate (`math_data.extract_boxed`) keyed by
`math_grading.canonical_key`, so equal answers vote together; a candidate is right
when math-verify grades its answer equal to the reference (`MathAnswers.judge`).

Bad input never stops a run halfway. Before any search, a data row without an answer
(or otherwise malformed) and a problem whose policy or PRM prompt exceeds its buffer
are skipped with a logged reason; the skips are written to `workdir/skipped.json`
and counted in the study's report. Missing checkpoint shards, a PRM tokenizer without
its family's tokens and the like fail at start-up with a `ValueError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from typing import Any, Callable, Hashable, Mapping

import jax
import ml_collections

from ttcjax import compute, parallel, rundir, sweep
from ttcjax.sweep import memory_plan, view
from ttcjax.models.hf_import import (load_hf_checkpoint, load_hf_config, load_hf_prm_config,
                                     load_hf_tokenizer)
from ttcjax.models.prm_adapters import load_adapted_prm, load_prm_adapter
from ttcjax.sampling import Sampler
from ttcjax.study import runner as study_runner
from ttcjax.sweep.runner import SearchRunner
from ttcjax.tasks.base import Task
from ttcjax.tasks.math import data as math_data, grading as math_grading
from ttcjax.tasks.math.prompts import PromptBuilder

NAME = "math500"
# Fields a study config adds to a search config; the search stages never see them.
STUDY_FIELDS = ("variant", "large_policy_dir", "pretraining_tokens",
                "difficulty_samples", "difficulty_seed", "num_bins", "selection", "cv_repeats",
                "num_draws", "analysis_seed", "exchange_ratios")
# Fields a sweep may change and still extend the same results (records are keyed by
# strategy, budget, seed and problem, and a problem's search depends only on its id).
WIDENABLE_FIELDS = ("budgets", "seeds", "num_problems", "problems_per_batch", "mesh",
                    "device_gb")


class MathAnswers:
  """A runner's answer function and the sweep's judge, sharing one grader.

  `answer(text)` is the canonical key of the text's boxed answer (None when there is
  no box), for voting; `judge(key, reference, text)` grades the candidate's own boxed
  answer against the reference with math-verify (cached per pair of texts).
  """

  def __init__(self, grader: math_grading.MathGrader | None = None):
    self.grader = grader or math_grading.default_grader()
    self._graded: dict[tuple[str, str], bool] = {}

  def answer(self, text: str) -> str | None:
    return self.grader.canonical_key(math_data.extract_boxed(text))

  def judge(self, key: Hashable | None, reference: str, text: str) -> bool:
    boxed = math_data.extract_boxed(text)
    if key is None or boxed is None:
      return False
    if (boxed, reference) not in self._graded:
      self._graded[(boxed, reference)] = self.grader.grade(boxed, reference)
    return self._graded[(boxed, reference)]


@dataclasses.dataclass
class MathSearch:
  """Everything a MATH sweep runs with.

  Attributes:
    runner: the policy and the adapted PRM.
    problems: the problems kept, in file order.
    prompts: their policy prompts.
    skipped: [{"uid", "reason"}] of the problems left out.
    answers: the runner's answer function and the judge.
  """

  runner: SearchRunner
  problems: list[math_data.MathProblem]
  prompts: list[str]
  skipped: list[dict]
  answers: MathAnswers

  @property
  def problem_ids(self) -> list[int]:
    return [problem_id(p) for p in self.problems]


def problem_id(problem: math_data.MathProblem) -> int:
  """A stable non-negative int32 id of a problem (CRC-32 of its unique_id)."""
  return zlib.crc32(problem.unique_id.encode("utf-8")) & 0x7FFFFFFF


def data_path(config: ml_collections.ConfigDict) -> str:
  """The config's data file; a relative path is taken from the repository root."""
  if os.path.isabs(config.data_path):
    return config.data_path
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  return os.path.join(root, config.data_path)


def config_mesh(config: ml_collections.ConfigDict):
  """The config's (data, model) mesh, or None for one device."""
  data, model = config.mesh.data, config.mesh.model
  return None if data * model == 1 else parallel.make_mesh(data=data, model=model)


def build_search(config: ml_collections.ConfigDict, mesh=None) -> MathSearch:
  """Loads the config's models and problems (see the module docstring).

  Raises:
    ValueError: a checkpoint is incomplete or mismatched (missing shard, tokenizer
      without the PRM family's tokens, policy and PRM tokenizers that differ), the data
      file is missing or has no usable row, or few_shot asks for more examples than exist.
  """
  dtype = config.dtype
  tokenizer = load_hf_tokenizer(config.policy_dir, eos_token=config.policy_eos_token)
  policy = load_hf_checkpoint(config.policy_dir, dtype=dtype)
  adapter, prm_config, prm_params = load_adapted_prm(config.prm_dir, config.prm_family,
                                                     dtype=dtype)
  answers = MathAnswers()
  build_prompt = PromptBuilder.from_dir(
      config.policy_dir, instruction=config.system_prompt, few_shot=config.few_shot,
      few_shot_path=config.few_shot_path, use_chat_template=config.use_chat_template)
  # A revision model (a checkpoint fine-tuned from the policy, sharing its tokenizer)
  # reads previous attempts as earlier turns of the policy's chat template.
  revision, separator = None, ""
  if config.get("revision_dir"):
    revision = load_hf_checkpoint(config.revision_dir, dtype=dtype)
    separator = build_prompt.attempt_separator()
  runner = SearchRunner(policy, (prm_config, prm_params), tokenizer, answers.answer,
                        step_delimiter=config.step_delimiter, mesh=mesh, prm_adapter=adapter,
                        revision_policy=revision, attempt_separator=separator,
                        **dict(config.caps))
  problems, skipped = math_data.load_math_skipping(data_path(config), config.num_problems)
  kept, prompts = [], []
  bos = 1 if tokenizer.bos_id is not None else 0
  for problem in problems:
    prompt = build_prompt(problem.problem)
    policy_tokens = len(tokenizer.encode(prompt)) + bos
    prm_tokens = len(adapter.prompt_ids(problem.problem))
    if policy_tokens > runner.max_prompt_tokens:
      reason = (f"the policy prompt has {policy_tokens} tokens, more than max_prompt_tokens="
                f"{runner.max_prompt_tokens}")
    elif prm_tokens > runner.max_prm_prompt_tokens:
      reason = (f"the PRM prompt has {prm_tokens} tokens, more than max_prm_prompt_tokens="
                f"{runner.max_prm_prompt_tokens}")
    else:
      kept.append(problem)
      prompts.append(prompt)
      continue
    skipped.append({"uid": problem.unique_id, "reason": reason})
  for skip in skipped:
    logging.warning("Skipping problem %s: %s", skip["uid"], skip["reason"])
  if not kept:
    raise ValueError(f"No problem of {data_path(config)} is usable ({len(skipped)} skipped; "
                     f"e.g. {skipped[0]['reason']}).")
  return MathSearch(runner, kept, prompts, skipped, answers)


def run_search_sweep(config: ml_collections.ConfigDict, workdir: str, mesh=None,
                     stop_after_units: int | None = None,
                     progress: Callable[[dict], None] | None = None,
                     archive_dir: str | None = None) -> dict:
  """Runs (or resumes) the sweep a `configs/math500` config describes.

  Writes `workdir/results.jsonl` (see `ttcjax.sweep`) and `workdir/skipped.json`. A
  MATH-500 sweep resumes from its workdir alone (`archive_dir` must be None).

  Returns:
    the sweep's totals (`sweep.run_sweep`) with "units_total", "uids" (the problems
    searched) and "skipped" ([{"uid", "reason"}]).
  """
  if archive_dir:
    raise ValueError("--archive applies to testbed sweeps; a MATH-500 sweep resumes from "
                     "its workdir alone.")
  config = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items()
                                      if k not in STUDY_FIELDS})
  # Strategies, budgets and sampling are checked before any model loads.
  settings = [sweep.StrategySetting.from_dict(dict(s)) for s in config.strategies]
  sweep.check_settings_run(settings, list(config.budgets))
  revising = [s.label for s in settings if s.strategy.revises]
  if revising and not config.get("revision_dir"):
    raise ValueError(f"The settings {revising} run sequential revisions, which need a revision "
                     "model: set revision_dir to a checkpoint fine-tuned from the policy.")
  sampler = Sampler(temperature=config.temperature, top_p=config.top_p).check()
  setup = build_search(config, mesh if mesh is not None else config_mesh(config))
  units = sweep.plan_units(settings, list(config.budgets), list(config.seeds),
                           len(setup.problems), config.problems_per_batch)
  check_memory(setup.runner, units, config.problems_per_batch, config.device_gb)
  # Recorded only now: a run refused above leaves nothing that would refuse its fix.
  rundir.check_run_config(workdir, config.to_dict(), ignore=WIDENABLE_FIELDS)
  if parallel.is_writer():  # process 0 of a multi-host run writes the run's files
    with open(os.path.join(workdir, "skipped.json"), "w") as f:
      json.dump(setup.skipped, f, indent=1)
  stats = sweep.run_sweep(
      setup.runner, setup.problems, setup.prompts, setup.problem_ids,
      [p.answer for p in setup.problems], units, os.path.join(workdir, "results.jsonl"),
      sampler,
      stop_after_units=stop_after_units, progress=progress,
      problem_texts=[p.problem for p in setup.problems], judge=setup.answers.judge)
  return dict(stats, units_total=len(units), uids=[p.uid for p in setup.problems],
              skipped=setup.skipped)


def search_problem(config: Mapping[str, Any], uid: str, setting: sweep.StrategySetting,
                   budget: int, seed: int) -> view.ProblemSearch:
  """One MATH problem searched again as the sweep of `config` (its recorded
  `run_config.json`) searched it in unit (setting, budget, seed), traced.

  Raises:
    ValueError: the problem is not among the sweep's usable problems.
  """
  config = ml_collections.ConfigDict({k: v for k, v in dict(config).items()
                                      if k not in STUDY_FIELDS})
  setup = build_search(config, config_mesh(config))
  index = next((i for i, p in enumerate(setup.problems) if p.uid == uid), None)
  if index is None:
    skipped = {s["uid"]: s["reason"] for s in setup.skipped}
    why = (f"it was skipped: {skipped[uid]}" if uid in skipped else
           f"uids look like {setup.problems[0].uid!r}")
    raise ValueError(f"Problem {uid!r} is not among this sweep's {len(setup.problems)} "
                     f"problems ({why}).")
  problem = setup.problems[index]
  sampler = Sampler(temperature=config.temperature, top_p=config.top_p).check()
  return view.search_problem(
      setup.runner, setting, budget, seed, sampler, uid=uid, prompt=setup.prompts[index],
      problem_id=problem_id(problem), correct_answer=problem.answer,
      judge=setup.answers.judge, problem_text=problem.problem)


def device_bytes(device_gb: float) -> int | None:
  """Usable bytes per device: `memory_plan.USABLE_FRACTION` of `device_gb` GiB when set,
  else of what the accelerator reports (its allocator's limit); None on a CPU, which
  has no such limit to check. The fraction leaves room for what the plan does not
  count (XLA's code and scratch), as `experiments.memory_plan` does."""
  if device_gb:
    total = device_gb * memory_plan.GIB
  else:
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if not stats or "bytes_limit" not in stats:
      return None
    total = stats["bytes_limit"]
  return int(total * memory_plan.USABLE_FRACTION)


def check_memory(runner: SearchRunner, units, problems_per_batch: int,
                 device_gb: float = 0.0) -> None:
  """Refuses, before any search, a sweep one of whose calls would not fit a device
  (`memory_plan.check_fits`: the message says what would fit)."""
  usable = device_bytes(device_gb)
  if usable is None:
    return
  data = runner.data_shards
  model = 1 if runner.mesh is None else runner.mesh.shape.get(parallel.MODEL_AXIS, 1)
  problems = -(-problems_per_batch // data) * data
  caps = dict(max_prompt_tokens=runner.max_prompt_tokens,
              max_prm_prompt_tokens=runner.max_prm_prompt_tokens,
              max_step_tokens=runner.settings.max_step_tokens,
              max_solution_tokens=runner.settings.max_solution_tokens,
              max_steps=runner.settings.max_steps, max_rounds=runner.settings.max_rounds,
              prm_rows_per_pass=runner.settings.prm_rows_per_pass,
              share_prompt_cache=runner.share_prompt_cache, kv_page_size=runner.kv_page_size)
  suffix = 0 if runner.prm_adapter is None else len(runner.prm_adapter.suffix_ids)
  for key in sorted({(u.setting.name, u.budget,
                      u.setting.strategy.lookahead_steps(dict(u.setting.hyper))) for u in units}):
    name, budget, lookahead = key
    plan = memory_plan.plan_search_memory(
        runner.policy_config, runner.prm_config, strategy=name, budget=budget,
        problems_per_batch=problems, prm_suffix_length=suffix, lookahead_steps=lookahead,
        data_shards=data, model_shards=model, **caps)
    try:
      memory_plan.check_fits(plan, usable)
    except ValueError as err:
      raise ValueError(f"{name} at N={budget} would not fit: {err} (device_gb sets the "
                       "usable memory per device when the reported one is wrong.)") from None


# ---------------------------------------------------------------------------- study


def stage_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The search config of each study stage ("large_greedy" only with a larger policy)."""
  base = {k: v for k, v in config.to_dict().items() if k not in STUDY_FIELDS}
  stages = {
      "sweep": base,
      "difficulty": dict(base, budgets=(config.difficulty_samples,),
                         seeds=(config.difficulty_seed,),
                         strategies=[dict(name="best_of_n", label="difficulty")]),
  }
  if config.large_policy_dir:
    stages["large_greedy"] = dict(base, policy_dir=config.large_policy_dir, budgets=(1,),
                                  seeds=(0,), temperature=0.0,
                                  strategies=[dict(name="best_of_n", label="greedy")])
  return {name: ml_collections.ConfigDict(c) for name, c in stages.items()}


def _run_stage(stage_config: ml_collections.ConfigDict, workdir: str,
               progress: Callable[[dict], None] | None) -> dict:
  return run_search_sweep(stage_config, workdir, progress=progress)


def _model_configs(config):
  """The policy's and the PRM's configs from the checkpoints' config.json files."""
  policy = load_hf_config(config["policy_dir"], dtype=config["dtype"])
  adapter = load_prm_adapter(config["prm_dir"], config["prm_family"])
  labels = {} if adapter.head == "value" else dict(
      positive_token_id=adapter.positive_token_id, negative_token_id=adapter.negative_token_id)
  return policy, load_hf_prm_config(config["prm_dir"], config["dtype"], **labels)


def model_costs(config) -> tuple[compute.ModelCost, compute.ModelCost]:
  """FLOPs per token of a sweep config's policy and PRM (no weights are read)."""
  policy, prm = _model_configs(config)
  return compute.ModelCost.of_policy(policy), compute.ModelCost.of_prm(prm)


def _model_facts(config: ml_collections.ConfigDict) -> study_runner.ModelFacts:
  """Model sizes from the checkpoints' config.json files (no weights are read)."""
  policy, prm = _model_configs(config)
  large = load_hf_config(config.large_policy_dir) if config.large_policy_dir else None
  if large is not None and not config.pretraining_tokens:
    raise ValueError("A study with a larger policy needs pretraining_tokens (D_pretrain of "
                     "the exchange, e.g. 15e12 for the Llama 3 family).")
  return study_runner.ModelFacts(
      policy_cost=compute.ModelCost.of_policy(policy), prm_cost=compute.ModelCost.of_prm(prm),
      small_params=policy.num_params, large_params=None if large is None else large.num_params,
      pretraining_tokens=config.pretraining_tokens if large is not None else None)


def make_mesh(config: ml_collections.ConfigDict, data_shards: int, model_shards: int):
  """The config's mesh, each axis overridden by a positive shard count."""
  config.mesh.data = data_shards or config.mesh.data
  config.mesh.model = model_shards or config.mesh.model
  return config_mesh(config)


TASK = Task(
    name=NAME, run_sweep=run_search_sweep, make_mesh=make_mesh, model_costs=model_costs,
    study=study_runner.StudyTask(
        name=NAME, title="MATH-500 with open models",
        num_problems=lambda config: config.num_problems or 500,
        stage_configs=stage_configs, run_stage=_run_stage, model_facts=_model_facts),
    search_problem=search_problem)
