"""Search at the real models' size on one device: throughput, rooflines, compile time
and peak memory against the memory plan.

Models: random weights of the published shapes (default the Qwen2.5-Math-1.5B policy
and the Qwen2.5-Math-PRM-7B PRM, bfloat16; `--policy_preset`, `--prm_family`), built
on the device, no checkpoint. Random weights never write a step delimiter, so steps
are cut by a token-id rule (`ttcjax.sweep.synthetic.every_kth_token_delimiter`): a
sampled token whose id is a multiple of k = `--step_tokens` ends a step, which a
near-uniform random model does about every k tokens; a step is also cut at 4k
tokens, a solution at `--solution_tokens` or `--solution_tokens / k` steps, and the
lengths the searches produced are reported. Prompts are `--prompt_tokens` random ids,
cached once per problem (`SharedPrefixCache`, as the MATH configs run).

What it measures (medians of `--runs` timed calls after a warm-up one):
* per strategy and budget N, one jitted search call over `--problems` problems:
  lower and compile seconds (AOT), wall seconds, problems/s, policy tokens/s and
  PRM tokens/s (the search's own compute records over its wall time: both models
  share that time), the mean step length, the device's peak memory after the call
  (`memory_stats()["peak_bytes_in_use"]`, where the backend reports it; searches
  run in the order of their planned memory, smallest first, so a peak that grew is
  that call's) beside XLA's arguments + temporaries and the memory plan's total;
* policy decode alone (B x N rows: prefill, then `--solution_tokens` sampled
  tokens), tokens/s and its fraction of the roofline
  (`experiments.roofline.roofline_seconds`: each forward costs the larger of its FLOPs
  over the matmul rate and its bytes, the weights and the KV cache so far, over the
  memory bandwidth; at these sizes most steps are bound by bandwidth);
* a PRM scoring pass alone (`--prm_rows` rows of prompt + solution through the PRM
  in one forward), tokens/s and its fraction of the matmul roofline (its FLOPs:
  2 x matmul weights per token plus attention, over the peak rate).
Rooflines use the spec sheet's bfloat16 peaks where `experiments.roofline.SPEC_PEAKS`
knows the device (bfloat16 runs only), and the rates measured here (a large matmul in the models' dtype, an
elementwise pass) on any device; both fractions are printed.

  python -m experiments.bench_scale --json /tmp/bench_scale.json        # one GPU/TPU
  python -m experiments.bench_scale --shrink --json /tmp/bench_scale.json  # CPU, minutes

`--shrink` keeps the code path and replaces the sizes (2-layer models of width
64-96, 2 problems, N = 4, short prompts and solutions): the CPU check a test runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import roofline
from ttcjax.compute import ModelCost
from ttcjax.models.cache import KVCache
from ttcjax.models.config import get_config
from ttcjax.models.prm import token_scores
from ttcjax.sampling import Sampler, prefill, row_keys, sample_steps, transformer_decode_fn
from ttcjax.sweep import memory_plan, synthetic

_POLICY = flags.DEFINE_string("policy_preset", "qwen2.5-math-1.5b", "Policy shape (a preset).")
_PRM = flags.DEFINE_enum("prm_family", "qwen_math_prm", sorted(memory_plan.PUBLISHED_PRMS),
                         "PRM shape and layout (a published family).")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Weights and compute.")
_STRATEGIES = flags.DEFINE_list("strategies", ["best_of_n", "beam"], "Strategies to run.")
_BUDGETS = flags.DEFINE_list("budgets", ["16", "64"], "Budgets N.")
_PROBLEMS = flags.DEFINE_integer("problems", 8, "B, problems per search call.")
_PROMPT = flags.DEFINE_integer("prompt_tokens", 256, "Prompt tokens per problem.")
_SOLUTION = flags.DEFINE_integer("solution_tokens", 512, "Cap on a solution's tokens.")
_STEP = flags.DEFINE_integer("step_tokens", 64, "k: ids that are multiples of k end a step.")
_PRM_ROWS = flags.DEFINE_integer("prm_rows", 64, "Rows of the PRM scoring pass.")
_RUNS = flags.DEFINE_integer("runs", 2, "Timed calls per measurement (median reported).")
_SHRINK = flags.DEFINE_bool("shrink", False, "Tiny sizes for a CPU check (same code path).")
_JSON = flags.DEFINE_string("json", None, "Write the figures here (JSON).")

SHRUNK_BACKBONE = dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=16, intermediate_size=128)
SHRUNK_PRM_BACKBONE = dict(SHRUNK_BACKBONE, hidden_size=96, head_dim=24, intermediate_size=192)
SHRUNK_SIZES = dict(problems=2, budgets=[4], prompt_tokens=16, solution_tokens=32, step_tokens=8,
                    prm_rows=8)


def models(shrink: bool, dtype: str):
  """(policy config, PRM config, the PRM's suffix length)."""
  policy = get_config(_POLICY.value, param_dtype=dtype, dtype=dtype)
  prm, suffix = memory_plan.published_prm(_PRM.value, dtype)
  if shrink:
    policy = policy.replace(**SHRUNK_BACKBONE, rope_scaling=None, sliding_window=None)
    backbone = prm.backbone.replace(**SHRUNK_PRM_BACKBONE, rope_scaling=None, sliding_window=None)
    prm = dataclasses.replace(prm, backbone=backbone,
                              head_hidden=32 if prm.head_hidden else None)
  return policy, prm, suffix


def timed(fn, runs: int) -> tuple[float, list[float], object]:
  """(median seconds, every run's seconds, the last result) of fn() after a warm-up;
  a call ends when its outputs are on the host."""
  jax.device_get(fn())
  times, out = [], None
  for _ in range(runs):
    start = time.perf_counter()
    out = jax.device_get(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times)), times, out


def peak_bytes(device) -> int | None:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def plan_of(search, caps: dict, suffix: int) -> int:
  """The memory plan's total bytes for one search (shared prompts, as it runs)."""
  return memory_plan.plan_search_memory(
      search.policy, search.prm, strategy=search.strategy, budget=search.budget,
      problems_per_batch=search.problems, prm_suffix_length=suffix, share_prompt_cache=True,
      **caps).total


def bench_search(search, params, caps, suffix, runs: int, device) -> dict:
  """One strategy at one budget: compile, run, and read what it spent."""
  start = time.perf_counter()
  lowered = jax.jit(search.call).lower(*search.args)
  lower_s = time.perf_counter() - start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start - lower_s
  analysis = compiled.memory_analysis()
  args = synthetic.materialise(search, *params)
  wall, times, out = timed(lambda: compiled(*args), runs)
  policy_tokens = float(np.sum(out.compute.policy_generated))
  prm_tokens = float(np.sum(out.compute.prm_scored))
  steps = float(np.sum(out.step_mask))
  xla = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes) if analysis else None
  return dict(strategy=search.strategy, budget=search.budget, problems=search.problems,
              lower_s=lower_s, compile_s=compile_s, wall_s=wall, times_s=times,
              problems_per_s=search.problems / wall, policy_tokens=policy_tokens,
              policy_tokens_per_s=policy_tokens / wall, prm_tokens=prm_tokens,
              prm_tokens_per_s=prm_tokens / wall, steps=steps,
              mean_step_tokens=float(np.sum(out.lengths)) / max(steps, 1.0),
              peak_bytes=peak_bytes(device), xla_bytes=xla,
              plan_bytes=plan_of(search, caps, suffix))


def bench_decode(policy, params, rows: int, prompt: int, new: int, runs: int, rates) -> dict:
  """The policy alone: prefill B x N rows, then `new` sampled tokens each."""
  decode = transformer_decode_fn(policy)
  length = prompt + new

  def generate(params, prompts, rng):
    cache = KVCache.init(policy, rows, length)
    state, _ = prefill(decode, params, cache, prompts, jnp.full((rows,), prompt, jnp.int32),
                       length)
    state = state.with_keys(row_keys(rng, jnp.arange(rows), 1))
    return sample_steps(decode, params, state, Sampler(temperature=1.0), max_new_tokens=new,
                        eos_id=-1, delimiter=None, max_steps=None).lengths

  prompts = jnp.asarray(np.random.default_rng(0).integers(1, policy.vocab_size, (rows, prompt)),
                        jnp.int32)
  start = time.perf_counter()
  compiled = jax.jit(generate).lower(params, prompts, jax.random.PRNGKey(0)).compile()
  compile_s = time.perf_counter() - start
  wall, times, lengths = timed(lambda: compiled(params, prompts, jax.random.PRNGKey(1)), runs)
  assert np.all(lengths == new), f"decode produced lengths {np.unique(lengths)}, not {new}"
  row = dict(rows=rows, prompt_tokens=prompt, new_tokens=new, compile_s=compile_s, wall_s=wall,
             times_s=times, tokens_per_s=rows * new / wall)
  for name, (bandwidth, flops) in rates.items():
    row[f"roofline_frac_{name}"] = roofline.roofline_seconds(policy, rows, prompt, new, flops,
                                                             bandwidth) / wall
  return row


def bench_prm(prm, params, rows: int, length: int, runs: int, rates) -> dict:
  """The PRM alone: one scoring forward over rows x length tokens."""
  score = jax.jit(lambda p, t: token_scores(p, prm, t)[0])
  tokens = jnp.asarray(np.random.default_rng(1).integers(1, prm.backbone.vocab_size,
                                                         (rows, length)), jnp.int32)
  start = time.perf_counter()
  compiled = score.lower(params, tokens).compile()
  compile_s = time.perf_counter() - start
  wall, times, _ = timed(lambda: compiled(params, tokens), runs)
  cost = ModelCost.of_prm(prm)  # a token-logit head multiplies its two tag rows only
  flops = rows * (length * cost.body_flops + cost.attention_flops * length * (length + 1) / 2)
  row = dict(rows=rows, tokens=length, compile_s=compile_s, wall_s=wall, times_s=times,
             tokens_per_s=rows * length / wall, flops=flops)
  for name, (_, peak) in rates.items():
    row[f"matmul_frac_{name}"] = flops / wall / peak
  return row


def main(argv):
  del argv
  shrink = _SHRINK.value
  sizes = SHRUNK_SIZES if shrink else dict(
      problems=_PROBLEMS.value, budgets=[int(b) for b in _BUDGETS.value],
      prompt_tokens=_PROMPT.value, solution_tokens=_SOLUTION.value, step_tokens=_STEP.value,
      prm_rows=_PRM_ROWS.value)
  k, solution, prompt = sizes["step_tokens"], sizes["solution_tokens"], sizes["prompt_tokens"]
  if not 1 <= k <= solution:
    raise app.UsageError(f"--step_tokens ({k}) must lie in [1, --solution_tokens = {solution}].")
  device = jax.devices()[0]
  policy, prm, suffix = models(shrink, _DTYPE.value)
  max_steps = max(solution // k, 1)
  caps = dict(max_prompt_tokens=prompt, max_prm_prompt_tokens=prompt + 8,
              max_step_tokens=min(4 * k, solution), max_solution_tokens=solution,
              max_steps=max_steps, max_rounds=max_steps, prm_rows_per_pass=0)
  try:  # every (strategy, budget) is checked before a model is built or a rate measured
    searches = [synthetic.build_search(policy, prm, suffix, name, budget, sizes["problems"],
                                       caps, True, step_tokens=k)
                for budget in sorted(sizes["budgets"]) for name in _STRATEGIES.value]
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  plans = {id(search): plan_of(search, caps, suffix) for search in searches}
  searches.sort(key=lambda search: plans[id(search)])
  dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
  big = not shrink and device.platform != "cpu"
  measured = roofline.measure_rates(device, 8192 if big else 512, 2048 if big else 64, dtype)
  rates = {"measured": (measured[1], measured[0])}
  spec = roofline.spec_peaks(device) if _DTYPE.value == "bfloat16" else None
  if spec:
    rates["spec"] = spec
  print(f"{device.device_kind} ({jax.default_backend()}, JAX {jax.__version__}); policy "
        f"{policy.num_params / 1e9:.3g}B, PRM backbone {prm.backbone.num_params / 1e9:.3g}B "
        f"({_DTYPE.value}{', shrunk' if shrink else ''}); measured {measured[0] / 1e12:.3g} "
        f"TFLOP/s matmul, {measured[1] / 1e9:.4g} GB/s copy"
        + (f"; spec {spec[1] / 1e12:.0f} TFLOP/s, {spec[0] / 1e9:.0f} GB/s" if spec else ""),
        flush=True)

  params = synthetic.random_params(searches[0])
  results = []
  for search in searches:
    r = bench_search(search, params, caps, suffix, _RUNS.value, device)
    results.append(r)
    print(f"search {r['strategy']} N={r['budget']}: {r['wall_s']:.2f} s, "
          f"{r['problems_per_s']:.3g} problems/s, policy {r['policy_tokens_per_s']:.4g} tok/s, "
          f"PRM {r['prm_tokens_per_s']:.4g} tok/s, steps of {r['mean_step_tokens']:.1f} tokens, "
          f"compile {r['compile_s']:.1f} s (+{r['lower_s']:.1f} lowering)", flush=True)
  searches = results
  decodes = [bench_decode(policy, params[0], sizes["problems"] * n, prompt, solution, _RUNS.value,
                          rates) for n in sorted(sizes["budgets"])]
  prm_pass = bench_prm(prm, params[1], sizes["prm_rows"], prompt + solution, _RUNS.value, rates)

  gib = lambda b: "n/a" if b is None else f"{b / 2 ** 30:.3g}"
  print("\n| strategy | N | problems/s | policy tok/s | PRM tok/s | step tokens | compile s | "
        "lower s | peak GiB | XLA args+temps GiB | plan GiB |\n|" + "---|" * 11)
  for r in searches:
    print(f"| {r['strategy']} | {r['budget']} | {r['problems_per_s']:.3g} | "
          f"{r['policy_tokens_per_s']:.4g} | {r['prm_tokens_per_s']:.4g} | "
          f"{r['mean_step_tokens']:.1f} | {r['compile_s']:.1f} | {r['lower_s']:.1f} | "
          f"{gib(r['peak_bytes'])} | {gib(r['xla_bytes'])} | {gib(r['plan_bytes'])} |")
  names = list(rates)
  print("\n| pass | rows | tok/s | " + " | ".join(f"roofline ({n})" for n in names) + " |\n|"
        + "---|" * (3 + len(names)))
  for d in decodes:
    print(f"| policy decode | {d['rows']} | {d['tokens_per_s']:.4g} | "
          + " | ".join(f"{d['roofline_frac_' + n]:.1%} of roofline" for n in names) + " |")
  print(f"| PRM scoring | {prm_pass['rows']} | {prm_pass['tokens_per_s']:.4g} | "
        + " | ".join(f"{prm_pass['matmul_frac_' + n]:.1%} of matmul" for n in names) + " |")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(dict(date=datetime.date.today().isoformat(), device=device.device_kind,
                     backend=jax.default_backend(), jax=jax.__version__, shrink=shrink,
                     policy_preset=_POLICY.value, prm_family=_PRM.value, dtype=_DTYPE.value,
                     sizes=sizes, caps=caps, rates={n: dict(bytes_per_s=b, flops_per_s=f)
                                                    for n, (b, f) in rates.items()},
                     searches=searches, decode=decodes, prm=prm_pass,
                     source_sha256=roofline.source_digest()), f, indent=1)


if __name__ == "__main__":
  app.run(main)
