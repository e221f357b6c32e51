"""REBASE (Wu et al. 2024): reward-balanced expansion under a fixed total width.

Every round each open row of a problem gets a number of children proportional to
softmax(score / temperature) over the problem's open rows, so that the children
fill exactly the open slots. Counts are rounded by largest remainder: each row
gets floor(a * p) children and the rows with the largest fractional parts one more
(ties to the lower row), where a is the number of open slots.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ttcjax.sampling import DecodeFn, Sampler
from ttcjax.search import frontier as fr
from ttcjax.search.base import PrmFn, SearchBatch, SearchOutput, SearchSettings


def balanced_counts(values: jax.Array, open_rows: jax.Array, temperature: float) -> jax.Array:
  """Children per row [G, K] proportional to softmax(values / temperature) over open rows."""
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


def rebase(policy_fn: DecodeFn, policy_params, prm_fn: PrmFn, prm_params, batch: SearchBatch,
           rng: jax.Array, sampler: Sampler, settings: SearchSettings, *, budget: int,
           temperature: float = 0.1) -> SearchOutput:
  """REBASE with N = budget rows per problem and a softmax temperature over PRM scores."""
  if budget < 1:
    raise ValueError(f"budget must be a positive number of samples, got {budget}.")
  if not temperature > 0:
    raise ValueError(f"The REBASE temperature must be positive, got {temperature}.")
  frontier = fr.init_frontier(policy_fn, policy_params, prm_fn, prm_params, batch, budget, rng,
                              settings)
  rule = functools.partial(balanced_counts, temperature=temperature)
  frontier = fr.run_rounds(frontier, rule, budget, policy_fn, policy_params, prm_fn, prm_params,
                           sampler, settings)
  return fr.finish(frontier, batch.num_problems, settings)
