"""Rows kept in pages (`PagedRows`): forks share pages, a write into a shared page
copies it first and never reaches the sibling, pages are recounted after forks and
freed when no row holds them, slices of rows allocate from the whole pool, and a pool
that runs out says so and names the setting to raise.

(Paged rows giving the dense logits through prefill, decode, forks of forks and
rewinds is tested in test_shared_cache.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models import paged
from ttcjax.models.cache import SharedPrefixCache, map_rows, repeat_rows
from ttcjax.models.config import get_config
from ttcjax.models.transformer import forward, init_params
from jax_helpers import random_tree

CONFIG = get_config("tiny")
WIDTH, OWN, PAGE = 4, 12, 4


@pytest.fixture(scope="module")
def params():
  return random_tree(lambda k: init_params(CONFIG, k), 3, 0.2)


def _write(params, cache, tokens, num_new):
  return jax.jit(lambda p, c, t, n: forward(p, CONFIG, t, c, n, logits="last"))(
      params, cache, jnp.asarray(tokens, jnp.int32), jnp.asarray(num_new, jnp.int32))


def _prefilled(params, rows_per_problem=2, num_pages=None):
  cache = SharedPrefixCache.init(CONFIG, 2, WIDTH, OWN, page_size=PAGE, num_pages=num_pages)
  prompts = np.arange(8, dtype=np.int32).reshape(2, WIDTH) % CONFIG.vocab_size
  cache = _write(params, cache, prompts, [4, 3]).cache
  return repeat_rows(cache, rows_per_problem)


def _fork(cache, parents):
  return map_rows(lambda x: jnp.take(x, jnp.asarray(parents), axis=0), cache)


def test_a_fork_shares_pages_and_a_write_copies_the_shared_one(params):
  cache = _prefilled(params)
  # Every row writes 5 tokens: one full page and one partial page each.
  cache = _write(params, cache, np.full((4, 5), 7), [5, 5, 5, 5]).cache
  rows = cache.rows
  assert rows.held.tolist() == [2, 2, 2, 2] and int(rows.refs.sum()) == 8
  forked = _fork(cache, [1, 1, 2, 2]).rows  # rows 0 and 1 continue row 1, 2 and 3 row 2
  np.testing.assert_array_equal(forked.table[0, :2], forked.table[1, :2])
  assert forked.refs[forked.table[0, 0]] == 2 and forked.refs[rows.table[0, 0]] == 0
  assert int((forked.refs > 0).sum()) == 4  # row 0's and row 3's old pages are free
  before = np.asarray(forked.keys[0])
  # Row 0 alone writes: the shared partial page is copied for it, its sibling's stays.
  out = _write(params, _fork(cache, [1, 1, 2, 2]), np.full((4, 1), 9), [1, 0, 0, 0])
  after = out.cache.rows
  sibling_page = int(after.table[1, 1])
  assert int(after.table[0, 1]) != sibling_page and int(after.table[0, 0]) == int(after.table[1, 0])
  np.testing.assert_array_equal(np.asarray(after.keys[0])[sibling_page], before[sibling_page])
  # The copy holds the sibling's slot 4 (position 5 of the row) and the new token at slot 5.
  mine = np.asarray(after.keys[0])[int(after.table[0, 1])]
  np.testing.assert_array_equal(mine[:, 0], before[sibling_page][:, 0])
  assert not np.allclose(mine[:, 1], before[sibling_page][:, 1])
  assert after.refs[sibling_page] == 1 and int(after.refs.sum()) == 8
  assert not bool(after.overflow)


def test_slices_allocate_from_the_whole_pool(params):
  """A slice of the rows (as PRM passes run) keeps the whole pool's counts, so pages
  it takes are not handed to the next slice; putting slices back recounts them."""
  cache = _prefilled(params)
  view = lambda x: x.reshape((2, 2) + x.shape[1:])
  take = lambda x, i: view(x)[:, i]
  put = lambda full, part, i: view(full).at[:, i].set(part).reshape(full.shape)
  for i in range(2):
    part = map_rows(lambda x: take(x, i), cache)
    assert part.rows.batch_size == 2 and part.rows.refs.shape == cache.rows.refs.shape
    part = _write(params, part, np.full((2, 6), 3 + i), [6, 6]).cache
    cache = map_rows(lambda f, p: put(f, p, i), cache, part)
  rows = cache.rows
  used = np.asarray(rows.table[:, :2]).reshape(-1)
  assert len(set(used.tolist())) == 8  # no page went to two rows
  np.testing.assert_array_equal(rows.refs, paged.count_refs(rows.table, rows.held,
                                                             rows.num_pages))


def test_running_out_of_pages_is_reported_and_corrupts_nothing(params):
  cache = _prefilled(params, num_pages=5)  # 4 rows need 8 pages for 5 tokens each
  out = _write(params, cache, np.full((4, 5), 7), [5, 5, 5, 5]).cache
  assert bool(out.rows.overflow)
  with pytest.raises(ValueError, match="num_pages"):
    paged.check_pages(out)
  # No page was handed out twice.
  live = np.asarray(out.rows.table)[np.arange(3)[None, :] < np.asarray(out.rows.held)[:, None]]
  assert len(live) == len(set(live.tolist())) <= 5
  paged.check_pages(_write(params, _prefilled(params), np.full((4, 5), 7), [5] * 4).cache)


def test_the_default_pool_never_runs_out():
  """Rows that fork onto one parent and all write into its partial page at once."""
  rows = paged.PagedRows.empty(1, 1, 2, jnp.float32, 4, 8, page_size=4)
  assert rows.num_pages == 4 * 3 and rows.capacity == 8
  state = rows
  for step in range(8):
    state, copy_from, copy_to = state.reserve(jnp.ones((4,), jnp.int32), 1)
    state = state.replace(lengths=state.lengths + 1)
    state = state.map_rows(lambda x: x[jnp.zeros((4,), jnp.int32)])  # all continue row 0
    assert not bool(state.overflow), step


def test_bad_page_settings_are_refused():
  with pytest.raises(ValueError, match="page_size"):
    SharedPrefixCache.init(CONFIG, 2, WIDTH, OWN, page_size=3)
  with pytest.raises(ValueError, match="num_pages"):
    SharedPrefixCache.init(CONFIG, 2, WIDTH, OWN, page_size=4, num_pages=0)
