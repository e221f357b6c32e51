"""Child-count rules: how many children each open row of a group gets in a round.

A rule maps (values [G, U], open [G, U]) to children per row [G, U]: 0 for rows that
are not open, summing over each group to its open rows, so every open slot is
refilled by a child. G groups of U rows are a strategy's selection unit (all N rows of
a problem for beam search and REBASE, each subtree of M rows for DVTS).
`assign_parents` turns counts into the row each slot continues.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ChildCountFn = Callable[[jax.Array, jax.Array], jax.Array]


def top_counts(values: jax.Array, open_rows: jax.Array, children_per_parent: int) -> jax.Array:
  """Beam-style child counts: the best open rows get `children_per_parent` children
  each, best first, until every open slot of the group is assigned.

  With a open rows and M children per parent, ceil(a / M) parents survive; the last
  one gets a - M * floor(a / M) children when M does not divide a. Ties go to the
  lower row index.

  Args:
    values: [G, U] scores.
    open_rows: [G, U] bool.
    children_per_parent: M.

  Returns:
    [G, U] int32 children per row.
  """
  num_open = open_rows.sum(axis=1, keepdims=True)
  values = jnp.nan_to_num(values, nan=-1e30, posinf=1e30, neginf=-1e30)  # open rows rank first
  order = jnp.argsort(jnp.where(open_rows, -values, jnp.inf), axis=1, stable=True)
  ranks = jnp.argsort(order, axis=1, stable=True)
  counts = jnp.clip(num_open - ranks * children_per_parent, 0, children_per_parent)
  return jnp.where(open_rows, counts, 0).astype(jnp.int32)


def assign_parents(counts: jax.Array, open_rows: jax.Array) -> jax.Array:
  """Which row each slot continues, given child counts.

  Open slots are filled in order by the children of the rows with counts, in row
  order; closed slots keep their own row.

  Args:
    counts: [G, U] children per row, summing over each group to its open rows.
    open_rows: [G, U] bool.

  Returns:
    [G, U] int32 parent index within the group.
  """
  ends = jnp.cumsum(counts, axis=1)
  slot_rank = jnp.cumsum(open_rows, axis=1) - 1

  def per_group(group_ends, ranks):
    return jnp.searchsorted(group_ends, ranks, side="right")

  parents = jax.vmap(per_group)(ends, slot_rank).astype(jnp.int32)
  own = jnp.broadcast_to(jnp.arange(counts.shape[1], dtype=jnp.int32), counts.shape)
  return jnp.where(open_rows, jnp.minimum(parents, counts.shape[1] - 1), own)


def balanced_counts(values: jax.Array, open_rows: jax.Array, temperature: float) -> jax.Array:
  """Children per row [G, U] proportional to softmax(values / temperature) over open rows.

  Counts are rounded by largest remainder: each row gets floor(a * p) children and the
  rows with the largest fractional parts one more (ties to the lower row), where a is
  the number of open slots.
  """
  values = jnp.nan_to_num(values, nan=-1e30, posinf=1e30, neginf=-1e30)
  logits = jnp.where(open_rows, values / temperature, -jnp.inf)
  probs = jax.nn.softmax(logits, axis=1)
  probs = jnp.where(open_rows, probs, 0.0)  # a group with no open row gives NaNs
  num_open = open_rows.sum(axis=1, keepdims=True)
  share = probs * num_open
  base = jnp.floor(share).astype(jnp.int32)
  left = num_open[:, 0] - base.sum(axis=1)
  fraction = jnp.where(open_rows, share - base, -1.0)
  order = jnp.argsort(-fraction, axis=1, stable=True)
  ranks = jnp.argsort(order, axis=1, stable=True)
  extra = (ranks < left[:, None]) & open_rows
  return jnp.where(open_rows, base + extra, 0).astype(jnp.int32)
