"""The attention kernels chosen by backend give the reference's results.

On CPU the fused path runs through `jax.nn.dot_product_attention`'s XLA implementation
(what "auto" runs on TPU, and what it falls back to where cuDNN refuses a shape); the
cuDNN kernel itself needs an NVIDIA GPU and is not run here. Kernels are compared on random blocks with masked slots and a
fully masked query, then whole models in every calling mode: no cache, a dense cache
(prefill, decode, a fork) and a shared prompt.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models import attention
from ttcjax.models.cache import KVCache, SharedPrefixCache, map_rows, repeat_rows
from ttcjax.models.config import get_config
from ttcjax.models.transformer import forward, init_params
from jax_helpers import host_jit, random_tree

# float32: summation order only; bfloat16: the kernels round the softmax weights at
# different points (one bfloat16 ulp of values near 1 is 2^-8).
TOLERANCE = {"float32": 2e-5, "bfloat16": 3e-2}


def _blocks(seed, rows, kv_heads, queries, slots, dim, dtype):
  rng = np.random.default_rng(seed)
  draw = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  allowed = rng.random((rows, 1, queries, slots)) < 0.6
  allowed[0, 0, 1] = False  # one query reads nothing (a padded row)
  return (draw(rows, kv_heads, queries, dim), draw(rows, kv_heads, slots, dim),
          draw(rows, kv_heads, slots, dim), jnp.asarray(allowed))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_attention_equals_the_reference(dtype):
  q, keys, values, allowed = _blocks(0, 3, 2, 5, 11, 8, dtype)
  reference = attention.attend(q, keys, values, allowed, dtype, "reference")
  fused = attention.attend(q, keys, values, allowed, dtype, "xla")
  assert fused.shape == reference.shape == q.shape and fused.dtype == jnp.dtype(dtype)
  np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(reference, np.float32),
                             atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_shared_prompt_attention_equals_the_reference(dtype):
  """Two problems x 3 rows: the prompt block attended once per problem, joined to each
  row's own block through the log-sum-exps."""
  q, keys, values, allowed = _blocks(1, 6, 2, 4, 9, 8, dtype)
  _, prefix_keys, prefix_values, _ = _blocks(2, 2, 2, 4, 7, 8, dtype)
  prefix_allowed = jnp.asarray(np.random.default_rng(3).random((6, 1, 4, 7)) < 0.7)
  prefix_allowed = prefix_allowed.at[:, :, :, 0].set(True)  # every query reads its prompt
  args = (q, prefix_keys, prefix_values, prefix_allowed, keys, values, allowed, dtype)
  reference = attention.attend_shared(*args, "reference")
  fused = attention.attend_shared(*args, "xla")
  np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(reference, np.float32),
                             atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_shared_join_holds_at_large_attention_logits(dtype):
  """Large scores (log-sum-exps near 40, where bfloat16 rounds by up to 0.125) over a
  prompt block and an own block of nearly the same keys, so the two blocks weigh about
  equally: the join must weigh them as one softmax over both (a join through
  bfloat16-rounded log-sum-exps is off by 0.75 here)."""
  rng = np.random.default_rng(0)
  prefix_keys = rng.standard_normal((2, 2, 6, 16)) * 4
  keys = np.repeat(prefix_keys, 3, axis=0) + rng.standard_normal((6, 2, 6, 16)) * 0.05
  cast = lambda x: jnp.asarray(x, dtype)
  everything = jnp.ones((6, 1, 3, 6), bool)
  args = (cast(rng.standard_normal((6, 2, 3, 16)) * 4), cast(prefix_keys),
          cast(rng.standard_normal((2, 2, 6, 16)) * 8), everything, cast(keys),
          cast(rng.standard_normal((6, 2, 6, 16)) * 8), everything, dtype)
  reference = attention.attend_shared(*args, "reference")
  fused = attention.attend_shared(*args, "xla")
  np.testing.assert_allclose(np.asarray(fused, np.float32), np.asarray(reference, np.float32),
                             atol=8 * TOLERANCE[dtype])  # values of scale 8


def test_auto_chooses_by_backend():
  assert attention.resolve("auto", "cpu") == "reference"
  assert attention.resolve("auto", "gpu") == "cudnn"
  assert attention.resolve("auto", "tpu") == "xla"
  assert attention.resolve("xla", "gpu") == "xla"
  if jax.default_backend() == "cpu":
    assert attention.resolve("auto") == "reference"


def test_bad_implementations_are_refused():
  with pytest.raises(ValueError, match="attention must be one of"):
    get_config("tiny", attention="flash")
  q, keys, values, allowed = _blocks(0, 1, 1, 2, 3, 8, "float32")
  with pytest.raises(ValueError, match="attention='cudnn' cannot run these shapes"):
    attention.attend(q, keys, values, allowed, "float32", "cudnn")  # no GPU here


def test_auto_falls_back_to_xla_where_cudnn_refuses(monkeypatch):
  """What "auto" does on a GPU for shapes cuDNN does not take (here: a CPU)."""
  q, keys, values, allowed = _blocks(4, 2, 2, 3, 5, 8, "float32")
  expected = attention.attend(q, keys, values, allowed, "float32", "xla")
  monkeypatch.setattr(attention, "_BY_BACKEND", {"cpu": "cudnn"})
  fell_back = attention.attend(q, keys, values, allowed, "float32", "auto")
  np.testing.assert_array_equal(np.asarray(fell_back), np.asarray(expected))


@host_jit(static_argnames=("config", "shared"))
def _decode(params, config, prompts, prompt_lengths, steps, shared):
  """Prefill two prompts, 3 rows each, two decode steps with a fork between.

  Returns the logits of both steps [2, 6, V]."""
  if shared:
    cache = SharedPrefixCache.init(config, 2, prompts.shape[1], 4)
  else:
    cache = KVCache.init(config, 2, prompts.shape[1] + 4)
  cache = forward(params, config, prompts, cache, prompt_lengths, logits="none").cache
  cache = repeat_rows(cache, 3)
  ones = jnp.ones((6,), jnp.int32)
  first, cache = forward(params, config, steps[:, :1], cache, ones, logits="last")[::2]
  cache = map_rows(lambda x: jnp.take(x, jnp.asarray([1, 1, 0, 5, 3, 3]), axis=0), cache)
  second = forward(params, config, steps[:, 1:], cache, ones, logits="last").logits
  return jnp.stack([first, second])


@pytest.mark.parametrize("preset,dtype", [("tiny-qwen", "float32"), ("tiny-qwen", "bfloat16"),
                                          ("tiny", "float32")])
def test_models_give_the_reference_logits_with_fused_attention(preset, dtype):
  """Training / scoring (no cache), dense-cache and shared-prompt decoding."""
  reference = get_config(preset, param_dtype=dtype, dtype=dtype, attention="reference")
  fused = reference.replace(attention="xla")
  params = random_tree(lambda k: init_params(reference, k), 5, 0.2)
  rng = np.random.default_rng(6)
  tokens = rng.integers(0, reference.vocab_size, (2, 8)).astype(np.int32)
  lengths = jnp.asarray([8, 3], jnp.int32)
  steps = rng.integers(0, reference.vocab_size, (6, 2)).astype(np.int32)
  tolerance = TOLERANCE[dtype] * 10  # logits: the error through two layers and the head
  full = host_jit(forward, static_argnames=("config", "logits"))
  np.testing.assert_allclose(full(params, fused, tokens, num_new=lengths).logits,
                             full(params, reference, tokens, num_new=lengths).logits,
                             atol=tolerance)
  for shared in (False, True):
    np.testing.assert_allclose(_decode(params, fused, tokens, lengths, steps, shared),
                               _decode(params, reference, tokens, lengths, steps, shared),
                               atol=tolerance)
