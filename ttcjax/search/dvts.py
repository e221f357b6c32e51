"""Diverse verifier tree search (search-and-learn): N / M independent subtrees.

Each subtree holds M rows. Every round each open row of a subtree samples its next
step, and the subtree's best open row by PRM score gives its children to all of the
subtree's open slots; the final round's M candidates per subtree are the N outputs.
Subtrees never exchange rows, which keeps the N solutions diverse.
"""

from __future__ import annotations

import functools

import jax

from ttcjax.sampling import DecodeFn, Sampler
from ttcjax.search import frontier as fr
from ttcjax.search.base import PrmFn, SearchBatch, SearchOutput, SearchSettings
from ttcjax.search.beam import check_beam


def dvts(policy_fn: DecodeFn, policy_params, prm_fn: PrmFn, prm_params, batch: SearchBatch,
         rng: jax.Array, sampler: Sampler, settings: SearchSettings, *, budget: int,
         beam_width: int) -> SearchOutput:
  """DVTS with N = budget rows per problem in N / M subtrees of M (= beam_width) rows."""
  check_beam(budget, beam_width)
  frontier = fr.init_frontier(policy_fn, policy_params, prm_fn, prm_params, batch, budget, rng,
                              settings)
  # Within a subtree the best open row takes every open slot.
  rule = functools.partial(fr.top_counts, children_per_parent=beam_width)
  frontier = fr.run_rounds(frontier, rule, beam_width, policy_fn, policy_params, prm_fn,
                           prm_params, sampler, settings)
  return fr.finish(frontier, batch.num_problems, settings)
