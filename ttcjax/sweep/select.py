"""Choosing one answer from a search's candidates, after the search, on stored scores.

One search serves every rule: step scores are aggregated into a solution score
(`aggregate`), then an answer is picked among the N candidates of a problem
(`select_answers`). Answers enter as integer ids per problem (`answer_ids`, built
from the task's canonical form), so every rule is a few numpy operations over
[Q, N] arrays. `subset_selection` reads best-of-n at every n <= N from one run of N
samples by drawing subsets without replacement and averaging over draws.

Q denotes problems (questions), N candidates per problem, S step-score columns.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

AGGREGATIONS = ("last", "min", "prod", "mean")
RULES = ("majority", "best", "weighted", "hierarchical")
NO_ANSWER = -1


def aggregate(step_scores: np.ndarray, step_mask: np.ndarray, how: str) -> np.ndarray:
  """Solution scores [...] from step scores [..., S] and their mask.

  A solution without any scored step gets 0 (it cannot be preferred).

  Args:
    step_scores: [..., S] PRM scores in [0, 1].
    step_mask: [..., S] bool, the step exists.
    how: "last" (the paper's choice), "min", "prod" or "mean".
  """
  if how not in AGGREGATIONS:
    raise ValueError(f"Unknown aggregation {how!r}; choose one of {AGGREGATIONS}.")
  scores = np.asarray(step_scores, np.float64)
  mask = np.asarray(step_mask, bool)
  if scores.shape != mask.shape:
    raise ValueError(f"step_scores {scores.shape} and step_mask {mask.shape} differ in shape.")
  count = mask.sum(axis=-1)
  if how == "last":
    last = np.clip(count - 1, 0, None)[..., None]
    out = np.take_along_axis(scores, last, axis=-1)[..., 0]
  elif how == "min":
    out = np.where(mask, scores, np.inf).min(axis=-1)
  elif how == "prod":
    out = np.where(mask, scores, 1.0).prod(axis=-1)
  else:
    out = np.where(mask, scores, 0.0).sum(axis=-1) / np.maximum(count, 1)
  return np.where(count > 0, out, 0.0)


def answer_ids(answers: Sequence[Sequence[Hashable | None]]) -> tuple[np.ndarray, list[list]]:
  """Integer ids of canonical answers, per problem.

  Args:
    answers: Q lists of N canonical answers (None: no parsable answer).

  Returns:
    (ids [Q, N] int, NO_ANSWER for None; Q lists mapping id -> answer).
  """
  if len({len(row) for row in answers}) > 1:
    raise ValueError("Every problem needs the same number of candidates.")
  ids = np.full((len(answers), len(answers[0]) if answers else 0), NO_ANSWER, np.int64)
  vocab = []
  for p, row in enumerate(answers):
    seen: dict = {}
    for n, answer in enumerate(row):
      if answer is not None:
        ids[p, n] = seen.setdefault(answer, len(seen))
    vocab.append(list(seen))
  return ids, vocab


def select_answers(ids: np.ndarray, scores: np.ndarray | None, rule: str,
                   chains: np.ndarray | None = None) -> np.ndarray:
  """The chosen answer id per problem [Q] (NO_ANSWER when no candidate has one).

  Args:
    ids: [Q, N] answer ids (`answer_ids`).
    scores: [Q, N] solution scores (a PRM's aggregate, or an ORM's score); unused
      by "majority".
    rule: "majority" (most frequent answer), "best" (the answer of the best-scored
      candidate; ties to the earlier candidate) or "weighted" (the answer whose
      candidates' scores sum highest, the paper's best-of-N weighted). Majority and
      weighted ties go to the lowest id (`answer_ids` numbers answers in order of
      first appearance, so: the answer seen first). "hierarchical" (the paper's
      selection for sequential revisions): best-of-N weighted within each chain, then
      across chains, each chain voting for its winner with the winner's summed score.
    chains: [Q, N] the chain of each candidate (`SearchOutput.chain`), for
      "hierarchical"; with every candidate its own chain it is "weighted".
  """
  if rule not in RULES:
    raise ValueError(f"Unknown selection rule {rule!r}; choose one of {RULES}.")
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"ids must be [problems, candidates], got shape {ids.shape}.")
  if rule != "majority":
    if scores is None or np.shape(scores) != ids.shape:
      raise ValueError(f"Rule {rule!r} needs scores of shape {ids.shape}, got "
                       f"{None if scores is None else np.shape(scores)}.")
    scores = np.asarray(scores, np.float64)
  valid = ids != NO_ANSWER
  if rule == "hierarchical":
    return _hierarchical(ids, scores, chains)
  if rule == "best":
    masked = np.where(valid, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    chosen = ids[np.arange(ids.shape[0]), best]
    return np.where(valid.any(axis=1), chosen, NO_ANSWER)
  weights = np.ones(ids.shape) if rule == "majority" else scores
  totals = _answer_totals(ids, weights, valid)  # an answer no candidate gave is never chosen
  # Answer ids are numbered in order of first appearance, so argmax's first-max
  # tie-break picks the answer seen first.
  return np.where(valid.any(axis=1), np.argmax(totals, axis=1), NO_ANSWER)


def _answer_totals(ids: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """[Q, A] summed weights per answer id; -inf for an answer no valid candidate gave."""
  width = max(int(ids.max()) + 1, 1)
  totals = np.zeros((ids.shape[0], width))
  present = np.zeros((ids.shape[0], width), bool)
  rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
  flat = (rows[valid.ravel()], ids.ravel()[valid.ravel()])
  np.add.at(totals, flat, weights.ravel()[valid.ravel()])
  present[flat] = True
  return np.where(present, totals, -np.inf)


def _hierarchical(ids: np.ndarray, scores: np.ndarray, chains: np.ndarray | None) -> np.ndarray:
  """Best-of-N weighted within each chain, then across the chains' winners (weighted by
  the winners' within-chain totals); ties to the answer seen first, as "weighted"."""
  if chains is None or np.shape(chains) != ids.shape:
    raise ValueError(f"Rule 'hierarchical' needs chains of shape {ids.shape} (the chain of "
                     f"each candidate), got {None if chains is None else np.shape(chains)}.")
  chains = np.asarray(chains)
  num_problems = ids.shape[0]
  winners = np.full((num_problems, chains.max() + 1 if chains.size else 1), NO_ANSWER)
  weights = np.zeros(winners.shape)
  valid = ids != NO_ANSWER
  for chain in np.unique(chains):
    member = valid & (chains == chain)
    totals = _answer_totals(ids, scores, member)
    best = np.argmax(totals, axis=1)
    has = member.any(axis=1)
    winners[:, chain] = np.where(has, best, NO_ANSWER)
    weights[:, chain] = np.where(has, totals[np.arange(num_problems), best], 0.0)
  voted = winners != NO_ANSWER
  if not voted.any():
    return np.full((num_problems,), NO_ANSWER)
  totals = _answer_totals(np.where(voted, winners, 0), weights, voted)
  return np.where(voted.any(axis=1), np.argmax(totals, axis=1), NO_ANSWER)


def _first_position(ids: np.ndarray) -> np.ndarray:
  """[Q, n]: for each entry, the index of the first entry of its row with the same id."""
  same = ids[:, :, None] == ids[:, None, :]  # [Q, n, n]
  return np.argmax(same, axis=2)


def subset_selection(ids: np.ndarray, scores: np.ndarray | None, correct_ids: np.ndarray,
                     subset_size: int, rule: str, num_draws: int, seed: int = 0) -> np.ndarray:
  """Accuracy per problem [Q] of selecting among random n-subsets of the N candidates.

  Each draw picks `subset_size` candidates per problem uniformly without
  replacement; the result averages correctness over `num_draws` draws (exact, one
  draw, when subset_size == N).

  Args:
    ids: [Q, N] answer ids.
    scores: [Q, N] solution scores (None for "majority").
    correct_ids: [Q] the id of the right answer (NO_ANSWER if no candidate has it).
    subset_size: n in 1..N.
    rule: see `select_answers`.
    num_draws: subsets averaged.
    seed: the draws' seed.
  """
  ids = np.asarray(ids)
  num_problems, n_total = ids.shape
  if not 1 <= subset_size <= n_total:
    raise ValueError(f"subset_size must lie in [1, {n_total}], got {subset_size}.")
  if num_draws < 1:
    raise ValueError(f"num_draws must be positive, got {num_draws}.")
  correct_ids = np.asarray(correct_ids)
  if subset_size == n_total:
    num_draws = 1
  rng = np.random.default_rng(seed)
  hits = np.zeros(num_problems)
  rows = np.arange(num_problems)[:, None]
  for _ in range(num_draws):
    pick = np.argsort(rng.random((num_problems, n_total)), axis=1)[:, :subset_size]
    sub_ids = ids[rows, pick]
    sub_scores = None if scores is None else np.asarray(scores)[rows, pick]
    # Renumber each subset's answers by first appearance within the subset, so ties
    # are broken by the (random) subset order, not by what the other samples said.
    first = _first_position(sub_ids)
    local = np.where(sub_ids == NO_ANSWER, NO_ANSWER, first)
    chosen_local = select_answers(local, sub_scores, rule)
    chosen = np.where(chosen_local == NO_ANSWER, NO_ANSWER,
                      sub_ids[np.arange(num_problems), np.maximum(chosen_local, 0)])
    hits += (chosen == correct_ids) & (correct_ids != NO_ANSWER)
  return hits / num_draws
