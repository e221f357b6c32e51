"""A fixed-capacity key/value cache with a position per row.

Slot `c` of row `b` holds the keys and values of the token at position `c` of that
row: rows may hold sequences of different lengths (a padded batch of prompts, beams
that wrote steps of different lengths), and `lengths[b]` is both the number of valid
slots and the position of the next token. Slots at or beyond `lengths[b]` are never
attended to, so nothing needs clearing when a row is forked or rewound.

B denotes the batch (row) dimension, C the capacity (the glossary of `ttcjax.search.base`).
"""

from __future__ import annotations

import chex
import flax
import jax
import jax.numpy as jnp

from ttcjax.models.config import TransformerConfig


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
