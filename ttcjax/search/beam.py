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
from typing import Any, Mapping

import jax

from ttcjax.sampling import Sampler
from ttcjax.search import counts
from ttcjax.search import frontier as fr
from ttcjax.search.base import SearchBatch, SearchModels, SearchOutput, SearchSettings
from ttcjax.search.strategy import REQUIRED, Strategy, check_beam_width


def beam_search(models: SearchModels, batch: SearchBatch, rng: jax.Array, sampler: Sampler,
                settings: SearchSettings, *, budget: int, beam_width: int,
                lookahead_steps: int = 0) -> SearchOutput:
  """Beam search (or lookahead search when lookahead_steps > 0).

  Args:
    models: the policy and the PRM.
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
  _check(budget, dict(beam_width=beam_width, lookahead_steps=lookahead_steps))
  child_counts = functools.partial(counts.top_counts, children_per_parent=beam_width)
  return fr.step_search(models, batch, rng, sampler, settings, budget=budget,
                        child_counts=child_counts, group_size=budget,
                        lookahead_steps=lookahead_steps)


def lookahead_search(models: SearchModels, batch: SearchBatch, rng: jax.Array, sampler: Sampler,
                     settings: SearchSettings, *, budget: int, beam_width: int,
                     lookahead_steps: int) -> SearchOutput:
  """Beam search whose steps are valued after a greedy `lookahead_steps` rollout.

  Its generation budget in the paper's unit is N x (k + 1).
  """
  return beam_search(models, batch, rng, sampler, settings, budget=budget,
                     beam_width=beam_width, lookahead_steps=lookahead_steps)


def _check(budget: int, hyper: Mapping[str, Any]) -> None:
  if budget < 1:
    raise ValueError(f"budget must be a positive number of samples, got {budget}.")
  check_beam_width(budget, hyper)
  if hyper["lookahead_steps"] < 0:
    raise ValueError(f"lookahead_steps must be >= 0, got {hyper['lookahead_steps']}.")


BEAM = Strategy(name="beam", fn=beam_search,
                hyperparameters={"beam_width": REQUIRED, "lookahead_steps": 0}, check=_check)
LOOKAHEAD = Strategy(name="lookahead", fn=lookahead_search,
                     hyperparameters={"beam_width": REQUIRED, "lookahead_steps": REQUIRED},
                     check=_check)
