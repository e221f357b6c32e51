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
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from ttcjax.models.cache import KVCache, SharedPrefixCache
from ttcjax.models.config import get_config
from ttcjax.models.prm import init_prm_params, transformer_prm_fn
from ttcjax.models.prm_adapters import QwenMathPrmAdapter
from ttcjax.models.transformer import init_params
from ttcjax.sampling import Sampler, StepDelimiter, transformer_decode_fn
from ttcjax.search import get_strategy
from ttcjax.search.base import SearchBatch, SearchModels, SearchSettings, prm_cache_capacity
from ttcjax.sweep import memory_plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/math500 config file.")
_STRATEGIES = flags.DEFINE_list("strategies", ["best_of_n", "beam"], "Strategies to compile.")
_BUDGETS = flags.DEFINE_list("budgets", ["16", "64", "256"], "Budgets N.")
_CHECK_DTYPE = flags.DEFINE_enum("check_dtype", "float32", ["float32", "bfloat16"],
                                 "Dtype the models are compiled in.")
_SHARED = flags.DEFINE_bool("shared", True, "Prompts stored once per problem.")
_PROBLEMS = flags.DEFINE_integer("problems", 0, "Problems per call (0: the config's).")
_JSON = flags.DEFINE_string("json", None, "Write the rows here.")
flags.mark_flags_as_required(["config"])

_BEAM_WIDTH = 4  # the MATH configs' beam width


def shapes_adapter(vocab: int, suffix_length: int):
  """A PRM adapter of the family's suffix length over a vocabulary, for shapes only
  (the token tables are trivial: no token is dropped or stripped)."""
  return QwenMathPrmAdapter(path="(shapes)", tokenizer=None, suffix_ids=(1,) * suffix_length,
                            drop_table=np.zeros(vocab, bool),
                            rstrip_table=np.arange(vocab, dtype=np.int32))


def compile_search(policy, prm, suffix_length: int, strategy: str, budget: int, problems: int,
                   caps: dict, shared: bool):
  """(memory_analysis, lower seconds, compile seconds) of one search call.

  Args:
    policy, prm: the configs (`TransformerConfig`, `PrmConfig`).
    suffix_length: a published PRM layout's suffix tokens per step (0: the PRM reads
      the policy's tokens as they are, as on the testbed).
    strategy, budget, problems: the call; beam widths are the MATH configs' 4.
    caps: max_prompt_tokens, max_prm_prompt_tokens, max_step_tokens,
      max_solution_tokens, max_steps, max_rounds, prm_rows_per_pass.
    shared: `SharedPrefixCache` (True) or dense caches.
  """
  record = get_strategy(strategy)
  hyper = {"beam_width": _BEAM_WIDTH} if "beam_width" in record.hyperparameters else {}
  record.validate(budget, hyper)
  settings = SearchSettings(
      eos_id=0, pad_id=0,
      delimiter=StepDelimiter(next_state=jnp.zeros((2, policy.vocab_size), jnp.int32),
                              completes=jnp.zeros((2, policy.vocab_size), bool)),
      max_step_tokens=caps["max_step_tokens"], max_solution_tokens=caps["max_solution_tokens"],
      max_steps=caps["max_steps"], max_rounds=caps["max_rounds"],
      prm_rows_per_pass=caps["prm_rows_per_pass"]).check()
  prompt, prm_prompt = caps["max_prompt_tokens"], caps["max_prm_prompt_tokens"]
  policy_capacity = record.policy_cache_capacity(prompt, settings, hyper)
  suffixes = record.prm_suffixes_per_row(settings, hyper)
  prm_capacity = prm_cache_capacity(prm_prompt, settings, suffix_length, suffixes)

  def empty(config, capacity, width):
    if shared:
      return SharedPrefixCache.init(config, problems, width, capacity - width)
    return KVCache.init(config, problems, capacity)

  score = transformer_prm_fn(prm)
  if suffix_length:  # a published PRM's layout
    score = shapes_adapter(prm.backbone.vocab_size, suffix_length).wrap_prm_fn(
        score, max_steps_per_chunk=record.prm_chunk_steps(settings, hyper))
  decode = transformer_decode_fn(policy)

  def call(policy_params, prm_params, batch, rng, sampler, settings):
    models = SearchModels(decode, policy_params, score, prm_params)
    return record.fn(models, batch, rng, sampler, settings, budget=budget, **hyper)

  as_struct = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  batch = SearchBatch(
      prompts=ints(problems, prompt), prompt_lengths=ints(problems), problem_ids=ints(problems),
      policy_cache=jax.eval_shape(lambda: empty(policy, policy_capacity, prompt)),
      prm_cache=jax.eval_shape(lambda: empty(prm.backbone, prm_capacity, prm_prompt)),
      prm_prompts=ints(problems, prm_prompt) if suffix_length else None,
      prm_prompt_lengths=ints(problems) if suffix_length else None)
  key = jax.random.PRNGKey(0)
  args = (jax.eval_shape(lambda: init_params(policy, key)),
          jax.eval_shape(lambda: init_prm_params(prm, key)), batch,
          jax.ShapeDtypeStruct((2,), jnp.uint32),
          Sampler(temperature=jax.ShapeDtypeStruct((), jnp.float32),
                  top_p=jax.ShapeDtypeStruct((), jnp.float32)),
          as_struct(settings))
  start = time.perf_counter()
  lowered = jax.jit(call).lower(*args)
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
  caps.pop("prompt_buckets", None)  # planned and compiled at the widest prompt
  gib = lambda x: f"{x / memory_plan.GIB:.2f}"
  print(f"{config.policy_preset} + {config.prm_family} ({dtype}), {problems} problem(s) per "
        f"call, {'shared' if _SHARED.value else 'dense'} prompt caches, caps {caps}", flush=True)
  header = ("strategy", "N", "XLA args", "XLA temps", "XLA args+temps", "plan", "plan/XLA",
            f"plan bf16", "KV per row (plan)", "lower s", "compile s")
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
  rows = []
  for strategy in _STRATEGIES.value:
    for budget in map(int, _BUDGETS.value):
      analysis, lower_s, compile_s = compile_search(policy, prm, suffix_length, strategy, budget,
                                                    problems, caps, _SHARED.value)
      request = dict(strategy=strategy, budget=budget, problems_per_batch=problems,
                     prm_suffix_length=suffix_length, share_prompt_cache=_SHARED.value, **caps)
      plan = memory_plan.plan_search_memory(policy, prm, **request)
      bf16 = memory_plan.plan_search_memory(memory_plan.bfloat16(policy),
                                            memory_plan.bfloat16(prm), **request)
      xla = analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
      row = dict(strategy=strategy, budget=budget, problems=problems, dtype=dtype,
                 shared=_SHARED.value, xla_argument_bytes=int(analysis.argument_size_in_bytes),
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
