"""Fixed-capacity key/value caches with a position per row: dense, or prompt-shared.

Slot `c` of row `b` holds the keys and values of the token at position `c` of that
row: rows may hold sequences of different lengths (a padded batch of prompts, beams
that wrote steps of different lengths), and `lengths[b]` is both the number of valid
slots and the position of the next token. Slots at or beyond `lengths[b]` are never
attended to, so nothing needs clearing when a row is forked or rewound.

A `SharedPrefixCache` stores each problem's prompt once and lets its N rows read it:
the N samples of a search share their prompt, so repeating it N times at full
capacity (what `KVCache.repeat` does) spends N - 1 copies of the prompt on every row
and makes every fork copy it again. Its rows hold only what they added after the
prompt. Row operations (`map_rows`, `repeat_rows`) act on the rows and leave the
prompt alone, so the generic tree maps of the search (forks, PRM slices) keep working
as long as every row stays with its own problem.

On a mesh with a "model" axis (`ttcjax.parallel`) the buffers keep their KV heads
split over it (`shard_heads`) where it divides them, rows over "data": a model split
over M devices then holds 1/M of every cache, instead of a replica of all of it.

B denotes the batch (row) dimension, C the capacity (the glossary of `ttcjax.search.base`).
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp

from ttcjax.models.config import TransformerConfig
from ttcjax.models.paged import PagedRows

# The axes of `ttcjax.parallel.make_mesh` (that module sits above this one).
ROW_AXIS, HEAD_AXIS = "data", "model"


def heads_spec(shape: tuple[int, ...], axes: dict[str, int]) -> jax.sharding.PartitionSpec:
  """A KV buffer's layout [rows, kv heads, slots, width] on a mesh of `axes` (name ->
  size): rows over "data" and heads over "model", each only where its size divides."""
  def over(axis, size):
    return axis if axis in axes and size % axes[axis] == 0 else None
  return jax.sharding.PartitionSpec(over(ROW_AXIS, shape[0]), over(HEAD_AXIS, shape[1]))


def shard_heads(x: jax.Array) -> jax.Array:
  """`x` [B, Hkv, C, D] constrained to `heads_spec` under the surrounding mesh (the
  runner traces searches inside `jax.sharding.use_abstract_mesh`); as it is without
  one, or when the mesh has no model axis to split heads over."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or dict(mesh.shape).get(HEAD_AXIS, 1) == 1:
    return x
  return jax.lax.with_sharding_constraint(x, heads_spec(x.shape, dict(mesh.shape)))


@flax.struct.dataclass
class KVCache:
  """Per-layer keys and values plus per-row lengths.

  Attributes:
    keys: num_layers arrays of shape [B, num_kv_heads, C, head_dim].
    values: num_layers arrays of shape [B, num_kv_heads, C, head_dim].

  Heads come before slots so that attention is a plain batched matrix multiply
  over (row, head) without transposing the cache every step.
    lengths: [B] int32, valid slots per row (== position of the next token).
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  lengths: jax.Array

  @classmethod
  def init(cls, config: TransformerConfig, batch_size: int, capacity: int,
           dtype=None) -> "KVCache":
    """An empty cache: every row has length 0.

    Args:
      config: the model the cache belongs to.
      batch_size: number of rows B.
      capacity: slots per row C (maximum sequence length the rows can reach).
      dtype: storage dtype; defaults to the model's compute dtype.
    """
    if capacity <= 0 or batch_size <= 0:
      raise ValueError(
          f"KVCache needs a positive batch size and capacity, got batch_size="
          f"{batch_size}, capacity={capacity}.")
    dtype = dtype or config.jnp_dtype
    shape = (batch_size, config.num_kv_heads, capacity, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return cls(keys=zeros, values=zeros, lengths=jnp.zeros((batch_size,), jnp.int32))

  @property
  def batch_size(self) -> int:
    return self.lengths.shape[0]

  @property
  def capacity(self) -> int:
    return self.keys[0].shape[2]

  @property
  def num_bytes(self) -> int:
    return sum(x.size * x.dtype.itemsize for x in self.keys + self.values)

  def gather(self, rows: jax.Array) -> "KVCache":
    """Forks rows: row i of the result is a copy of row `rows[i]`.

    Beam search uses this to give each child its parent's prefix without
    recomputing it.

    Args:
      rows: [R] int32 indices into this cache's rows.

    Returns:
      A cache with R rows.
    """
    chex.assert_rank(rows, 1)
    take = lambda x: jnp.take(x, rows, axis=0)
    return jax.tree.map(take, self)

  def repeat(self, num_copies: int) -> "KVCache":
    """Broadcasts each row to `num_copies` consecutive rows: b -> b * n + j.

    One prompt prefilled once per problem then shared by N samples.
    """
    rows = jnp.repeat(jnp.arange(self.batch_size), num_copies)
    return self.gather(rows)

  def truncate(self, new_lengths: jax.Array) -> "KVCache":
    """Rewinds rows to `new_lengths` [B] (must not exceed the current lengths)."""
    return self.replace(lengths=jnp.minimum(self.lengths, new_lengths.astype(jnp.int32)))


@flax.struct.dataclass
class SharedPrefixCache:
  """B prompts stored once, read by R = B * n rows (rows b * n .. b * n + n - 1).

  Before `share` it is B rows filling their prompts (`rows` is None and the cache
  acts as `prefix`); after it, the prompt is frozen and each row's new tokens go to
  its own slots: slot j of row r holds position `prefix.lengths[r // n] + j`.

  Attributes:
    prefix: the prompts' `KVCache`, B rows, capacity P (the prompt buffer).
    rows: the rows' own slots (`lengths` counting own tokens only), or None before
      `share`: a `KVCache` ([R, Hkv, C', D] per layer), or with `page_size` a
      `PagedRows` (a pool of pages and a page table per row, so that forks copy table
      entries instead of caches; `ttcjax.models.paged`).
    row_capacity: static C', own slots per row (the dense capacity minus P).
    page_size: static; 0 for dense rows, else the rows' page size P.
    num_pages: static; the pool's pages with `page_size` (None: enough never to run out).
  """

  prefix: KVCache
  rows: KVCache | PagedRows | None
  row_capacity: int = flax.struct.field(pytree_node=False)
  page_size: int = flax.struct.field(pytree_node=False, default=0)
  num_pages: int | None = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def init(cls, config: TransformerConfig, batch_size: int, prompt_capacity: int,
           row_capacity: int, dtype=None, page_size: int = 0,
           num_pages: int | None = None) -> "SharedPrefixCache":
    """Empty prompts for `batch_size` problems; rows are made by `share` (paged
    with `page_size` P > 0, in a pool of `num_pages`)."""
    if row_capacity <= 0:
      raise ValueError(f"SharedPrefixCache needs a positive row capacity, got {row_capacity}.")
    if page_size:  # checked here, before any work
      PagedRows.empty(1, 1, 1, jnp.float32, 1, row_capacity, page_size, num_pages)
    return cls(prefix=KVCache.init(config, batch_size, prompt_capacity, dtype), rows=None,
               row_capacity=row_capacity, page_size=page_size, num_pages=num_pages)

  @property
  def is_shared(self) -> bool:
    return self.rows is not None

  @property
  def rows_per_prefix(self) -> int:
    """n, the rows reading each prompt (1 before `share`)."""
    return 1 if self.rows is None else self.rows.batch_size // self.prefix.batch_size

  @property
  def batch_size(self) -> int:
    return self.prefix.batch_size if self.rows is None else self.rows.batch_size

  @property
  def capacity(self) -> int:
    """Slots a chunk may fill: the prompt's before `share`, a row's own after it."""
    return self.prefix.capacity if self.rows is None else self.rows.capacity

  @property
  def total_capacity(self) -> int:
    """Positions a row can reach: the prompt buffer plus its own slots."""
    return self.prefix.capacity + self.row_capacity

  @property
  def prefix_lengths(self) -> jax.Array:
    """[R] prompt tokens each row reads."""
    return jnp.repeat(self.prefix.lengths, self.rows_per_prefix)

  @property
  def lengths(self) -> jax.Array:
    """[R] tokens each row holds, prompt included (== position of its next token)."""
    if self.rows is None:
      return self.prefix.lengths
    return self.prefix_lengths + self.rows.lengths

  @property
  def num_bytes(self) -> int:
    return self.prefix.num_bytes + (0 if self.rows is None else self.rows.num_bytes)

  def share(self, num_rows: int) -> "SharedPrefixCache":
    """Freezes the prompts and gives each `num_rows` empty rows that read it."""
    if self.rows is not None:
      raise ValueError("This cache is already shared; rows cannot be shared again.")
    keys = self.prefix.keys[0]
    if self.page_size:
      return self.replace(rows=PagedRows.empty(
          len(self.prefix.keys), keys.shape[1], keys.shape[3], keys.dtype,
          keys.shape[0] * num_rows, self.row_capacity, self.page_size, self.num_pages))
    shape = (keys.shape[0] * num_rows, keys.shape[1], self.row_capacity, keys.shape[3])
    zeros = tuple(jnp.zeros(shape, keys.dtype) for _ in self.prefix.keys)
    rows = KVCache(keys=zeros, values=zeros,
                   lengths=jnp.zeros((shape[0],), jnp.int32))
    return self.replace(rows=rows)

  def truncate(self, new_lengths: jax.Array) -> "SharedPrefixCache":
    """Rewinds rows to `new_lengths` [R] (whole lengths; never into the prompt)."""
    if self.rows is None:
      return self.replace(prefix=self.prefix.truncate(new_lengths))
    own = jnp.maximum(new_lengths.astype(jnp.int32) - self.prefix_lengths, 0)
    return self.replace(rows=self.rows.truncate(own))


def _is_shared(x) -> bool:
  return isinstance(x, SharedPrefixCache)


def map_rows(fn: Callable[..., jax.Array], tree: Any, *others: Any) -> Any:
  """`fn` over every leaf of `tree` (and the matching leaves of `others`, trees of the
  same structure) whose first dimension is rows.

  A shared cache's prompt (one per problem, not per row) is left as it is (taken from
  `tree`), so `fn` must keep every row with its own problem: a fork within each
  problem's rows, or a strided slice that takes the same number of rows from every
  problem.
  """
  def apply(x, *ys):
    if _is_shared(x) and isinstance(x.rows, PagedRows):  # tables move, pages stay
      return x.replace(rows=x.rows.map_rows(fn, *(y.rows for y in ys)))
    if _is_shared(x) and x.rows is not None:
      return x.replace(rows=jax.tree.map(fn, x.rows, *(y.rows for y in ys)))
    if _is_shared(x):
      return x.replace(prefix=jax.tree.map(fn, x.prefix, *(y.prefix for y in ys)))
    return fn(x, *ys)
  return jax.tree.map(apply, tree, *others, is_leaf=_is_shared)


def repeat_rows(tree: Any, copies: int) -> Any:
  """Each row to `copies` consecutive rows (b -> b * copies + j).

  A `SharedPrefixCache` that is not yet shared is shared instead: its prompt stays
  single and the copies get empty rows of their own.
  """
  def apply(x):
    if _is_shared(x):
      return x.share(copies)
    return jnp.repeat(x, copies, axis=0)
  return jax.tree.map(apply, tree, is_leaf=_is_shared)
