"""Diverse verifier tree search (search-and-learn): N / M independent subtrees.

Each subtree holds M rows. Every round each open row of a subtree samples its next
step, and the subtree's best open row by PRM score gives its children to all of the
subtree's open slots; the final round's M candidates per subtree are the N outputs.
Subtrees never exchange rows, which keeps the N solutions diverse.
"""

from __future__ import annotations

import functools

import jax

from ttcjax.sampling import Sampler
from ttcjax.search import counts
from ttcjax.search import frontier as fr
from ttcjax.search.base import SearchBatch, SearchModels, SearchOutput, SearchSettings
from ttcjax.search.strategy import REQUIRED, Strategy, check_beam_width


def dvts(models: SearchModels, batch: SearchBatch, rng: jax.Array, sampler: Sampler,
         settings: SearchSettings, *, budget: int, beam_width: int) -> SearchOutput:
  """DVTS with N = budget rows per problem in N / M subtrees of M (= beam_width) rows."""
  if budget >= 1:  # init_frontier refuses budget < 1 with its own message
    check_beam_width(budget, {"beam_width": beam_width})
  # Within a subtree the best open row takes every open slot.
  child_counts = functools.partial(counts.top_counts, children_per_parent=beam_width)
  return fr.step_search(models, batch, rng, sampler, settings, budget=budget,
                        child_counts=child_counts, group_size=beam_width)


STRATEGY = Strategy(name="dvts", fn=dvts, hyperparameters={"beam_width": REQUIRED},
                    check=check_beam_width)
