"""Decode throughput of ttcjax against Hugging Face transformers, and a roofline.

What it measures: one Llama-architecture model (~60M parameters: hidden 512, 8
layers, 8 heads, vocab 32000, SwiGLU 1536, untied head, float32) is randomly
initialised in transformers with a fixed seed, saved with `save_pretrained`, and the
same weights are loaded into ttcjax with `load_hf_checkpoint` (their logits are
checked to agree first). For each batch size both frameworks sample 128 new tokens
(temperature 1, no top-k / top-p, no early stop: every row gets all 128 tokens)
after distinct random 64-token prompts. A timed call is the whole generation:
prefill + 128 sampled tokens, until the tokens are on the host.

  ttcjax: one jitted function, `prefill` + `sample_steps` (eos_id=-1, never hit);
          its lower+compile time is timed separately and is not in tokens/s.
  HF:     `model.generate` (sdpa attention, its KV cache: dynamic or static,
          whichever was faster in a trial) under `torch.inference_mode()`, always
          on CPU (torch with os.cpu_count() threads), also when JAX runs on GPU/TPU.

Runs alternate ttcjax / HF so machine noise hits both; medians are reported.
tokens/s = batch * 128 / median wall time.

Roofline: a lower bound on the time of the same generation on this device, from a
measured float32 matmul rate (jnp.dot) and copy bandwidth (read + write bytes/s,
best of numpy and jax). Each forward (the prefill of 64 tokens, then 127 one-token
steps at the current length) costs max(FLOPs / rate, bytes / bandwidth), where
FLOPs = 2 * matmul params per token + attention over the current length, and bytes
= the matmul weights (read once per forward) + the KV cache at the current length.
Fraction of roofline = roofline time / measured time (1.0 = at the bound). The HF
fraction uses the CPU's rates (measured with JAX's CPU device) even on a GPU/TPU.

Honesty checks: every timed run records the share of the CPUs that other processes
used meanwhile (/proc/stat), and the script warns when it exceeds 5% (torch's thread
pool slows down many-fold when another process takes a core, XLA's much less, so a
busy machine biases the ratio). The JSON keeps every run's time and a digest of
ttcjax's sources (the library version that was timed).

Command (the published numbers):
  python -m experiments.bench_decode --json /tmp/bench_decode.json
Smoke run (seconds): python -m experiments.bench_decode --quick
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from experiments.roofline import measure_rates, roofline_seconds, source_digest
from ttcjax.models.cache import KVCache
from ttcjax.models.hf_import import load_hf_checkpoint
from ttcjax.models.transformer import forward
from ttcjax.sampling import Sampler, prefill, row_keys, sample_steps, transformer_decode_fn

_BATCHES = flags.DEFINE_list("batches", ["1", "16", "64"], "Batch sizes to time.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per framework and batch.")
_PROMPT = flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
_NEW = flags.DEFINE_integer("new_tokens", 128, "Tokens sampled per row.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, prompts and sampling.")
_HF_CACHE = flags.DEFINE_enum("hf_cache", "auto", ["auto", "dynamic", "static"],
                              "HF KV cache; auto tries both per batch, keeps the faster.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny model, 16 new tokens, batches 1,4, 2 repeats.")
_JSON = flags.DEFINE_string("json", None, "Write the results as JSON here.")

FULL_MODEL = dict(vocab_size=32000, hidden_size=512, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, intermediate_size=1536)
QUICK_MODEL = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4, intermediate_size=384)


def build_models(shape: dict, seed: int, path: str):
  """Random HF Llama (float32, sdpa, no EOS) saved to `path`, and the ttcjax copy."""
  hf_config = transformers.LlamaConfig(
      **shape, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
      bos_token_id=None, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa")
  torch.manual_seed(seed)
  hf_model = transformers.LlamaForCausalLM(hf_config).to(torch.float32).eval()
  hf_model.generation_config.eos_token_id = None
  hf_model.save_pretrained(path)
  config, params = load_hf_checkpoint(path, dtype="float32")
  return hf_model, config, params


def check_logits(hf_model, config, params, prompt: np.ndarray) -> tuple[float, float]:
  """(max |logit difference| of the two models on `prompt` [1, T], max |HF logit|).

  JAX runs at "highest" matmul precision here, so that TF32 on a GPU does not hide
  a real mismatch; the timed runs use the default precision.
  """
  with torch.inference_mode():
    ref = hf_model(torch.from_numpy(prompt).long()).logits.numpy()
  with jax.default_matmul_precision("highest"):
    ours = np.asarray(jax.jit(lambda p, t: forward(p, config, t).logits)(params, prompt))
  return float(np.max(np.abs(ours - ref))), float(np.max(np.abs(ref)))


def compile_ttcjax(config, params, prompts, new_tokens: int):
  """Jits prefill + sample_steps for these shapes; returns (compiled fn, seconds)."""
  batch, prompt_len = prompts.shape
  max_length = prompt_len + new_tokens
  decode = transformer_decode_fn(config)

  def generate(params, prompts, rng):
    cache = KVCache.init(config, batch, max_length)
    state, _ = prefill(decode, params, cache, prompts,
                       jnp.full((batch,), prompt_len, jnp.int32), max_length)
    state = state.with_keys(row_keys(rng, jnp.arange(batch), 1))
    out = sample_steps(decode, params, state, Sampler(temperature=1.0),
                       max_new_tokens=new_tokens, eos_id=-1, delimiter=None,
                       max_steps=None)
    return out.tokens, out.lengths

  start = time.perf_counter()
  compiled = jax.jit(generate).lower(params, prompts, jax.random.PRNGKey(0)).compile()
  return compiled, time.perf_counter() - start


def run_ttcjax(compiled, params, prompts, rng, new_tokens: int) -> float:
  """One timed ttcjax generation (until the tokens are on the host); checks lengths."""
  start = time.perf_counter()
  out = jax.block_until_ready(compiled(params, prompts, rng))
  tokens, lengths = jax.device_get(out)
  elapsed = time.perf_counter() - start
  assert np.all(lengths == new_tokens), f"ttcjax generated {lengths}, not {new_tokens}"
  assert tokens.shape == (prompts.shape[0], new_tokens)
  return elapsed


def run_hf(hf_model, input_ids, new_tokens: int, cache: str, seed: int) -> float:
  """One timed `generate`; checks that every row got exactly `new_tokens` tokens."""
  torch.manual_seed(seed)
  kwargs = {"cache_implementation": "static"} if cache == "static" else {}
  with torch.inference_mode():
    start = time.perf_counter()
    out = hf_model.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
        temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, use_cache=True, pad_token_id=0, **kwargs)
    elapsed = time.perf_counter() - start
  assert out.shape == (input_ids.shape[0], input_ids.shape[1] + new_tokens), out.shape
  return elapsed


def _busy_cpu_s() -> float:
  """CPU-seconds used so far by all processes of the machine (Linux; else 0)."""
  try:
    with open("/proc/stat") as f:
      ticks = [int(x) for x in f.readline().split()[1:9]]
  except OSError:
    return 0.0
  return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def with_foreign_load(fn):
  """Runs fn(); returns (its result, share of the CPUs other processes used meanwhile).

  A share near 0 means the timing was not disturbed by anything else on the machine.
  """
  busy, own, start = _busy_cpu_s(), time.process_time(), time.perf_counter()
  result = fn()
  wall = time.perf_counter() - start
  foreign = (_busy_cpu_s() - busy) - (time.process_time() - own)
  return result, max(foreign, 0.0) / (wall * os.cpu_count())


def main(argv):
  del argv
  quick = _QUICK.value
  shape = QUICK_MODEL if quick else FULL_MODEL
  batches = [1, 4] if quick else [int(b) for b in _BATCHES.value]
  repeats = 2 if quick else _REPEATS.value
  new_tokens = 16 if quick else _NEW.value
  prompt_len = 16 if quick else _PROMPT.value
  torch.set_num_threads(os.cpu_count())
  device = jax.devices()[0]
  print(f"JAX {jax.__version__} on {jax.default_backend()} ({device}); transformers "
        f"{transformers.__version__} / torch {torch.__version__} on CPU with "
        f"{torch.get_num_threads()} threads. Load average at start: {os.getloadavg()}")
  if os.getloadavg()[0] > 0.5:
    print("WARNING: the machine was busy in the last minute (load average above); "
          "other processes skew these timings.")
  if jax.default_backend() != "cpu":
    print("NOTE: the HF column is CPU torch, the ttcjax column is "
          f"{jax.default_backend()}: not a same-hardware comparison.")

  with tempfile.TemporaryDirectory() as path:
    hf_model, config, params = build_models(shape, _SEED.value, path)
  num_params = sum(p.numel() for p in hf_model.parameters())
  assert num_params == config.num_params, (num_params, config.num_params)
  rng = np.random.default_rng(_SEED.value)
  diff, scale = check_logits(hf_model, config, params,
                             rng.integers(1, config.vocab_size, (1, prompt_len), np.int32))
  print(f"Model: {num_params:,} parameters; max |logit diff| ttcjax vs HF = {diff:.2e} "
        f"(max |logit| {scale:.2f}; JAX at highest matmul precision)")
  assert diff < 1e-3, f"ttcjax and HF logits differ by {diff}"

  matmul_size, copy_mb = (512 if quick else 2048), 256
  rates = {"device": measure_rates(device, matmul_size, copy_mb)}
  cpu = jax.devices("cpu")[0]
  rates["cpu"] = rates["device"] if device.platform == "cpu" else measure_rates(
      cpu, matmul_size, copy_mb)
  print(f"Device roofline: {rates['device'][0] / 1e9:.1f} GFLOP/s float32 matmul, "
        f"{rates['device'][1] / 1e9:.1f} GB/s copy")

  rows = []
  for batch in batches:
    prompts_np = rng.integers(1, config.vocab_size, (batch, prompt_len), np.int32)
    prompts = jnp.asarray(prompts_np)
    input_ids = torch.from_numpy(prompts_np).long()
    compiled, compile_s = compile_ttcjax(config, params, prompts, new_tokens)
    key = lambda i: jax.random.PRNGKey(_SEED.value * 1000 + i)
    run_ttcjax(compiled, params, prompts, key(999), new_tokens)  # warm-up
    caches = ["dynamic", "static"] if _HF_CACHE.value == "auto" else [_HF_CACHE.value]
    trial = {}
    for cache in caches:  # a warm-up, then one trial run each
      run_hf(hf_model, input_ids, new_tokens, cache, 999)
      trial[cache] = run_hf(hf_model, input_ids, new_tokens, cache, 998)
    hf_cache = min(trial, key=trial.get)
    ours, theirs, load_ours, load_hf = [], [], [], []
    for i in range(repeats):
      t, load = with_foreign_load(lambda: run_ttcjax(compiled, params, prompts, key(i), new_tokens))
      ours.append(t)
      load_ours.append(load)
      t, load = with_foreign_load(lambda: run_hf(hf_model, input_ids, new_tokens, hf_cache, i))
      theirs.append(t)
      load_hf.append(load)
    t_ours, t_hf = float(np.median(ours)), float(np.median(theirs))
    bound = lambda r: roofline_seconds(config, batch, prompt_len, new_tokens, *r)
    rows.append({
        "batch": batch, "ttcjax_tokens_per_s": batch * new_tokens / t_ours,
        "hf_tokens_per_s": batch * new_tokens / t_hf, "ratio": t_hf / t_ours,
        "ttcjax_roofline_frac": bound(rates["device"]) / t_ours,
        "hf_roofline_frac": bound(rates["cpu"]) / t_hf, "ttcjax_compile_s": compile_s,
        "ttcjax_times_s": ours, "hf_times_s": theirs, "hf_cache_implementation": hf_cache,
        "hf_cache_trial_s": trial, "ttcjax_foreign_cpu_frac": load_ours,
        "hf_foreign_cpu_frac": load_hf})
    print(f"batch {batch}: ttcjax {[round(t, 3) for t in ours]} s, HF ({hf_cache} cache) "
          f"{[round(t, 3) for t in theirs]} s; CPU share taken by other processes: "
          f"ttcjax {max(load_ours):.0%} max, HF {max(load_hf):.0%} max", flush=True)

  print(f"\n{new_tokens} new tokens after a {prompt_len}-token prompt, median of {repeats}; "
        f"HF on CPU torch. Load average at end: {os.getloadavg()}")
  header = ("batch", "ttcjax tok/s", "HF tok/s", "ratio", "ttcjax roofline %",
            "HF roofline %", "ttcjax compile s")
  print(" | ".join(header))
  for r in rows:
    print(" | ".join([f"{r['batch']:5d}", f"{r['ttcjax_tokens_per_s']:12.1f}",
                      f"{r['hf_tokens_per_s']:8.1f}", f"{r['ratio']:5.2f}",
                      f"{100 * r['ttcjax_roofline_frac']:17.1f}",
                      f"{100 * r['hf_roofline_frac']:13.1f}",
                      f"{r['ttcjax_compile_s']:16.2f}"]))
  # /proc/stat counts in 10 ms ticks: only runs of a second or more say anything.
  worst = max((max(r["ttcjax_foreign_cpu_frac"] + r["hf_foreign_cpu_frac"]) for r in rows
               if min(r["ttcjax_times_s"] + r["hf_times_s"]) >= 1.0), default=0.0)
  if worst > 0.05:
    print(f"WARNING: other processes took up to {worst:.0%} of the CPUs during timed runs; "
          "these numbers are disturbed. Rerun on an idle machine before publishing.")
  caches = sorted({r["hf_cache_implementation"] for r in rows})
  result = {
      "rows": rows, "params": num_params, "matmul_flops_per_s": rates["device"][0],
      "copy_bytes_per_s": rates["device"][1], "cpu_matmul_flops_per_s": rates["cpu"][0],
      "cpu_copy_bytes_per_s": rates["cpu"][1], "platform": jax.default_backend(),
      "device": str(device), "hf_device": "cpu",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "hf_cache_implementation": caches[0] if len(caches) == 1 else "per-row",
      "new_tokens": new_tokens, "prompt_len": prompt_len, "repeats": repeats,
      "logit_max_abs_diff": diff, "max_foreign_cpu_frac": worst, "model": shape, "quick": quick,
      "jax_version": jax.__version__, "torch_version": torch.__version__,
      "transformers_version": transformers.__version__, "cpu_count": os.cpu_count(),
      "ttcjax_source_sha256": source_digest()}
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
    print(f"Wrote {_JSON.value}")


if __name__ == "__main__":
  app.run(main)
