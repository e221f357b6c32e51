"""A strategy as a record: the search function and every fact the host side needs.

The runner, the memory plan, the sweep plan and the reports read a `Strategy` instead
of testing strategy names: whether its rows fork caches (memory), how many step ends
one PRM call sees and how many step suffixes a row's PRM cache receives (PRM adapters'
buffers), the rows a problem occupies, its budget in the paper's unit, and which
hyperparameters it takes. A new strategy is one module: its function and its record,
listed in `ttcjax.search.STRATEGIES`.

Every strategy function has the signature

    fn(models, batch, rng, sampler, settings, *, budget, **hyperparameters) -> SearchOutput

and none calls `jax.jit` itself: callers jit (with budget and hyperparameters static).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from ttcjax import compute
from ttcjax.search.base import (SearchOutput, SearchSettings, cache_capacity,
                                revision_cache_capacity)

REQUIRED = object()  # a hyperparameter without a default


@dataclasses.dataclass(frozen=True)
class Strategy:
  """One registered strategy.

  Attributes:
    name: what configs call it ("beam").
    fn: the search function (see the module docstring).
    hyperparameters: name -> default (`REQUIRED` for none) of what `fn` takes besides
      the budget.
    check: (budget, hyperparameters) -> None; raises ValueError for a combination the
      strategy cannot run (called by `validate` after the names are checked).
    forks: rows continue other rows' caches between rounds (a fork's gathered
      buffers sit beside the old ones while it runs), which the memory plan counts.
    whole_solutions: each row is sampled to its end before the PRM scores it, in one
      call over at most S step ends; otherwise the PRM scores one round's steps (a
      lookahead rollout's k) per call.
    independent_samples: the N candidates never influence each other, so any n of
      them are a run at budget n (best-of-N: smaller budgets read from subsets).
    revises: its policy is a revision model whose context holds previous attempts
      (`ttcjax.search.revisions`): runners give it the revision model and a policy
      cache of `policy_cache_capacity` slots; it runs N / chain_length rows.
  """

  name: str
  fn: Callable[..., SearchOutput]
  hyperparameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  check: Callable[[int, Mapping[str, Any]], None] = lambda budget, hyper: None
  forks: bool = True
  whole_solutions: bool = False
  independent_samples: bool = False
  revises: bool = False

  def resolved(self, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """`hyper` with the defaults of what it leaves out."""
    return {**{k: v for k, v in self.hyperparameters.items() if v is not REQUIRED}, **hyper}

  def validate(self, budget: int, hyper: Mapping[str, Any]) -> None:
    """ValueError for unknown or missing hyperparameter names, a budget below 1, or a
    combination `check` refuses; the message says what to change."""
    unknown = sorted(set(hyper) - set(self.hyperparameters))
    if unknown:
      known = sorted(self.hyperparameters) or "none"
      raise ValueError(f"Strategy {self.name!r} takes no hyperparameter {unknown}; it takes "
                       f"{known}.")
    missing = sorted(k for k, v in self.hyperparameters.items()
                     if v is REQUIRED and k not in hyper)
    if missing:
      raise ValueError(f"Strategy {self.name!r} needs the hyperparameters {missing}.")
    if budget < 1:
      raise ValueError(f"budget must be a positive number of samples, got {budget}.")
    self.check(budget, self.resolved(hyper))

  def lookahead_steps(self, hyper: Mapping[str, Any]) -> int:
    """k: greedy rollout steps that value each candidate step (0: none)."""
    return int(self.resolved(hyper).get("lookahead_steps", 0))

  def generation_budget(self, budget: int, hyper: Mapping[str, Any]) -> int:
    """The budget in the paper's unit (samples): N, or N x (k + 1) with lookahead."""
    return compute.generation_budget(budget, self.lookahead_steps(hyper))

  def budget_for(self, generation_budget: int, hyper: Mapping[str, Any]) -> int:
    """The budget N whose `generation_budget` is `generation_budget` (floored)."""
    return generation_budget // (self.lookahead_steps(hyper) + 1)

  def rows_per_problem(self, budget: int, hyper: Mapping[str, Any]) -> int:
    """The rows one problem occupies: N, twice that with lookahead, whose rollouts run
    on copies of the frontier's caches; N / L chains for revisions."""
    if self.revises:
      return budget // int(self.resolved(hyper)["chain_length"])
    return budget * (2 if self.lookahead_steps(hyper) else 1)

  def policy_cache_capacity(self, prompt_width: int, settings: SearchSettings,
                            hyper: Mapping[str, Any]) -> int:
    """Slots of a row's policy cache: `cache_capacity`, plus a revision context's kept
    attempts and separators."""
    if self.revises:
      return revision_cache_capacity(prompt_width, settings,
                                     int(self.resolved(hyper)["chain_length"]))
    return cache_capacity(prompt_width, settings)

  def prm_chunk_steps(self, settings: SearchSettings, hyper: Mapping[str, Any]) -> int:
    """The most step ends one PRM call is told of (a PRM adapter's J): S for whole
    solutions (the S-column table keeps no more), else one round's, or a lookahead
    rollout's k."""
    if self.whole_solutions:
      return settings.max_steps
    return max(1, self.lookahead_steps(hyper))

  def prm_suffixes_per_row(self, settings: SearchSettings, hyper: Mapping[str, Any]) -> int:
    """The most step suffixes one row's PRM cache receives: S for whole solutions; one
    per round otherwise, plus a lookahead rollout's k on the cache's copy."""
    if self.whole_solutions:
      return settings.max_steps
    return settings.max_rounds + self.lookahead_steps(hyper)


def check_beam_width(budget: int, hyper: Mapping[str, Any]) -> None:
  """ValueError unless 1 <= beam_width <= budget and beam_width divides budget."""
  beam_width = hyper["beam_width"]
  if not 1 <= beam_width <= budget:
    raise ValueError(f"beam_width must lie in [1, budget={budget}], got {beam_width}.")
  if budget % beam_width:
    raise ValueError(f"beam_width {beam_width} must divide the budget {budget} "
                     "(N / M beams of M children each).")
