"""XLA's compiled memory of a real-size search beside the memory plan; nothing is allocated.

  python -m experiments.memory_check --config configs/math500/qwen_math1p5b_prm7b.py \
      --strategies best_of_n,beam --budgets 16,64,256 --json runs/memory_check_qwen.json
  python -m experiments.memory_check --config configs/math500/llama1b_rlhflow8b.py \
      --strategies best_of_n,beam --budgets 16,64

Each (strategy, budget) is lowered from `jax.ShapeDtypeStruct`s of the config's presets
(random-weight shapes, no checkpoint) at its caps, through the code the runner runs
(the strategy, the transformer's `DecodeFn`, the PRM adapter's `PrmFn`), compiled for
the host CPU, and `compiled.memory_analysis()` is printed beside
`ttcjax.sweep.memory_plan`: arguments (parameters, the batch's empty caches) plus
temporaries against the plan's total.

The check runs in float32 (`--check_dtype`), where the CPU backend computes what a
GPU or TPU would: in bfloat16 XLA:CPU also keeps float32 copies of the weights its
matrix multiplies read (an artefact of that backend, several GiB at these sizes), so
a bfloat16 analysis on CPU overstates a device's need. The plan is one formula over
dtype sizes, so agreement in float32 carries to its bfloat16 figures, which are
printed beside (`plan bf16`). `--shared` chooses the cache layout (`SharedPrefixCache`,
the MATH configs' default) or the dense one that repeats the prompt per row.
"""

from __future__ import annotations

import json
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from ttcjax.models.config import get_config
from ttcjax.sweep import memory_plan, synthetic

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/math500 config file.")
_STRATEGIES = flags.DEFINE_list("strategies", ["best_of_n", "beam"], "Strategies to compile.")
_BUDGETS = flags.DEFINE_list("budgets", ["16", "64", "256"], "Budgets N.")
_CHECK_DTYPE = flags.DEFINE_enum("check_dtype", "float32", ["float32", "bfloat16"],
                                 "Dtype the models are compiled in.")
_SHARED = flags.DEFINE_bool("shared", True, "Prompts stored once per problem.")
_PAGE_SIZE = flags.DEFINE_integer(
    "kv_page_size", -1, "Rows kept in pages of this many slots (0: dense rows; -1: the "
    "config's caps.kv_page_size).")
_PROBLEMS = flags.DEFINE_integer("problems", 0, "Problems per call (0: the config's).")
_JSON = flags.DEFINE_string("json", None, "Write the rows here.")
flags.mark_flags_as_required(["config"])


def compile_search(policy, prm, suffix_length: int, strategy: str, budget: int, problems: int,
                   caps: dict, shared: bool, page_size: int = 0):
  """(memory_analysis, lower seconds, compile seconds) of one search call, built by
  `ttcjax.sweep.synthetic.build_search` (beam widths are the MATH configs' 4)."""
  search = synthetic.build_search(policy, prm, suffix_length, strategy, budget, problems, caps,
                                  shared, page_size=page_size)
  start = time.perf_counter()
  lowered = jax.jit(search.call).lower(*search.args)
  lowered_s = time.perf_counter() - start
  compiled = lowered.compile()
  return compiled.memory_analysis(), lowered_s, time.perf_counter() - start - lowered_s


def main(argv):
  del argv
  config = _CONFIG.value
  dtype = _CHECK_DTYPE.value
  policy = get_config(config.policy_preset, param_dtype=dtype, dtype=dtype)
  prm, suffix_length = memory_plan.published_prm(config.prm_family, dtype)
  problems = _PROBLEMS.value or config.problems_per_batch
  caps = dict(config.caps)
  caps.pop("share_prompt_cache", None)  # --shared decides
  page_size = caps.pop("kv_page_size", 0) if _PAGE_SIZE.value < 0 else _PAGE_SIZE.value
  if page_size and not _SHARED.value:
    raise ValueError("--kv_page_size pages shared prompt caches' rows: drop --noshared.")
  caps.pop("prompt_buckets", None)  # planned and compiled at the widest prompt
  gib = lambda x: f"{x / memory_plan.GIB:.2f}"
  print(f"{config.policy_preset} + {config.prm_family} ({dtype}), {problems} problem(s) per "
        f"call, {'shared' if _SHARED.value else 'dense'} prompt caches"
        f"{f', rows in pages of {page_size}' if page_size else ''}, caps {caps}", flush=True)
  header = ("strategy", "N", "XLA args", "XLA temps", "XLA args+temps", "plan", "plan/XLA",
            f"plan bf16", "KV per row (plan)", "lower s", "compile s")
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
  rows = []
  for strategy in _STRATEGIES.value:
    for budget in map(int, _BUDGETS.value):
      analysis, lower_s, compile_s = compile_search(policy, prm, suffix_length, strategy, budget,
                                                    problems, caps, _SHARED.value, page_size)
      request = dict(strategy=strategy, budget=budget, problems_per_batch=problems,
                     prm_suffix_length=suffix_length, share_prompt_cache=_SHARED.value,
                     kv_page_size=page_size, **caps)
      plan = memory_plan.plan_search_memory(policy, prm, **request)
      bf16 = memory_plan.plan_search_memory(memory_plan.bfloat16(policy),
                                            memory_plan.bfloat16(prm), **request)
      xla = analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
      row = dict(strategy=strategy, budget=budget, problems=problems, dtype=dtype,
                 shared=_SHARED.value, kv_page_size=page_size, xla_argument_bytes=int(analysis.argument_size_in_bytes),
                 xla_temp_bytes=int(analysis.temp_size_in_bytes),
                 xla_output_bytes=int(analysis.output_size_in_bytes), xla_total_bytes=int(xla),
                 plan_bytes=plan.total, plan_bf16_bytes=bf16.total,
                 plan_kv_row_bytes=bf16.kv_row_bytes, lower_s=lower_s, compile_s=compile_s)
      rows.append(row)
      print(f"| {strategy} | {budget} | {gib(analysis.argument_size_in_bytes)} | "
            f"{gib(analysis.temp_size_in_bytes)} | {gib(xla)} | {gib(plan.total)} | "
            f"{plan.total / xla:.3f} | {gib(bf16.total)} | {gib(bf16.kv_row_bytes)} (bf16) | "
            f"{lower_s:.1f} | {compile_s:.1f} |", flush=True)
      if _JSON.value:
        with open(_JSON.value, "w") as f:
          json.dump(rows, f, indent=1)


if __name__ == "__main__":
  app.run(main)
