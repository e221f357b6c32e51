"""Softmax attention kernels, chosen by backend.

The transformer folds the G query heads that share a key head into the query axis,
so every kernel here takes q [B, Hkv, Q, D] (Q = G x chunk), keys and values
[B, Hkv, C, D] and a boolean mask `allowed` [B, 1, Q, C] (True: the slot is read).

Implementations (`TransformerConfig.attention`):
* "reference": two einsums and a float32 softmax, compiled by XLA. The CPU default:
  the archived testbed sweeps were searched with it, and stay reproducible bit for bit.
* "xla": `jax.nn.dot_product_attention` with XLA's implementation (the TPU default,
  where XLA fuses it).
* "cudnn": `jax.nn.dot_product_attention` with cuDNN's fused flash attention (the GPU
  default). cuDNN accepts only some shapes and dtypes (bfloat16 or float16, head
  widths up to 128); "auto" falls back to "xla" where it refuses, an explicit
  "cudnn" raises.
* "auto": by `jax.default_backend()`, as above.

With a shared prompt (`attend_shared`) each block is attended separately and the two
are joined through their log-sum-exps (the residual the fused kernels return), as
flash attention joins its tiles; the reference joins the blocks' maxima and sums.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn")
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)  # finite: a fully masked row stays NaN-free
_BY_BACKEND = {"gpu": "cudnn", "cuda": "cudnn", "rocm": "xla", "tpu": "xla"}


def check_implementation(name: str) -> None:
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"attention must be one of {IMPLEMENTATIONS}, got {name!r}.")


def resolve(name: str, backend: str | None = None) -> str:
  """The implementation `name` runs as on `backend` (default: JAX's default backend)."""
  check_implementation(name)
  if name != "auto":
    return name
  return _BY_BACKEND.get(backend or jax.default_backend(), "reference")


def _group(x, problems):
  """[R, H, Q, X] -> [P, H, n * Q, X]: a problem's n = R / P rows as one block of queries."""
  rows, heads, queries = x.shape[:3]
  n = rows // problems
  return x.reshape(problems, n, heads, queries, -1).transpose(0, 2, 1, 3, 4).reshape(
      problems, heads, n * queries, -1)


def _ungroup(x, rows):
  """The inverse of `_group`: [P, H, n * Q, X] -> [R, H, Q, X]."""
  problems, heads = x.shape[:2]
  n = rows // problems
  queries = x.shape[2] // n
  return x.reshape(problems, heads, n, queries, -1).transpose(0, 2, 1, 3, 4).reshape(
      rows, heads, queries, -1)


def _reference(q, keys, values, allowed, dtype):
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, keys.astype(q.dtype),
                      preferred_element_type=jnp.float32) / np.sqrt(q.shape[-1])
  scores = jnp.where(allowed, scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  return jnp.einsum("bhqk,bhkd->bhqd", probs, values.astype(dtype))


def _reference_shared(q, prefix_keys, prefix_values, prefix_allowed, keys, values, allowed,
                      dtype):
  rows, problems, scale = q.shape[0], prefix_keys.shape[0], np.sqrt(q.shape[-1])
  group, ungroup = functools.partial(_group, problems=problems), functools.partial(
      _ungroup, rows=rows)
  prefix_scores = jnp.einsum("bhqd,bhkd->bhqk", group(q), prefix_keys.astype(q.dtype),
                             preferred_element_type=jnp.float32) / scale
  prefix_scores = jnp.where(group(prefix_allowed), prefix_scores, _MASK_VALUE)
  own_scores = jnp.einsum("bhqd,bhkd->bhqk", q, keys.astype(q.dtype),
                          preferred_element_type=jnp.float32) / scale
  own_scores = jnp.where(allowed, own_scores, _MASK_VALUE)
  top = jnp.maximum(ungroup(jnp.max(prefix_scores, axis=-1, keepdims=True)),
                    jnp.max(own_scores, axis=-1, keepdims=True))  # [R, Hkv, Q, 1]
  # Unnormalised weights go into the matrix multiplies and the [R, Hkv, Q, D] result is
  # divided once: no normalised copy of the [.., Q, slots] weights is ever held.
  prefix_weights = jnp.exp(prefix_scores - group(top))
  own_weights = jnp.exp(own_scores - top)
  total = (ungroup(jnp.sum(prefix_weights, axis=-1, keepdims=True))
           + jnp.sum(own_weights, axis=-1, keepdims=True))
  out = (ungroup(jnp.einsum("bhqk,bhkd->bhqd", prefix_weights.astype(dtype),
                            prefix_values.astype(dtype), preferred_element_type=jnp.float32))
         + jnp.einsum("bhqk,bhkd->bhqd", own_weights.astype(dtype), values.astype(dtype),
                      preferred_element_type=jnp.float32))
  return (out / total).astype(dtype)


@functools.cache
def _warn_fallback(reason: str) -> None:
  logging.warning("cuDNN attention refused these shapes (%s); using XLA's.", reason)


def _fused(q, keys, values, allowed, dtype, implementation, auto):
  """(out [B, Hkv, Q, D] in `dtype`, log-sum-exp [B, Hkv, Q]) of one block; the
  log-sum-exp is computed in float32 but returned rounded to `dtype` by JAX.

  `jax.nn.dot_product_attention` takes [batch, length, heads, width]: each key head is
  one head, and its G folded query heads are queries of it."""
  to_bthd = lambda x: x.transpose(0, 2, 1, 3)
  args = (to_bthd(q.astype(dtype)), to_bthd(keys.astype(dtype)), to_bthd(values.astype(dtype)))
  try:
    out, lse = jax.nn.dot_product_attention(*args, mask=allowed, implementation=implementation,
                                            return_residual=True)
  except (ValueError, NotImplementedError, RuntimeError) as error:
    if not (auto and implementation == "cudnn"):
      raise ValueError(f"attention={implementation!r} cannot run these shapes "
                       f"(q {q.shape} {dtype}, keys {keys.shape}): {error}. Use "
                       "attention='auto' or 'xla'.") from error
    _warn_fallback(str(error).splitlines()[0][:200] if str(error) else type(error).__name__)
    out, lse = jax.nn.dot_product_attention(*args, mask=allowed, implementation="xla",
                                            return_residual=True)
  return to_bthd(out).astype(dtype), lse.transpose(0, 2, 1).astype(jnp.float32)


def attend(q, keys, values, allowed, dtype, implementation="reference"):
  """Softmax attention [B, Hkv, Q, D] over the key slots `allowed` [B, 1, Q, C] marks."""
  name = resolve(implementation)
  if name == "reference":
    return _reference(q, keys, values, allowed, dtype)
  return _fused(q, keys, values, allowed, dtype, name, implementation == "auto")[0]


def attend_shared(q, prefix_keys, prefix_values, prefix_allowed, keys, values, allowed, dtype,
                  implementation="reference"):
  """Attention [R, Hkv, Q, D] over a shared prompt and each row's own slots.

  Args:
    q: [R, Hkv, Q, D] queries of R = B * n rows (rows b * n + j read prompt b).
    prefix_keys, prefix_values: [B, Hkv, Cp, D] the prompts.
    prefix_allowed: [R, 1, Q, Cp] which prompt slots each query may read.
    keys, values: [R, Hkv, Ck, D] the rows' own slots; allowed: [R, 1, Q, Ck].
    dtype: the compute dtype of the result.
    implementation: one of `IMPLEMENTATIONS`.
  """
  name = resolve(implementation)
  # The fused kernels return their log-sum-exp in the compute dtype; in bfloat16 its
  # rounding (0.125 at 20) would move the weights of the two blocks by several percent,
  # so below float32 the join is the reference's, which keeps its statistics in float32.
  if name == "reference" or jnp.dtype(dtype).itemsize < 4:
    return _reference_shared(q, prefix_keys, prefix_values, prefix_allowed, keys, values,
                             allowed, dtype)
  rows, problems = q.shape[0], prefix_keys.shape[0]
  auto = implementation == "auto"
  # The prompt block with a problem's rows as its queries: the prompt is read once.
  prefix_out, prefix_lse = _fused(_group(q, problems), prefix_keys, prefix_values,
                                  _group(prefix_allowed, problems), dtype, name, auto)
  prefix_out = _ungroup(prefix_out, rows)
  prefix_lse = _ungroup(prefix_lse[..., None], rows)  # [R, Hkv, Q, 1]
  own_out, own_lse = _fused(q, keys, values, allowed, dtype, name, auto)
  own_lse = own_lse[..., None]
  top = jnp.maximum(prefix_lse, own_lse)
  prefix_weight, own_weight = jnp.exp(prefix_lse - top), jnp.exp(own_lse - top)
  out = (prefix_weight * prefix_out.astype(jnp.float32)
         + own_weight * own_out.astype(jnp.float32)) / (prefix_weight + own_weight)
  return out.astype(dtype)
