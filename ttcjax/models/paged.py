"""Rows whose cache slots live in a shared pool of pages, addressed by a page table.

A beam search forks rows between rounds: a child continues its parent's cache. With
dense rows (`KVCache`) a fork gathers every row's slots into new buffers while the old
ones are still live, so the caches are held twice while it runs (XLA's analysis of
the real-size search shows it). `PagedRows` keeps the slots in a pool of pages of P
slots each, per layer, and gives each row a table of the pages it reads: row r's slot
s is slot `s % P` of page `table[r, s // P]`. A fork then copies table entries, not
caches: parent and children read the same pages. Pages are shared read-only; before a
row writes into a page another row also reads (the partly filled last page its
parent left, or a page it rewound into), the page is copied for it (copy on write),
and a row that writes past its last page takes a free one. `refs` counts the table
entries that hold each page; a page no table holds is free.

All of this runs inside jit with static shapes: `reserve` is called by the
transformer before it writes a chunk (it allocates and copies for every row at once),
the pool has a static number of pages, and running out sets a sticky `overflow` flag
(the writes that found no page are dropped, so no row's slots are overwritten by
another's); `check_pages` raises on the host, naming the setting to raise.
`PagedRows.init` sizes the pool so that it cannot run out unless told to hold fewer
pages: every row's full capacity plus one page a row for copies on write.

Attention reads a row's pages through its table: the pages of the attention view are
gathered into a dense [R, Hkv, view, D] block, one layer at a time, so the transient
is one layer's view, not a second copy of the caches (a paged-attention kernel would
read pages directly; XLA's gather is what every backend runs here).

Shapes: R rows, Np pages in the pool, P slots a page, T = pages a row's table holds.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.config import TransformerConfig

# Attention views are multiples of 16 slots (`transformer.attention_views`), so a view
# is whole pages when the page size divides 16.
PAGE_SIZES = (1, 2, 4, 8, 16)


def table_pages(capacity: int, page_size: int) -> int:
  """T, the pages a row's table holds for `capacity` own slots: whole pages, and
  beyond 16 slots whole 16-slot attention views."""
  slots = -(-capacity // page_size) * page_size
  if slots > 16:
    slots = -(-slots // 16) * 16
  return slots // page_size


def pool_slots_per_row(capacity: int, page_size: int) -> int:
  """Slots the default pool (which never runs out) holds per row: (T + 1) pages."""
  return (table_pages(capacity, page_size) + 1) * page_size


def touched_pages(chunk: int, page_size: int) -> int:
  """The most pages a chunk of `chunk` tokens written from any slot can touch."""
  return (chunk + page_size - 2) // page_size + 1


@flax.struct.dataclass
class PagedRows:
  """R rows of up to T * P own slots each, stored in a pool of Np pages per layer.

  Attributes:
    keys, values: num_layers arrays [Np, Hkv, P, D].
    table: [R, T] int32 page of each of a row's page-sized slot ranges; entries at
      or past `held` mean nothing.
    held: [R] int32 table entries each row owns or shares (never decreases).
    lengths: [R] int32 valid slots per row (== position of its next own token).
    refs: [Np] int32 how many table entries (below `held`) hold each page.
    overflow: [] bool, a write found no free page (sticky; see `check_pages`).
    page_size: static P.
    pool_rows: static, the rows the pool was made for (a slice of them has fewer).
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  table: jax.Array
  held: jax.Array
  lengths: jax.Array
  refs: jax.Array
  overflow: jax.Array
  page_size: int = flax.struct.field(pytree_node=False)
  pool_rows: int = flax.struct.field(pytree_node=False)

  @classmethod
  def init(cls, config: TransformerConfig, num_rows: int, capacity: int, page_size: int = 16,
           num_pages: int | None = None, dtype=None) -> "PagedRows":
    """Empty rows of at least `capacity` own slots each.

    Args:
      config: the model the rows belong to.
      num_rows: R.
      capacity: slots a row may reach; rounded up to whole pages.
      page_size: P, one of `PAGE_SIZES`.
      num_pages: pages in the pool; default R * (T + 1), which never runs out (a
        row's table holds at most T pages, and a copy on write frees the shared page
        it leaves only after the write, hence one page more a row). Fewer pages bet
        on rows sharing them (beams share their common prefix).
      dtype: storage dtype; defaults to the model's compute dtype.
    """
    dtype = dtype or config.jnp_dtype
    return cls.empty(config.num_layers, config.num_kv_heads, config.head_dim, dtype, num_rows,
                     capacity, page_size, num_pages)

  @classmethod
  def empty(cls, num_layers: int, num_kv_heads: int, head_dim: int, dtype, num_rows: int,
            capacity: int, page_size: int = 16, num_pages: int | None = None) -> "PagedRows":
    """`init` from the cache's dimensions rather than a model config."""
    if page_size not in PAGE_SIZES:
      raise ValueError(f"page_size must be one of {PAGE_SIZES} (it must divide the "
                       f"16-slot attention views), got {page_size}.")
    if capacity <= 0 or num_rows <= 0:
      raise ValueError(f"PagedRows needs positive rows and capacity, got num_rows={num_rows}, "
                       f"capacity={capacity}.")
    pages_per_row = table_pages(capacity, page_size)
    num_pages = num_rows * (pages_per_row + 1) if num_pages is None else num_pages
    if num_pages < 1:
      raise ValueError(f"num_pages must be positive, got {num_pages}.")
    shape = (num_pages, num_kv_heads, page_size, head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
    rows = jnp.zeros((num_rows,), jnp.int32)
    return cls(keys=zeros, values=zeros, table=jnp.zeros((num_rows, pages_per_row), jnp.int32),
               held=rows, lengths=rows, refs=jnp.zeros((num_pages,), jnp.int32),
               overflow=jnp.zeros((), bool), page_size=page_size, pool_rows=num_rows)

  @property
  def batch_size(self) -> int:
    return self.lengths.shape[0]

  @property
  def num_pages(self) -> int:
    return self.refs.shape[0]

  @property
  def pages_per_row(self) -> int:
    return self.table.shape[1]

  @property
  def capacity(self) -> int:
    return self.pages_per_row * self.page_size

  @property
  def num_bytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in self.keys + self.values)

  def map_rows(self, fn, *others: "PagedRows") -> "PagedRows":
    """`fn` over the per-row leaves (table, held, lengths); the pool is the newest
    one (of the last of `others`, else this one's).

    A result with as many rows as the pool was made for is a new set of rows (a fork,
    or slices put back together), and its `refs` are recounted from its tables; one
    with fewer is a slice of the rows, which keeps the whole set's `refs` so that
    what it allocates is free for every row.
    """
    newest = (others or (self,))[-1]
    table, held, lengths = (fn(getattr(self, name), *(getattr(o, name) for o in others))
                            for name in ("table", "held", "lengths"))
    out = newest.replace(table=table, held=held, lengths=lengths)
    if lengths.shape[0] == self.pool_rows:
      out = out.replace(refs=count_refs(table, held, self.num_pages))
    return out

  def truncate(self, new_lengths: jax.Array) -> "PagedRows":
    """Rewinds rows to `new_lengths` [R]; their pages stay held (and are copied
    before a write if another row reads them)."""
    return self.replace(lengths=jnp.minimum(self.lengths, new_lengths.astype(jnp.int32)))

  def reserve(self, num_new: jax.Array, chunk: int) -> tuple["PagedRows", jax.Array, jax.Array]:
    """Makes every page the next write touches this row's own.

    Row r writes slots lengths[r] .. lengths[r] + num_new[r] - 1. A touched page the
    row holds alone is written in place; one it shares is replaced by a free page
    that receives its contents (copy on write); one past its table's end is a free
    page. When the free pages run out, `overflow` is set and those writes go nowhere.

    Args:
      num_new: [R] int32 tokens each row writes (at most `chunk`).
      chunk: static K, the chunk width (bounds the pages a row touches).

    Returns:
      (the rows with their tables, refs and `held` updated, copy_from [R * U],
      copy_to [R * U]): the pages to copy before writing, U = `touched_pages`;
      entries that copy nothing hold `num_pages` as `copy_to` (a dropped write).
    """
    rows, per_row = self.table.shape
    touched = min(touched_pages(chunk, self.page_size), per_row)
    first = self.lengths // self.page_size
    last = (self.lengths + num_new - 1) // self.page_size
    index = first[:, None] + jnp.arange(touched, dtype=jnp.int32)[None, :]  # [R, U]
    writes = (num_new[:, None] > 0) & (index <= last[:, None]) & (index < per_row)
    index = jnp.minimum(index, per_row - 1)
    current = jnp.take_along_axis(self.table, index, axis=1)
    is_held = index < self.held[:, None]
    shared = writes & is_held & (self.refs[current] > 1)
    needs = (writes & ~is_held) | shared
    flat_needs = needs.reshape(-1)
    free_pages = jnp.nonzero(self.refs == 0, size=flat_needs.shape[0],
                             fill_value=self.num_pages)[0]
    rank = jnp.cumsum(flat_needs) - 1
    given = jnp.where(flat_needs, free_pages[jnp.clip(rank, 0, flat_needs.shape[0] - 1)],
                      self.num_pages)  # num_pages: none left
    got = flat_needs & (given < self.num_pages)
    new_page = jnp.where(got, given, current.reshape(-1))
    row_index = jnp.repeat(jnp.arange(rows), touched)
    table = self.table.at[row_index, index.reshape(-1)].set(
        jnp.where(got, new_page, self.table[row_index, index.reshape(-1)]))
    flat_shared = shared.reshape(-1) & got
    refs = self.refs.at[jnp.where(flat_shared, current.reshape(-1), self.num_pages)].add(
        -1, mode="drop")
    refs = refs.at[jnp.where(got, new_page, self.num_pages)].add(1, mode="drop")
    reached = jnp.where(num_new > 0, jnp.minimum(last + 1, per_row), 0)
    # A row holds no page it did not get: its table ends before the first one missed.
    missed = (needs & ~is_held).reshape(-1) & ~got
    reached = jnp.minimum(reached, jnp.min(
        jnp.where(missed, index.reshape(-1), per_row).reshape(rows, touched), axis=1))
    out = self.replace(table=table, refs=refs, held=jnp.maximum(self.held, reached),
                       overflow=self.overflow | jnp.any(flat_needs & ~got))
    copy_from = jnp.where(flat_shared, current.reshape(-1), 0)
    copy_to = jnp.where(flat_shared, new_page, self.num_pages)
    return out, copy_from, copy_to

  def write_targets(self, num_new: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
    """(page [R, K], slot within it [R, K]) of each token of the next chunk; tokens
    past a row's `num_new`, past its capacity or without a page get page `num_pages`
    (dropped), as do tokens for a page the row shares. Call after `reserve`."""
    slots = self.lengths[:, None] + jnp.arange(chunk, dtype=jnp.int32)[None, :]
    index = jnp.minimum(slots // self.page_size, self.pages_per_row - 1)
    page = jnp.take_along_axis(self.table, index, axis=1)
    # After `reserve` every page a row writes is its own alone (refs 1); a page still
    # shared is one whose copy found no free page, and is not written.
    valid = ((jnp.arange(chunk)[None, :] < num_new[:, None]) & (slots < self.capacity)
             & (index < self.held[:, None]) & (self.refs[page] == 1))
    return jnp.where(valid, page, self.num_pages), slots % self.page_size


def count_refs(table: jax.Array, held: jax.Array, num_pages: int) -> jax.Array:
  """[Np] int32: how many table entries below each row's `held` hold each page."""
  live = jnp.arange(table.shape[1])[None, :] < held[:, None]
  return jnp.zeros((num_pages,), jnp.int32).at[jnp.where(live, table, num_pages)].add(
      1, mode="drop")


def copy_pages(pool: jax.Array, copy_from: jax.Array, copy_to: jax.Array) -> jax.Array:
  """pool [Np, ...] with page copy_to[i] set to page copy_from[i] (out of range: none)."""
  return pool.at[copy_to].set(pool[copy_from], mode="drop")


def write_pages(pool: jax.Array, new: jax.Array, page: jax.Array, slot: jax.Array) -> jax.Array:
  """pool [Np, Hkv, P, D] with new [R, Hkv, K, D] written at (page, slot) [R, K]."""
  heads = jnp.arange(pool.shape[1])[None, :, None]
  return pool.at[page[:, None, :], heads, slot[:, None, :]].set(new.astype(pool.dtype),
                                                                mode="drop")


def read_pages(pool: jax.Array, table: jax.Array, num_pages: int) -> jax.Array:
  """[R, Hkv, num_pages * P, D]: the first `num_pages` pages of each row, as dense slots."""
  pages = pool[table[:, :num_pages]]  # [R, n, Hkv, P, D]
  rows, n, heads, size, dim = pages.shape
  return pages.transpose(0, 2, 1, 3, 4).reshape(rows, heads, n * size, dim)


def check_pages(tree, setting: str = "num_pages") -> None:
  """Raises ValueError when any `PagedRows` in `tree` ran out of pages (call on the
  host after a jitted computation that wrote them)."""
  for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, PagedRows)):
    if isinstance(leaf, PagedRows) and bool(np.asarray(leaf.overflow)):
      raise ValueError(
          f"The paged KV cache ran out of pages ({leaf.num_pages} of {leaf.page_size} slots): "
          f"some writes were dropped, so the results are wrong. Raise {setting} (the default, "
          "rows x (pages a row + 1), never runs out).")
