"""Sequential revisions (the paper's section 6): chains of attempts, each conditioned on
the chain's previous ones.

A budget of N generations is spent as N / L independent chains of L attempts
(L = `chain_length`): L = 1 is best-of-N, L = N one fully sequential chain. Attempt t
of a chain is sampled by the revision model (the `SearchModels` policy) from

    prompt  attempt_{t-4} sep  ...  attempt_{t-1} sep

(an attempt's tokens without its EOS, `sep` = `SearchSettings.attempt_separator`),
keeping the last `MAX_PREVIOUS_ATTEMPTS` attempts, the layout the revision model is
trained on (`ttcjax.training.revisions`). Every attempt is scored by the PRM as a
solution to the question alone, from a copy of the question's PRM cache.

Compute: while a chain holds at most 4 attempts its cache simply grows: after an
attempt the separator is appended (the attempt's EOS, still pending, is replaced by
the separator's first token, so it never enters the context) and sampling goes on.
From attempt 6 on the oldest attempt must leave the context, so the chain restarts
from its problem's question cache (the question is prefilled once per problem) and
re-reads its last 4 attempts and separators. Every token the policy runs outside
sampling (separators, re-read attempts) is charged as `policy_prefilled`, with its
attended context in `policy_context`; so truncation costs the re-read tokens.

Randomness: attempt t of chain c of problem b samples with fold_in(key(rng, b's id,
c), t), so an attempt depends only on (rng, problem id, chain, position), and with
L = 1 the samples are exactly best-of-N's. The budget must be a multiple of L (the
study's cost unit is exact generations; budgets and ratios are powers of two).

Shapes: the glossary of `ttcjax.search.base`; A = B * N / L chain rows.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from ttcjax.models.cache import repeat_rows
from ttcjax.models.prm import gather_step_scores
from ttcjax.sampling import DecodeState, append_tokens, prefill, row_keys, sample_steps
from ttcjax.sampling import Sampler
from ttcjax.search import frontier as fr
from ttcjax.search.base import (MAX_PREVIOUS_ATTEMPTS, ComputeRecord, SearchBatch, SearchModels,
                                SearchOutput, SearchSettings, revision_cache_capacity)
from ttcjax.search.strategy import REQUIRED, Strategy

def _check(budget: int, hyper: Mapping) -> None:
  length = hyper["chain_length"]
  if not 1 <= length <= budget:
    raise ValueError(f"chain_length must lie in [1, budget={budget}], got {length}.")
  if budget % length:
    raise ValueError(f"chain_length {length} must divide the budget {budget} (N / L chains "
                     "of L attempts each; no partial chains).")


def _separate(models: SearchModels, state: DecodeState, settings: SearchSettings
              ) -> tuple[DecodeState, jax.Array]:
  """Appends the separator after each row's finished attempt; ([A] tokens run)."""
  sep = jnp.asarray(settings.attempt_separator, jnp.int32)
  width = sep.shape[0]
  ended_by_eos = state.pending == settings.eos_id
  # An EOS is still pending (not in the cache): the separator's first token replaces it.
  pending = jnp.where(ended_by_eos, sep[0], state.pending)
  shifted = jnp.concatenate([sep[1:], jnp.full((1,), settings.pad_id, jnp.int32)])
  tokens = jnp.where(ended_by_eos[:, None], shifted[None], sep[None])
  num_new = jnp.where(ended_by_eos, width - 1, width).astype(jnp.int32)
  state, _ = append_tokens(models.policy_fn, models.policy_params, state.replace(pending=pending),
                           tokens, num_new)
  return state, num_new


def _reread(models: SearchModels, question: DecodeState, attempts: jax.Array,
            attempt_lengths: jax.Array, position, settings: SearchSettings
            ) -> tuple[DecodeState, jax.Array]:
  """Each chain restarted from its question with its last 4 attempts re-read.

  The attempts go in one at a time (each with its separator), so a pass attends with
  [A, heads, T + sep, C] scores rather than four attempts' worth at once.

  Args:
    question: A rows, the question prefilled (shared per problem).
    attempts: [A, L, T] attempts so far; attempt_lengths: [A, L] their tokens without EOS.
    position: the attempt about to be written (> MAX_PREVIOUS_ATTEMPTS).

  Returns:
    (the state ending in a separator, [A] tokens run).
  """
  sep = jnp.asarray(settings.attempt_separator, jnp.int32)
  t = settings.max_solution_tokens

  def with_separator(row_attempt, length):
    buffer = jnp.concatenate([row_attempt, jnp.full(sep.shape, settings.pad_id, jnp.int32)])
    return jax.lax.dynamic_update_slice(buffer, sep, (length,))  # [T + sep]

  state, ran = question, jnp.zeros((question.num_rows,), jnp.int32)
  for j in range(MAX_PREVIOUS_ATTEMPTS):
    index = position - MAX_PREVIOUS_ATTEMPTS + j
    tokens = jax.lax.dynamic_index_in_dim(attempts, index, axis=1, keepdims=False)[:, :t]
    lengths = jax.lax.dynamic_index_in_dim(attempt_lengths, index, axis=1, keepdims=False)
    chunk = jax.vmap(with_separator)(tokens, lengths)
    state, _ = append_tokens(models.policy_fn, models.policy_params, state, chunk,
                             lengths + sep.shape[0])
    ran = ran + lengths + sep.shape[0]
  return state, ran


def sequential_revisions(models: SearchModels, batch: SearchBatch, rng: jax.Array,
                         sampler: Sampler, settings: SearchSettings, *, budget: int,
                         chain_length: int) -> SearchOutput:
  """N / L chains of L attempts per problem (see the module docstring).

  Args:
    models: the revision model (as the policy) and the PRM.
    batch: B problems; `policy_cache` must hold `revision_cache_capacity` slots.
    rng: key (not consumed).
    sampler: how attempts are sampled.
    settings: caps; `attempt_separator` must be set.
    budget: N, static; chain_length: L, static, dividing N.

  Returns:
    `SearchOutput` with N candidates per problem, candidate n = chain * L + position
    (`chain` and `position` say so).
  """
  _check(budget, {"chain_length": chain_length})
  if not settings.attempt_separator:
    raise ValueError("Sequential revisions need SearchSettings.attempt_separator: the tokens "
                     "between attempts, as the revision model was trained with.")
  num_chains = budget // chain_length
  num_problems, width = batch.prompts.shape
  capacity = revision_cache_capacity(width, settings, chain_length)
  cache = batch.policy_cache  # a shared prompt's cache counts its prompt buffer too
  have = getattr(cache, "total_capacity", getattr(cache, "capacity", None))
  if isinstance(have, int) and have < capacity:
    raise ValueError(f"The policy cache holds {have} slots; chains of {chain_length} attempts "
                     f"need {capacity} (`revision_cache_capacity`).")
  t, s = settings.max_solution_tokens, settings.max_steps

  start, _ = prefill(models.policy_fn, models.policy_params, batch.policy_cache, batch.prompts,
                     batch.prompt_lengths, capacity)
  prm_prompts, prm_lengths = batch.prompts, batch.prompt_lengths
  if batch.prm_prompts is not None:
    prm_prompts, prm_lengths = batch.prm_prompts, batch.prm_prompt_lengths
  _, prm_question = models.prm_fn(models.prm_params, prm_prompts, batch.prm_cache, prm_lengths,
                                  step_end=jnp.zeros(prm_prompts.shape, bool))
  prm_scored, prm_context = fr._prm_spent(batch.prm_cache, prm_question, num_problems)
  lengths = batch.prompt_lengths.astype(jnp.float32)
  compute = ComputeRecord(
      policy_generated=jnp.zeros((num_problems,), jnp.float32), policy_prefilled=lengths - 1,
      policy_context=fr._context_sum(jnp.zeros_like(lengths), lengths - 1),
      prm_scored=prm_scored, prm_context=prm_context)

  keys = row_keys(rng, batch.problem_ids, num_chains)
  # B rows are kept; the A-row copy is made where a chain starts from its question.
  question = lambda: start.repeat(num_chains).with_keys(keys)
  rows = num_problems * num_chains
  buffers = dict(
      tokens=jnp.full((rows, chain_length, t), settings.pad_id, jnp.int32),
      step_end=jnp.zeros((rows, chain_length, t), bool),
      lengths=jnp.zeros((rows, chain_length), jnp.int32),
      context=jnp.zeros((rows, chain_length), jnp.int32),  # tokens without EOS
      finished=jnp.zeros((rows, chain_length), bool),
      scores=jnp.zeros((rows, chain_length, s), jnp.float32),
      num_steps=jnp.zeros((rows, chain_length), jnp.int32))

  def next_context(position, state, buffers):
    """The state attempt `position` samples from, and the tokens that cost."""
    def grow(_):
      return _separate(models, state, settings)

    def reread(_):
      return _reread(models, question(), buffers["tokens"], buffers["context"], position,
                     settings)

    def first(_):
      return state, jnp.zeros((rows,), jnp.int32)

    branch = jnp.where(position == 0, 0, jnp.where(position <= MAX_PREVIOUS_ATTEMPTS, 1, 2))
    if chain_length <= MAX_PREVIOUS_ATTEMPTS + 1:  # no chain ever drops an attempt
      return jax.lax.cond(position == 0, first, grow, None)
    return jax.lax.switch(branch, [first, grow, reread], None)

  def body(position, carry):
    state, buffers, compute = carry
    before = state.lengths
    state, ran = next_context(position, state, buffers)
    state = state.replace(finished=jnp.zeros((rows,), bool), prompt_lengths=state.lengths + 1)
    ran_from = jnp.where(position > MAX_PREVIOUS_ATTEMPTS,
                         jnp.repeat(start.lengths, num_chains), before)
    attempt_keys = jax.vmap(lambda k: jax.random.fold_in(k, position))(keys)
    out = sample_steps(models.policy_fn, models.policy_params, state.with_keys(attempt_keys),
                       sampler, max_new_tokens=t, eos_id=settings.eos_id,
                       delimiter=settings.delimiter, max_steps=None,
                       max_step_tokens=settings.max_step_tokens, max_solution_tokens=t,
                       pad_id=settings.pad_id)
    zeros = jnp.zeros((rows,), jnp.int32)
    prm_rows = repeat_rows(prm_question, num_chains)  # every attempt from the question
    scores, prm_after = fr.score_new_tokens(
        models.prm_fn, models.prm_params, out.tokens, prm_rows, out.lengths,
        fr._scored_step_ends(out.step_end, zeros, s), settings.prm_rows_per_pass)
    table = gather_step_scores(scores, out.step_end, s, first_step=zeros, keep_last=True)
    prm_scored, prm_context = fr._prm_spent(prm_rows, prm_after, num_problems)
    spent = ComputeRecord(
        policy_generated=fr._per_problem(out.lengths, num_problems),
        policy_prefilled=fr._per_problem(ran, num_problems),
        policy_context=fr._per_problem(fr._context_sum(ran_from, ran)
                                       + fr._context_sum(state.lengths, out.lengths),
                                       num_problems),
        prm_scored=prm_scored, prm_context=prm_context)
    last = jnp.take_along_axis(out.tokens, jnp.maximum(out.lengths - 1, 0)[:, None], axis=1)[:, 0]
    ended_by_eos = (out.lengths > 0) & (last == settings.eos_id)
    put = lambda name, value: buffers[name].at[:, position].set(value)
    buffers = dict(
        tokens=put("tokens", out.tokens), step_end=put("step_end", out.step_end),
        lengths=put("lengths", out.lengths), context=put("context", out.lengths - ended_by_eos),
        finished=put("finished", out.finished),
        scores=put("scores", jnp.where(table.mask, table.scores, 0.0)),
        num_steps=put("num_steps", out.num_steps))
    return out.state, buffers, compute + spent

  _, buffers, compute = jax.lax.fori_loop(0, chain_length, body, (question(), buffers, compute))
  shape = lambda x: x.reshape(num_problems, budget, *x.shape[2:])
  mask = jnp.arange(s)[None, None, :] < buffers["num_steps"][..., None]
  candidates = jnp.arange(budget, dtype=jnp.int32)
  return SearchOutput(
      tokens=shape(buffers["tokens"]), step_end=shape(buffers["step_end"]),
      lengths=shape(buffers["lengths"]),
      step_scores=shape(jnp.where(mask, buffers["scores"], 0.0)), step_mask=shape(mask),
      finished=shape(buffers["finished"]), compute=compute,
      chain=jnp.broadcast_to(candidates // chain_length, (num_problems, budget)),
      position=jnp.broadcast_to(candidates % chain_length, (num_problems, budget)))


STRATEGY = Strategy(name="revisions", fn=sequential_revisions,
                    hyperparameters={"chain_length": REQUIRED}, check=_check, forks=False,
                    whole_solutions=True, revises=True)
