"""PRM-guided beam search and lookahead search (Snell et al. 2024, section 5).

Beam search with budget N and beam width M: sample N first steps, score each with
the PRM, keep the best N / M, give each M children for the next step, and repeat
until every solution has ended or the round cap (40). Solutions that end keep their
slot in the budget, so a problem's open beams shrink as its solutions finish: with
a open slots, the best ceil(a / M) open rows survive, M children each, the last
one the remainder (a - M * floor(a / M)) when M does not divide a.

Lookahead search (k) values each candidate step by the PRM's score at the end of a
greedy k-step rollout from it (the rollout is discarded); k = 0 is beam search.
"""

from __future__ import annotations

import functools

import jax

from ttcjax.sampling import DecodeFn, Sampler
from ttcjax.search import frontier as fr
from ttcjax.search.base import PrmFn, SearchBatch, SearchOutput, SearchSettings


def check_beam(budget: int, beam_width: int) -> None:
  """ValueError unless 1 <= beam_width <= budget and beam_width divides budget."""
  if budget < 1:
    raise ValueError(f"budget must be a positive number of samples, got {budget}.")
  if not 1 <= beam_width <= budget:
    raise ValueError(f"beam_width must lie in [1, budget={budget}], got {beam_width}.")
  if budget % beam_width:
    raise ValueError(f"beam_width {beam_width} must divide the budget {budget} "
                     "(N / M beams of M children each).")


def beam_search(policy_fn: DecodeFn, policy_params, prm_fn: PrmFn, prm_params,
                batch: SearchBatch, rng: jax.Array, sampler: Sampler, settings: SearchSettings,
                *, budget: int, beam_width: int, lookahead_steps: int = 0) -> SearchOutput:
  """Beam search (or lookahead search when lookahead_steps > 0).

  Args:
    policy_fn, policy_params: the policy.
    prm_fn, prm_params: the PRM.
    batch: B problems with empty caches.
    rng: key (not consumed).
    sampler: how steps are sampled (lookahead rollouts are always greedy).
    settings: caps (static).
    budget: N rows per problem, static.
    beam_width: M children per surviving beam, static; must divide N.
    lookahead_steps: k, static.

  Returns:
    `SearchOutput` with the N final rows per problem.
  """
  check_beam(budget, beam_width)
  if lookahead_steps < 0:
    raise ValueError(f"lookahead_steps must be >= 0, got {lookahead_steps}.")
  frontier = fr.init_frontier(policy_fn, policy_params, prm_fn, prm_params, batch, budget, rng,
                              settings)
  rule = functools.partial(fr.top_counts, children_per_parent=beam_width)
  frontier = fr.run_rounds(frontier, rule, budget, policy_fn, policy_params, prm_fn, prm_params,
                           sampler, settings, lookahead_steps=lookahead_steps)
  return fr.finish(frontier, batch.num_problems, settings)


def lookahead_search(policy_fn: DecodeFn, policy_params, prm_fn: PrmFn, prm_params,
                     batch: SearchBatch, rng: jax.Array, sampler: Sampler,
                     settings: SearchSettings, *, budget: int, beam_width: int,
                     lookahead_steps: int) -> SearchOutput:
  """Beam search whose steps are valued after a greedy `lookahead_steps` rollout.

  Its generation budget in the paper's unit is N x (k + 1).
  """
  return beam_search(policy_fn, policy_params, prm_fn, prm_params, batch, rng, sampler, settings,
                     budget=budget, beam_width=beam_width, lookahead_steps=lookahead_steps)
