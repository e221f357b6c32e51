"""Test-time search strategies over batches of problems; see `frontier` for the engine.

Every strategy has the signature

    strategy(policy_fn, policy_params, prm_fn, prm_params, batch, rng, sampler, settings,
             *, budget, **hyperparameters) -> SearchOutput

and none calls `jax.jit` itself: callers jit (with the hyperparameters static).
"""

from ttcjax.search.base import (ComputeRecord, PrmFn, SearchBatch, SearchOutput, SearchSettings,
                                cache_capacity, transformer_prm_fn)
from ttcjax.search.beam import beam_search, lookahead_search
from ttcjax.search.best_of_n import best_of_n
from ttcjax.search.dvts import dvts
from ttcjax.search.rebase import rebase

STRATEGIES = {
    "best_of_n": best_of_n,
    "beam": beam_search,
    "lookahead": lookahead_search,
    "dvts": dvts,
    "rebase": rebase,
}


def get_strategy(name: str):
  """The strategy function registered as `name`."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown search strategy {name!r}; choose one of {sorted(STRATEGIES)}.")
  return STRATEGIES[name]


__all__ = [
    "ComputeRecord", "PrmFn", "STRATEGIES", "SearchBatch", "SearchOutput", "SearchSettings",
    "beam_search", "best_of_n", "cache_capacity", "dvts", "get_strategy", "lookahead_search",
    "rebase", "transformer_prm_fn",
]
