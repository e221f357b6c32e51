"""A prompt stored once per problem (`SharedPrefixCache`) gives the logits of the dense
cache that repeats it per row: prefill, forced chunks, decode, forks and forks of
forks, rewinds; a forked row's writes never reach its sibling; bad input is refused.
The same holds for rows kept in pages (`PagedRows`), where forks share pages and a
write into a shared page copies it first (pages of 1 and 4 slots: every write then
crosses or splits pages).

Weights are redrawn with std 0.2 (see test_transformer): a wrong slot, position or
mask would move the logits far beyond float32 noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models.cache import KVCache, SharedPrefixCache, map_rows, repeat_rows
from ttcjax.models.config import get_config
from ttcjax.models.transformer import forward, init_params
from jax_helpers import host_jit, random_tree

CONFIGS = {
    "tiny": get_config("tiny"),
    "tiny-qwen": get_config("tiny-qwen"),  # grouped-query attention, q/k/v bias
    "sliding": get_config("tiny", sliding_window=3),
    "tiny-qwen-bf16": get_config("tiny-qwen", param_dtype="bfloat16", dtype="bfloat16"),
}
PROMPT_LENGTHS = np.array([7, 3], np.int32)  # two problems, padded to width 8
WIDTH, COPIES, OWN = 8, 3, 12
CHUNK = np.array([4, 0, 2, 3, 1, 4], np.int32)  # forced tokens per row (one takes none)
PARENTS = np.array([2, 2, 0, 5, 3, 3], np.int32)  # forks within each problem
GRANDPARENTS = np.array([1, 0, 0, 4, 4, 5], np.int32)


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
  config = CONFIGS[request.param]
  params = random_tree(lambda k: init_params(config, k), 3, 0.2)
  return request.param, config, params


def _tokens(seed, shape, vocab):
  return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


LAYOUTS = {"dense": None, "shared": 0, "paged1": 1, "paged4": 4}  # -> page size


def _empty_cache(config, layout, problems=len(PROMPT_LENGTHS), num_pages=None):
  if LAYOUTS[layout] is None:
    return KVCache.init(config, problems, WIDTH + OWN)
  return SharedPrefixCache.init(config, problems, WIDTH, OWN, page_size=LAYOUTS[layout],
                                num_pages=num_pages)


@host_jit(static_argnames=("config", "layout"))
def _run(params, config, prompts, chunk, steps, layout):
  """Prefill, share with 3 rows each, a forced chunk, a decode step, a fork, a
  decode step, a fork of the fork, a rewind of row 0 and a last step.

  Returns: (logits of each call [R, V] stacked, the final cache's lengths [R]).
  """
  rows = len(PROMPT_LENGTHS) * COPIES
  cache = _empty_cache(config, layout)
  cache = forward(params, config, prompts, cache, jnp.asarray(PROMPT_LENGTHS),
                  logits="none").cache
  cache = repeat_rows(cache, COPIES)
  out = []
  logits, cache = forward(params, config, chunk, cache, jnp.asarray(CHUNK), logits="last")[::2]
  out.append(logits)
  for i, parents in enumerate((PARENTS, GRANDPARENTS, None)):
    logits, cache = forward(params, config, steps[:, i:i + 1], cache,
                            jnp.ones((rows,), jnp.int32), logits="last")[::2]
    out.append(logits)
    if parents is not None:
      cache = map_rows(lambda x: jnp.take(x, jnp.asarray(parents), axis=0), cache)
  # Rewind row 0 to its prompt plus one token and write two new ones.
  lengths = cache.lengths
  cache = cache.truncate(lengths.at[0].set(PROMPT_LENGTHS[0] + 1))
  logits, cache = forward(params, config, steps[:, 3:5], cache,
                          jnp.asarray([2] + [0] * (rows - 1), jnp.int32), logits="last")[::2]
  out.append(logits)
  return jnp.stack(out), cache.lengths


@pytest.mark.parametrize("layout", ["shared", "paged1", "paged4"])
def test_shared_prompt_gives_the_dense_logits(model, layout):
  name, config, params = model
  prompts = _tokens(1, (2, WIDTH), config.vocab_size)
  chunk = _tokens(2, (6, 4), config.vocab_size)
  steps = _tokens(3, (6, 5), config.vocab_size)
  dense, dense_lengths = _run(params, config, prompts, chunk, steps, layout="dense")
  shared, shared_lengths = _run(params, config, prompts, chunk, steps, layout=layout)
  np.testing.assert_array_equal(shared_lengths, dense_lengths)
  if config.dtype == "bfloat16":
    # Both round differently: each is compared with the float32 model's logits, and
    # the shared cache may be off by no more than the dense one (plus a little).
    exact_config = config.replace(param_dtype="float32", dtype="float32")
    exact_params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    exact, _ = _run(exact_params, exact_config, prompts, chunk, steps, layout="dense")
    dense_error = np.abs(dense.astype(np.float32) - exact).max()
    shared_error = np.abs(shared.astype(np.float32) - exact).max()
    assert shared_error <= 1.5 * dense_error + 1e-2, (shared_error, dense_error)
  else:
    np.testing.assert_allclose(shared, dense, atol=1e-5, rtol=1e-5)
  # Not vacuous: each problem's rows see different continuations.
  assert not np.allclose(dense[0, 0], dense[0, 3], atol=1e-3)


@pytest.mark.parametrize("layout", ["shared", "paged4"])
def test_a_forked_rows_writes_never_reach_its_sibling(model, layout):
  _, config, params = model
  prompts = _tokens(4, (2, WIDTH), config.vocab_size)

  @host_jit
  def run(params, prompts, token_a, token_b):
    cache = _empty_cache(config, layout)
    cache = forward(params, config, prompts, cache, jnp.asarray(PROMPT_LENGTHS),
                    logits="none").cache
    cache = repeat_rows(cache, 2)
    cache = map_rows(lambda x: jnp.take(x, jnp.asarray([0, 0, 2, 2]), axis=0), cache)
    # Row 1 writes a token; its sibling row 0 then reads its own slots only.
    writes = jnp.asarray([0, 1, 0, 0], jnp.int32)
    cache = forward(params, config, token_a, cache, writes, logits="none").cache
    return forward(params, config, token_b, cache, jnp.ones((4,), jnp.int32), logits="last")

  token_a = _tokens(5, (4, 1), config.vocab_size)
  token_b = np.repeat(_tokens(6, (1, 1), config.vocab_size), 4, axis=0)
  out = run(params, prompts, token_a, token_b)
  np.testing.assert_array_equal(out.cache.rows.lengths, [1, 2, 1, 1])
  # Rows 0, 2 (untouched) read the same as a fresh copy; row 1 differs.
  full = forward(params, config, jnp.concatenate(
      [jnp.asarray(prompts[:1, :7]), jnp.asarray(token_b[:1])], axis=1)).logits[:, -1]
  tol = 3e-2 if config.dtype == "bfloat16" else 1e-5
  np.testing.assert_allclose(np.asarray(out.logits[0], np.float32),
                             np.asarray(full[0], np.float32), atol=tol, rtol=tol)
  assert not np.allclose(np.asarray(out.logits[1], np.float32),
                         np.asarray(out.logits[0], np.float32), atol=1e-3)


def test_shared_cache_holds_the_prompt_once():
  config = CONFIGS["tiny"]
  cache = SharedPrefixCache.init(config, 2, WIDTH, OWN)
  shared = jax.eval_shape(lambda c: repeat_rows(c, 16), cache)
  dense = KVCache.init(config, 32, WIDTH + OWN)
  assert shared.prefix.keys[0].shape[0] == 2 and shared.rows.keys[0].shape[:3] == (32, 2, OWN)
  per_slot = 2 * config.num_layers * config.num_kv_heads * config.head_dim * 4
  assert dense.num_bytes == 32 * (WIDTH + OWN) * per_slot
  nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shared)
               if x.ndim == 4)
  assert nbytes == (2 * WIDTH + 32 * OWN) * per_slot


def test_shared_cache_refuses_bad_input():
  config = CONFIGS["tiny"]
  with pytest.raises(ValueError, match="row capacity"):
    SharedPrefixCache.init(config, 2, WIDTH, 0)
  cache = repeat_rows(SharedPrefixCache.init(config, 2, WIDTH, OWN), 2)
  with pytest.raises(ValueError, match="already shared"):
    repeat_rows(cache, 2)
  params = init_params(config, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="capacity"):
    forward(params, config, jnp.zeros((4, OWN + 1), jnp.int32), cache)
