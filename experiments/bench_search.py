"""Search efficiency on the shipped testbed models: strategies side by side, and
incremental PRM scoring against rescoring whole prefixes.

What it measures (one process, runs interleaved so machine noise hits all alike,
medians reported; compile time excluded by a warm-up call of every function):

* problems/s of each strategy on B problems (the first of each level of the test
  set, cycled) with budget N: B / median wall time of one jitted search call, the
  candidates on the host. Strategies: best-of-N, beam (M = 4), lookahead (M = 4,
  k = 1), DVTS (M = 4), REBASE (temperature 0.1).
* beam_time_per_token_ratio: (beam seconds / policy tokens it generated) over
  (best-of-N seconds / policy tokens it generated), at the same B and N.
* prm_incremental_speedup: the shipped PRM scores S steps of R sequences two ways:
  incrementally (the prompt once, then each step's new tokens through the PRM's KV
  cache) and by rescoring (after each step, a fresh forward pass over the prompt
  and every step so far, as peers that recompute prefixes do). Speedup = rescoring
  time / incremental time; both return the same step scores (checked).

  python -m experiments.bench_search --json /tmp/bench_search.json
  python -m experiments.bench_search --quick          # seconds, for a smoke test
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ttcjax import parallel
from ttcjax.models.cache import KVCache
from ttcjax.models.prm import token_scores
from ttcjax.sampling import Sampler
from ttcjax.tasks.arith import testbed

_JSON = flags.DEFINE_string("json", None, "Where to write the figures (JSON).")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes and one run (a smoke test).")
_PROBLEMS = flags.DEFINE_integer("problems", 64, "B, problems per search call.")
_BUDGET = flags.DEFINE_integer("budget", 16, "N, rows per problem.")
_RUNS = flags.DEFINE_integer("runs", 3, "Timed runs per strategy (median reported).")
_PRM_ROWS = flags.DEFINE_integer("prm_rows", 256, "R, sequences for the PRM comparison.")
_PRM_STEPS = flags.DEFINE_integer("prm_steps", 10, "S, steps per sequence.")
_POLICY = flags.DEFINE_string("policy", testbed.shipped_checkpoint("policy_small"), "Policy.")
_PRM = flags.DEFINE_string("prm", testbed.shipped_checkpoint("prm"), "PRM.")
_STEP_TOKENS = flags.DEFINE_integer("step_tokens", 12, "Tokens per step in the PRM comparison.")

STRATEGIES = (
    ("best_of_n", {}),
    ("beam", {"beam_width": 4}),
    ("lookahead", {"beam_width": 4, "lookahead_steps": 1}),
    ("dvts", {"beam_width": 4}),
    ("rebase", {"temperature": 0.1}),
)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def bench_strategies(runner, problems, budget: int, runs: int) -> dict:
  prompts = [p.prompt for p in problems]
  ids = [testbed.problem_id(p) for p in problems]
  rng = jax.random.PRNGKey(0)
  calls = {name: (lambda name=name, hyper=hyper: runner.search(
      name, prompts, ids, budget=budget, rng=rng, sampler=Sampler(), **hyper))
      for name, hyper in STRATEGIES}
  compile_s, tokens = {}, {}
  for name, call in calls.items():  # warm-up: compiles every function
    compile_s[name], result = _timed(call)
    tokens[name] = float(np.sum(result.compute["policy_generated"]))
  times = {name: [] for name in calls}
  for _ in range(runs):
    for name, call in calls.items():
      times[name].append(_timed(call)[0])
  out = {}
  for name in calls:
    median = float(np.median(times[name]))
    out[name] = {"problems_per_s": len(problems) / median, "median_s": median,
                 "runs_s": times[name], "first_call_s": compile_s[name],
                 "policy_tokens": tokens[name], "s_per_policy_token": median / tokens[name]}
  return out


def bench_prm(prm_config, prm_params, rows: int, steps: int, step_tokens: int, runs: int) -> dict:
  """Incremental scoring through the PRM cache against rescoring every prefix."""
  rng = np.random.default_rng(0)
  prompt_len = 24
  vocab = prm_config.backbone.vocab_size
  prompt = jnp.asarray(rng.integers(3, vocab, (rows, prompt_len)), jnp.int32)
  step_tokens_all = jnp.asarray(rng.integers(3, vocab, (rows, steps * step_tokens)), jnp.int32)
  capacity = prompt_len + steps * step_tokens
  full = jnp.concatenate([prompt, step_tokens_all], axis=1)
  # Step ends, which a step-likelihood head reads: each chunk is one step.
  chunk_end = jnp.zeros((rows, step_tokens), bool).at[:, -1].set(True)
  full_end = jnp.zeros(full.shape, bool).at[
      :, prompt_len + step_tokens - 1::step_tokens].set(True)
  solution_start = jnp.full((rows,), prompt_len, jnp.int32)

  @jax.jit
  def prefill(params):
    cache = KVCache.init(prm_config.backbone, rows, capacity)
    return token_scores(params, prm_config, prompt, cache)[1]

  @jax.jit
  def add_step(params, cache, chunk):
    scores, cache = token_scores(params, prm_config, chunk, cache, step_end=chunk_end)
    return scores[:, -1], cache

  def rescored(params, s):
    end = prompt_len + s * step_tokens
    return token_scores(params, prm_config, full[:, :end], step_end=full_end[:, :end],
                        solution_start=solution_start)[0][:, -1]

  rescore = {s: jax.jit(functools.partial(rescored, s=s)) for s in range(1, steps + 1)}

  def incremental():
    cache = prefill(prm_params)
    out = []
    for s in range(steps):
      score, cache = add_step(prm_params, cache,
                              step_tokens_all[:, s * step_tokens:(s + 1) * step_tokens])
      out.append(score)
    return np.asarray(jax.device_get(jnp.stack(out, 1)))

  def rescoring():
    return np.asarray(jax.device_get(jnp.stack([rescore[s](prm_params)
                                                for s in range(1, steps + 1)], 1)))

  a, b = incremental(), rescoring()  # warm-up (compiles), and the same answers
  max_diff = float(np.abs(a - b).max())
  times = {"incremental": [], "rescoring": []}
  for _ in range(runs):
    times["incremental"].append(_timed(incremental)[0])
    times["rescoring"].append(_timed(rescoring)[0])
  inc, res = float(np.median(times["incremental"])), float(np.median(times["rescoring"]))
  return {"rows": rows, "steps": steps, "step_tokens": step_tokens, "prompt_tokens": prompt_len,
          "incremental_s": inc, "rescoring_s": res, "speedup": res / inc,
          "max_score_diff": max_diff, "runs_s": times}


def main(argv):
  del argv
  quick = _QUICK.value
  num_problems = 4 if quick else _PROBLEMS.value
  budget = 4 if quick else _BUDGET.value
  runs = 1 if quick else _RUNS.value
  problems = testbed.evaluation_problems(50)[:num_problems]  # levels interleaved
  caps = dict(max_prompt_tokens=testbed.MAX_PROMPT_TOKENS, max_step_tokens=32,
              max_solution_tokens=testbed.MAX_SOLUTION_TOKENS, max_steps=testbed.MAX_STEPS,
              max_rounds=40)
  mesh = parallel.make_mesh() if jax.device_count() > 1 else None
  runner = testbed.search_runner(_POLICY.value, _PRM.value, caps, mesh)
  strategies = bench_strategies(runner, problems, budget, runs)
  prm_config, prm_params, _ = testbed.load_reward_model(_PRM.value)
  prm = bench_prm(prm_config, prm_params, 16 if quick else _PRM_ROWS.value,
                  3 if quick else _PRM_STEPS.value, _STEP_TOKENS.value, runs)
  results = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "cpu_count": os.cpu_count(), "problems": num_problems, "budget": budget, "runs": runs,
      "problems_per_s": {k: v["problems_per_s"] for k, v in strategies.items()},
      "beam_time_per_token_ratio": (strategies["beam"]["s_per_policy_token"]
                                    / strategies["best_of_n"]["s_per_policy_token"]),
      "prm_incremental_speedup": prm["speedup"],
      "strategies": strategies, "prm": prm,
  }
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2)
  print(f"B={num_problems} problems, N={budget}, median of {runs} runs")
  print(f"{'strategy':<10} {'problems/s':>10} {'median s':>9} {'tokens':>9} {'us/token':>9}")
  for name, v in strategies.items():
    print(f"{name:<10} {v['problems_per_s']:10.2f} {v['median_s']:9.2f} {v['policy_tokens']:9.0f} "
          f"{1e6 * v['s_per_policy_token']:9.1f}")
  print(f"beam_time_per_token_ratio {results['beam_time_per_token_ratio']:.3f}")
  print(f"prm_incremental_speedup   {prm['speedup']:.2f} (incremental {prm['incremental_s']:.3f} s, "
        f"rescoring {prm['rescoring_s']:.3f} s, max score diff {prm['max_score_diff']:.1e})")


if __name__ == "__main__":
  app.run(main)
