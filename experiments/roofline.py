"""Rooflines for the benchmarks: a device's measured matmul rate and copy bandwidth,
the vendors' peaks where the device is known, and lower bounds on a decode's time.

A roofline fraction is (the time the bound allows) / (the time measured): 1.0 means
at the bound. Measured rates are what this process reaches with XLA on the device
(a large matmul, an elementwise pass over a large array); the peaks are the spec
sheets' dense figures, which no program reaches exactly.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.compute import ModelCost

# device_kind prefix -> (HBM bytes/s, dense bfloat16 matmul FLOP/s), vendors' spec sheets.
SPEC_PEAKS = {
    "NVIDIA H200": (4.8e12, 989e12),
    "NVIDIA H100 80GB HBM3": (3.35e12, 989e12),
    "NVIDIA H100 PCIe": (2.0e12, 756e12),
    "NVIDIA A100-SXM4-80GB": (2.039e12, 312e12),
    "NVIDIA A100-SXM4-40GB": (1.555e12, 312e12),
    "TPU v4": (1.2e12, 275e12),
    "TPU v5 lite": (0.819e12, 197e12),
    "TPU v5p": (2.765e12, 459e12),
    "TPU v6 lite": (1.64e12, 918e12),
}


def spec_peaks(device) -> tuple[float, float] | None:
  """(bytes/s, FLOP/s) of the device's spec sheet, or None for one not in `SPEC_PEAKS`."""
  return next((v for k, v in SPEC_PEAKS.items() if device.device_kind.startswith(k)), None)


def median_time(fn, runs: int) -> float:
  """Median seconds of `runs` calls of fn() after one warm-up call."""
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def host_copy_bandwidth(copy_mb: int) -> float:
  """Host memory copy rate, bytes read + written per second (numpy, median of 5)."""
  src = np.ones(copy_mb * 2 ** 20 // 4, np.float32)
  dst = np.empty_like(src)
  return 2 * src.nbytes / median_time(lambda: np.copyto(dst, src), 5)


def measure_rates(device, matmul_size: int, copy_mb: int,
                  dtype=jnp.float32) -> tuple[float, float]:
  """(matmul FLOP/s in `dtype`, copy bytes/s read+written) of a JAX device."""
  x = jax.device_put(jnp.ones((matmul_size, matmul_size), dtype), device)
  dot = jax.jit(jnp.dot)
  flops = 2 * matmul_size ** 3 / median_time(lambda: dot(x, x).block_until_ready(), 7)
  n = copy_mb * 2 ** 20 // 4
  y = jax.device_put(jnp.ones((n,), jnp.float32), device)
  add = jax.jit(lambda v: v + 1.0)
  bandwidth = 2 * n * 4 / median_time(lambda: add(y).block_until_ready(), 7)
  if device.platform == "cpu":  # numpy's copy is often faster than XLA's on CPU
    bandwidth = max(bandwidth, host_copy_bandwidth(copy_mb))
  return flops, bandwidth


def kv_bytes(config, rows: int, length: int) -> int:
  """Bytes of the KV cache of `rows` rows at `length` positions."""
  item = np.dtype(config.jnp_dtype).itemsize
  return 2 * config.num_layers * rows * length * config.num_kv_heads * config.head_dim * item


def roofline_seconds(config, batch: int, prompt_len: int, new_tokens: int,
                     flops_per_s: float, bytes_per_s: float) -> float:
  """Lower bound on a generation's time (prefill of `prompt_len`, then one step per
  later token): the sum over forwards of max(compute, memory), where a forward reads
  the matmul weights once and the KV cache at its current length; FLOPs as
  `ttcjax.compute.ModelCost` counts them."""
  cost = ModelCost.of_policy(config)
  weight_bytes = (cost.body_flops + cost.head_flops) / 2 * np.dtype(config.jnp_dtype).itemsize
  flops = batch * (prompt_len * cost.body_flops + cost.head_flops
                   + cost.attention_flops * prompt_len * (prompt_len + 1) / 2)
  total = max(flops / flops_per_s,
              (weight_bytes + kv_bytes(config, batch, prompt_len)) / bytes_per_s)
  for pos in range(prompt_len, prompt_len + new_tokens - 1):
    flops = batch * (cost.body_flops + cost.head_flops + cost.attention_flops * (pos + 1))
    total += max(flops / flops_per_s,
                 (weight_bytes + kv_bytes(config, batch, pos + 1)) / bytes_per_s)
  return total


def source_digest() -> str:
  """sha256 of ttcjax's Python sources: which library version was timed."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(root, "ttcjax", "**", "*.py"), recursive=True)):
    with open(path, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()[:16]
