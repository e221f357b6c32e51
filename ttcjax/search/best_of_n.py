"""Best-of-N: N independent solutions per problem from one shared prompt prefill.

The PRM scores every step of every solution in one pass over the new tokens (its
cache already holds the prompt), so step-score aggregation and every answer
selection rule can run afterwards on the stored scores.
"""

from __future__ import annotations

import jax

from ttcjax.sampling import DecodeFn, Sampler
from ttcjax.search import frontier as fr
from ttcjax.search.base import PrmFn, SearchBatch, SearchOutput, SearchSettings


def best_of_n(policy_fn: DecodeFn, policy_params, prm_fn: PrmFn, prm_params, batch: SearchBatch,
              rng: jax.Array, sampler: Sampler, settings: SearchSettings, *,
              budget: int) -> SearchOutput:
  """Samples `budget` whole solutions per problem and scores their steps.

  Args:
    policy_fn, policy_params: the policy.
    prm_fn, prm_params: the PRM.
    batch: B problems with empty caches.
    rng: key (not consumed): solution n of problem p depends only on (rng, p's id, n).
    sampler: temperature / top-p / top-k.
    settings: caps (static).
    budget: N, static.

  Returns:
    `SearchOutput` with N candidates per problem.
  """
  if budget < 1:
    raise ValueError(f"budget must be a positive number of samples, got {budget}.")
  frontier = fr.init_frontier(policy_fn, policy_params, prm_fn, prm_params, batch, budget, rng,
                              settings)
  frontier, _ = fr.expand(frontier, policy_fn, policy_params, prm_fn, prm_params, sampler,
                          settings, round_index=0, max_steps=None)
  return fr.finish(frontier, batch.num_problems, settings)
