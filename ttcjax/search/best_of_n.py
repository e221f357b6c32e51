"""Best-of-N: N independent solutions per problem from one shared prompt prefill.

The PRM scores every step of every solution in one pass over the new tokens (its
cache already holds the prompt), so step-score aggregation and every answer
selection rule can run afterwards on the stored scores.
"""

from __future__ import annotations

import jax

from ttcjax.sampling import Sampler
from ttcjax.search import frontier as fr
from ttcjax.search.base import SearchBatch, SearchModels, SearchOutput, SearchSettings
from ttcjax.search.strategy import Strategy


def best_of_n(models: SearchModels, batch: SearchBatch, rng: jax.Array, sampler: Sampler,
              settings: SearchSettings, *, budget: int) -> SearchOutput:
  """Samples `budget` whole solutions per problem and scores their steps.

  Args:
    models: the policy and the PRM.
    batch: B problems with empty caches.
    rng: key (not consumed): solution n of problem b depends only on (rng, b's id, n).
    sampler: temperature / top-p / top-k.
    settings: caps (static).
    budget: N, static.

  Returns:
    `SearchOutput` with N candidates per problem.
  """
  frontier = fr.init_frontier(models, batch, budget, rng, settings)
  frontier, _ = fr.expand(frontier, models, sampler, settings, round_index=0, max_steps=None)
  return fr.finish(frontier, batch.num_problems, settings)


STRATEGY = Strategy(name="best_of_n", fn=best_of_n, forks=False, whole_solutions=True,
                    independent_samples=True)
