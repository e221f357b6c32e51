"""REBASE (Wu et al. 2024): reward-balanced expansion under a fixed total width.

Every round each open row of a problem gets a number of children proportional to
softmax(score / temperature) over the problem's open rows, so that the children
fill exactly the open slots (`ttcjax.search.counts.balanced_counts`: largest-remainder
rounding, ties to the lower row).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax

from ttcjax.sampling import Sampler
from ttcjax.search import counts
from ttcjax.search import frontier as fr
from ttcjax.search.base import SearchBatch, SearchModels, SearchOutput, SearchSettings
from ttcjax.search.strategy import Strategy


def rebase(models: SearchModels, batch: SearchBatch, rng: jax.Array, sampler: Sampler,
           settings: SearchSettings, *, budget: int, temperature: float = 0.1) -> SearchOutput:
  """REBASE with N = budget rows per problem and a softmax temperature over PRM scores."""
  _check(budget, {"temperature": temperature})
  child_counts = functools.partial(counts.balanced_counts, temperature=temperature)
  return fr.step_search(models, batch, rng, sampler, settings, budget=budget,
                        child_counts=child_counts, group_size=budget)


def _check(budget: int, hyper: Mapping[str, Any]) -> None:
  del budget
  if not hyper["temperature"] > 0:
    raise ValueError(f"The REBASE temperature must be positive, got {hyper['temperature']}.")


STRATEGY = Strategy(name="rebase", fn=rebase, hyperparameters={"temperature": 0.1},
                    check=_check)
