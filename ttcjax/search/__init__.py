"""Test-time search strategies over batches of problems, inside jit.

`frontier` is the engine (grow a frontier one step, score it, value it, fork it),
`counts` the child-count rules, `strategy` the `Strategy` record; each strategy is a
module of its own. Every strategy has the signature

    fn(models, batch, rng, sampler, settings, *, budget, **hyperparameters) -> SearchOutput

and none calls `jax.jit` itself: callers jit (with the budget and hyperparameters
static). Shape letters: `ttcjax.search.base`.
"""

from ttcjax.models.prm import PrmFn, transformer_prm_fn
from ttcjax.search import beam, best_of_n as _best_of_n, dvts as _dvts, rebase as _rebase
from ttcjax.search import revisions as _revisions
from ttcjax.search.base import (ComputeRecord, RoundTrace, SearchBatch, SearchModels,
                                SearchOutput, SearchSettings, cache_capacity)
from ttcjax.search.beam import beam_search, lookahead_search
from ttcjax.search.best_of_n import best_of_n
from ttcjax.search.dvts import dvts
from ttcjax.search.rebase import rebase
from ttcjax.search.revisions import sequential_revisions
from ttcjax.search.strategy import Strategy

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    _best_of_n.STRATEGY, beam.BEAM, beam.LOOKAHEAD, _dvts.STRATEGY, _rebase.STRATEGY,
    _revisions.STRATEGY)}


def get_strategy(name: str) -> Strategy:
  """The strategy registered as `name`."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown search strategy {name!r}; choose one of {sorted(STRATEGIES)}.")
  return STRATEGIES[name]


__all__ = [
    "ComputeRecord", "PrmFn", "RoundTrace", "STRATEGIES", "SearchBatch", "SearchModels", "SearchOutput",
    "SearchSettings", "Strategy", "beam_search", "best_of_n", "cache_capacity", "dvts",
    "get_strategy", "lookahead_search", "rebase", "sequential_revisions", "transformer_prm_fn",
]
