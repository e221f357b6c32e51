"""The machinery every strategy is built from: start a frontier, grow it by one step,
look ahead, choose how many children each row gets, fork, and finish.

A step-level search is a loop of rounds inside `lax.while_loop`:

    expand (sample one step per open row, score it with the PRM through its cache)
    -> value each row (its step score, or the PRM value after a greedy lookahead)
    -> child counts per row (the strategy's rule)
    -> fork (each open slot continues a parent's caches; finished rows stay put)

Finished rows keep their slot, so the open budget of a problem shrinks as its
solutions end. `step_search` is that loop from prompts to `SearchOutput`; a step-level
strategy is its child-count rule (`ttcjax.search.counts`) and group width. Shapes
follow the glossary of `ttcjax.search.base`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ttcjax.models.cache import SharedPrefixCache, map_rows, repeat_rows
from ttcjax.models.paged import PagedRows
from ttcjax.models.prm import PrmFn, gather_step_scores
from ttcjax.sampling import Sampler, prefill, row_keys, sample_steps
from ttcjax.search.base import (ComputeRecord, Frontier, RoundTrace, SearchBatch, SearchModels,
                                SearchOutput, SearchSettings, cache_capacity, prm_cache_lengths)
from ttcjax.search.counts import ChildCountFn, assign_parents


def _context_sum(start: jax.Array, count: jax.Array) -> jax.Array:
  """Sum of attended context over `count` tokens appended at positions start, start+1, ...

  The token at position p attends to p + 1 positions (itself included).
  """
  start, count = start.astype(jnp.float32), count.astype(jnp.float32)
  return count * start + count * (count + 1) / 2


def _per_problem(values: jax.Array, num_problems: int) -> jax.Array:
  """[R] -> [B] sums over each problem's rows."""
  return values.astype(jnp.float32).reshape(num_problems, -1).sum(axis=1)


def _prm_spent(before, after, num_problems: int) -> tuple[jax.Array, jax.Array]:
  """([B] PRM tokens run, [B] their attended context) from its cache's fill levels.

  Read from the cache rather than from the policy's tokens: a PRM adapter strips
  delimiters and adds suffixes, and its prompt differs from the policy's. The tokens
  a call runs sit at consecutive positions from the old fill level on.
  """
  before = prm_cache_lengths(before)
  ran = prm_cache_lengths(after) - before
  return (_per_problem(ran, num_problems),
          _per_problem(_context_sum(before, ran), num_problems))


def _scored_step_ends(step_end: jax.Array, first_step: jax.Array, max_steps: int) -> jax.Array:
  """[R, K] the step ends the PRM is told of: those the S-column table keeps.

  The table keeps steps 0..S-2 and, in column S-1, a row's last step (`keep_last`),
  so a PRM that lays steps out itself needs at most S step ends per chunk. Ends in
  between are not passed: such a PRM reads the steps from S-1 to the last as one
  (a plain PRM ignores `step_end`). Beam rounds end one step per chunk, always kept.
  """
  seen = jnp.cumsum(step_end, axis=1)
  is_last = step_end & (seen == seen[:, -1:])
  return step_end & ((first_step[:, None] + seen - 1 < max_steps - 1) | is_last)


def num_prm_slices(rows: int, rows_per_pass: int, rows_per_prompt: int | None = None) -> int:
  """How many slices a PRM pass over `rows` rows runs in: the fewest that divide the
  rows and hold at most `rows_per_pass` each (0: one pass).

  With a shared prompt (`rows_per_prompt`, n rows read each) a slice must take the
  same rows from every problem, so the count divides n; when even n slices hold more
  than `rows_per_pass` rows (more problems than that), the pass runs in n slices.
  """
  if not rows_per_pass or rows <= rows_per_pass:
    return 1
  if rows_per_prompt is not None:
    fits = [s for s in range(1, rows_per_prompt + 1)
            if rows_per_prompt % s == 0 and rows // s <= rows_per_pass]
    return fits[0] if fits else rows_per_prompt
  return next(s for s in range(-(-rows // rows_per_pass), rows + 1) if rows % s == 0)


def _is_paged(cache) -> bool:
  return any(isinstance(x, SharedPrefixCache) and isinstance(x.rows, PagedRows)
             for x in jax.tree.leaves(cache, is_leaf=lambda x: isinstance(x, SharedPrefixCache)))


def rows_per_prompt(cache) -> int | None:
  """n of the first shared prompt in a cache pytree (None: nothing is shared)."""
  shared = [x for x in jax.tree.leaves(cache, is_leaf=lambda x: isinstance(x, SharedPrefixCache))
            if isinstance(x, SharedPrefixCache) and x.is_shared]
  return shared[0].rows_per_prefix if shared else None


def _in_slices(fn, slices: int, tokens, cache, num_new, step_end):
  """fn(tokens, cache, num_new, step_end) -> (scores, cache) over row slices in turn.

  Slice i holds rows i, i + slices, i + 2 slices, ...: strided, so that rows sharded
  over the mesh's data axis in contiguous blocks give every slice the same number of
  rows on each device and no slice moves rows between devices, as long as the number
  of slices divides each device's rows (power-of-two budgets do; otherwise the result
  is the same and XLA moves rows). Every cache leaf has rows first (`KVCache`). The
  cache is updated in place slice by slice (the loop carries it).
  """
  rows = tokens.shape[0]
  view = lambda x: x.reshape((rows // slices, slices) + x.shape[1:])
  take = lambda x, i: jax.lax.dynamic_index_in_dim(view(x), i, axis=1, keepdims=False)
  put = lambda full, part, i: jax.lax.dynamic_update_index_in_dim(
      view(full), part, i, axis=1).reshape(full.shape)

  def body(i, carry):
    scores, full_cache = carry
    part_scores, part_cache = fn(take(tokens, i), map_rows(lambda x: take(x, i), full_cache),
                                 take(num_new, i), take(step_end, i))
    return (put(scores, part_scores.astype(scores.dtype), i),
            map_rows(lambda f, p: put(f, p, i), full_cache, part_cache))

  scores = jnp.zeros(tokens.shape, jnp.float32)
  return jax.lax.fori_loop(0, slices, body, (scores, cache))


def score_new_tokens(prm_fn: PrmFn, prm_params, tokens: jax.Array, cache, num_new: jax.Array,
                     step_end: jax.Array, rows_per_pass: int = 0) -> tuple[jax.Array, object]:
  """`prm_fn` over a chunk of new tokens, run at half the chunk's width when every row
  fits in it, and over at most `rows_per_pass` rows at a time when that is set.

  A round's steps are usually far shorter than the step cap the chunk is sized for
  (9 tokens on average against 32 on the testbed), and the PRM's cost grows with the
  width it runs; both widths are compiled and `lax.switch` picks one at run time.
  Not with paged rows: XLA copies the page pools out of the conditional (measured:
  one more copy of the PRM's caches per round's peak), so they run at full width.
  Positions past a row's `num_new` are never read, so the result is the same; so is
  it in slices, as rows never read each other.

  Args:
    tokens: [R, K] new tokens; num_new: [R]; step_end: [R, K] (see `PrmFn`).
    rows_per_pass: `SearchSettings.prm_rows_per_pass`.

  Returns:
    (scores [R, K], the updated cache), as `prm_fn` returns them.
  """
  width = tokens.shape[1]
  widths = (width // 2, width) if width >= 2 and not _is_paged(cache) else (width,)
  slices = num_prm_slices(tokens.shape[0], rows_per_pass, rows_per_prompt(cache))

  def run(w):
    def score(t, c, n, e):
      return prm_fn(prm_params, t[:, :w], c, n, step_end=e[:, :w])

    def call(_):
      if slices == 1:
        scores, new_cache = score(tokens, cache, num_new, step_end)
      else:
        scores, new_cache = _in_slices(score, slices, tokens[:, :w], cache, num_new,
                                       step_end[:, :w])
      return jnp.pad(scores, ((0, 0), (0, width - w))), new_cache
    return call

  narrowest = jnp.searchsorted(jnp.asarray(widths), jnp.max(num_new))
  return jax.lax.switch(jnp.minimum(narrowest, len(widths) - 1), [run(w) for w in widths], None)


def init_frontier(models: SearchModels, batch: SearchBatch, num_rows: int, rng: jax.Array,
                  settings: SearchSettings) -> Frontier:
  """Runs each prompt once through the policy and the PRM and shares it with N rows.

  Args:
    models: the policy and the PRM (prefilled with `batch.prm_prompts` when given).
    batch: the B problems and their empty caches.
    num_rows: N, static; the strategy's budget (a positive number of rows).
    rng: key for the rows' slot keys (not consumed).
    settings: the search's caps.
  """
  if num_rows < 1:
    raise ValueError(f"budget must be a positive number of samples, got {num_rows}.")
  prompts, prompt_lengths = batch.prompts, batch.prompt_lengths
  num_problems, width = prompts.shape
  state, _ = prefill(models.policy_fn, models.policy_params, batch.policy_cache, prompts,
                     prompt_lengths, cache_capacity(width, settings))
  prm_prompts, prm_lengths = prompts, prompt_lengths
  if batch.prm_prompts is not None:
    prm_prompts, prm_lengths = batch.prm_prompts, batch.prm_prompt_lengths
  # A prompt ends no step: an adapter's PrmFn then adds no suffix to it.
  _, prm_cache = models.prm_fn(models.prm_params, prm_prompts, batch.prm_cache, prm_lengths,
                               step_end=jnp.zeros(prm_prompts.shape, bool))
  prm_scored, prm_context = _prm_spent(batch.prm_cache, prm_cache, num_problems)
  lengths = prompt_lengths.astype(jnp.float32)
  compute = ComputeRecord(
      policy_generated=jnp.zeros((num_problems,), jnp.float32),
      policy_prefilled=lengths - 1,
      policy_context=_context_sum(jnp.zeros_like(lengths), lengths - 1),
      prm_scored=prm_scored,
      prm_context=prm_context)
  keys = row_keys(rng, batch.problem_ids, num_rows)
  rows = num_problems * num_rows
  buffer = 2 * settings.max_solution_tokens  # room for a T-wide write at any offset below T
  return Frontier(
      policy=state.repeat(num_rows).with_keys(keys),
      prm_cache=repeat_rows(prm_cache, num_rows),
      tokens=jnp.full((rows, buffer), settings.pad_id, jnp.int32),
      step_end=jnp.zeros((rows, buffer), bool),
      lengths=jnp.zeros((rows,), jnp.int32),
      step_scores=jnp.zeros((rows, settings.max_steps), jnp.float32),
      num_steps=jnp.zeros((rows,), jnp.int32),
      slot_keys=keys,
      compute=compute)


def _write_at(buffer: jax.Array, new: jax.Array, offsets: jax.Array) -> jax.Array:
  """Writes new[r] into buffer[r] starting at offsets[r] ([R, X], [R, W], [R])."""
  return jax.vmap(lambda b, n, o: jax.lax.dynamic_update_slice(b, n, (o,)))(buffer, new, offsets)


def _round_keys(frontier: Frontier, round_index) -> jax.Array:
  return jax.vmap(lambda k: jax.random.fold_in(k, round_index))(frontier.slot_keys)


def expand(frontier: Frontier, models: SearchModels, sampler: Sampler, settings: SearchSettings,
           round_index: jax.Array, max_steps: int | None = 1) -> tuple[Frontier, jax.Array]:
  """Samples `max_steps` more steps (None: to the end) on every open row and scores
  each new step with the PRM, which reads only the new tokens through its cache.

  Returns:
    (the grown frontier, [R] the score of each row's newest step; rows that did
    not grow keep their previous last score).
  """
  state = frontier.policy.with_keys(_round_keys(frontier, round_index))
  budget = settings.max_step_tokens if max_steps == 1 else settings.max_solution_tokens
  out = sample_steps(models.policy_fn, models.policy_params, state, sampler, max_new_tokens=budget,
                     eos_id=settings.eos_id, delimiter=settings.delimiter, max_steps=max_steps,
                     max_step_tokens=settings.max_step_tokens,
                     max_solution_tokens=settings.max_solution_tokens, pad_id=settings.pad_id)
  new = out.lengths
  scores, prm_cache = score_new_tokens(
      models.prm_fn, models.prm_params, out.tokens, frontier.prm_cache, new,
      _scored_step_ends(out.step_end, frontier.num_steps, settings.max_steps),
      settings.prm_rows_per_pass)
  table = gather_step_scores(scores, out.step_end, settings.max_steps, first_step=frontier.num_steps,
                             keep_last=True)
  newest = jnp.take_along_axis(scores, jnp.maximum(new - 1, 0)[:, None], axis=1)[:, 0]
  b = frontier.compute.policy_generated.shape[0]
  prm_scored, prm_context = _prm_spent(frontier.prm_cache, prm_cache, b)
  spent = ComputeRecord(
      policy_generated=_per_problem(new, b), policy_prefilled=jnp.zeros((b,), jnp.float32),
      policy_context=_per_problem(_context_sum(frontier.policy.lengths, new), b),
      prm_scored=prm_scored, prm_context=prm_context)
  grown = frontier.replace(
      policy=out.state.with_keys(frontier.slot_keys), prm_cache=prm_cache,
      tokens=_write_at(frontier.tokens, out.tokens, frontier.lengths),
      step_end=_write_at(frontier.step_end, out.step_end, frontier.lengths),
      lengths=frontier.lengths + new,
      step_scores=jnp.where(table.mask, table.scores, frontier.step_scores),
      num_steps=frontier.num_steps + out.num_steps, compute=frontier.compute + spent)
  return grown, jnp.where(new > 0, newest, last_step_score(frontier))


def last_step_score(frontier: Frontier) -> jax.Array:
  """[R] the score of each row's latest step (0 before the first)."""
  column = jnp.clip(frontier.num_steps - 1, 0, frontier.step_scores.shape[1] - 1)
  last = jnp.take_along_axis(frontier.step_scores, column[:, None], axis=1)[:, 0]
  return jnp.where(frontier.num_steps > 0, last, 0.0)


def lookahead_values(frontier: Frontier, step_scores: jax.Array, models: SearchModels,
                     settings: SearchSettings, num_steps: int) -> tuple[jax.Array, ComputeRecord]:
  """The PRM's value after rolling each open row out `num_steps` more steps greedily.

  The rollout runs on copies of the caches and is thrown away; only its value and
  its cost are kept. Rows that are finished (no rollout) keep `step_scores`.

  Returns:
    (values [R], the rollout's per-problem `ComputeRecord`).
  """
  out = sample_steps(models.policy_fn, models.policy_params, frontier.policy, Sampler.greedy(),
                     max_new_tokens=num_steps * settings.max_step_tokens, eos_id=settings.eos_id,
                     delimiter=settings.delimiter, max_steps=num_steps,
                     max_step_tokens=settings.max_step_tokens,
                     max_solution_tokens=settings.max_solution_tokens, pad_id=settings.pad_id)
  # At most k steps: an adapter wrapped for k steps per chunk gives each its suffix.
  scores, rollout_cache = score_new_tokens(models.prm_fn, models.prm_params, out.tokens,
                                           frontier.prm_cache, out.lengths, out.step_end,
                                           settings.prm_rows_per_pass)
  value = jnp.take_along_axis(scores, jnp.maximum(out.lengths - 1, 0)[:, None], axis=1)[:, 0]
  b = frontier.compute.policy_generated.shape[0]
  prm_scored, prm_context = _prm_spent(frontier.prm_cache, rollout_cache, b)
  spent = ComputeRecord(
      policy_generated=_per_problem(out.lengths, b), policy_prefilled=jnp.zeros((b,), jnp.float32),
      policy_context=_per_problem(_context_sum(frontier.policy.lengths, out.lengths), b),
      prm_scored=prm_scored, prm_context=prm_context)
  return jnp.where(out.lengths > 0, value, step_scores), spent


def fork(frontier: Frontier, parents: jax.Array) -> Frontier:
  """Each row continues row `parents[b, n]` of its own problem ([B, N] int32).

  Caches and buffers are gathered within each problem (no recomputation, and no
  row moves between problems, so a problem-sharded batch stays local). Slot keys
  and the compute record stay with the slot.
  """
  num_problems, per_problem = parents.shape

  def take(x):
    grouped = x.reshape(num_problems, per_problem, *x.shape[1:])
    index = parents.reshape(num_problems, per_problem, *([1] * (x.ndim - 1)))
    return jnp.take_along_axis(grouped, index, axis=1).reshape(x.shape)

  moved = frontier.replace(slot_keys=None, compute=None)
  moved = map_rows(take, moved)  # a shared prompt stays where it is
  return moved.replace(slot_keys=frontier.slot_keys, compute=frontier.compute)


def run_rounds(frontier: Frontier, child_counts: ChildCountFn, group_size: int,
               models: SearchModels, sampler: Sampler, settings: SearchSettings,
               lookahead_steps: int = 0) -> tuple[Frontier, RoundTrace | None]:
  """Grows the frontier round by round until every row is finished or the round cap.

  Args:
    frontier: from `init_frontier`, N rows per problem.
    child_counts: the strategy's rule, applied to groups of `group_size` rows.
    group_size: U, dividing N.
    lookahead_steps: k > 0 values each new step by a greedy k-step rollout.

  Returns:
    (the final frontier, its `RoundTrace` when `settings.trace_rounds`, else None).
  """
  num_problems = frontier.compute.policy_generated.shape[0]
  per_problem = frontier.num_rows // num_problems
  if group_size < 1 or per_problem % group_size:
    raise ValueError(f"group_size {group_size} must divide the {per_problem} rows per problem.")

  def cond(carry):
    round_index, fr, _ = carry
    return (round_index < settings.max_rounds) & ~jnp.all(fr.finished)

  def body(carry):
    round_index, fr, trace = carry
    grew = ~fr.finished
    fr, values = expand(fr, models, sampler, settings, round_index)
    if lookahead_steps > 0:
      values, spent = lookahead_values(fr, values, models, settings, lookahead_steps)
      # The paper scores the step with the value at the end of its rollout.
      column = jnp.clip(fr.num_steps - 1, 0, settings.max_steps - 1)
      keep = fr.num_steps > 0
      rows = jnp.arange(fr.num_rows)
      fr = fr.replace(step_scores=fr.step_scores.at[rows, column].set(
          jnp.where(keep, values, fr.step_scores[rows, column])), compute=fr.compute + spent)
    open_rows = ~fr.finished
    counts = child_counts(values.reshape(-1, group_size), open_rows.reshape(-1, group_size))
    parents = assign_parents(counts, open_rows.reshape(-1, group_size))
    group_offsets = (jnp.arange(parents.shape[0]) % (fr.num_rows // num_problems // group_size)
                     ) * group_size
    parents = (parents + group_offsets[:, None]).reshape(num_problems, -1)
    if trace is not None:
      at = lambda buffer, row: buffer.at[round_index].set(row)
      trace = trace.replace(
          rounds=round_index + 1, grew=at(trace.grew, grew),
          tokens=at(trace.tokens, fr.tokens[:, :trace.tokens.shape[2]]),
          lengths=at(trace.lengths, fr.lengths), values=at(trace.values, values),
          finished=at(trace.finished, fr.finished),
          children=at(trace.children, counts.reshape(-1)),
          parents=at(trace.parents, parents.reshape(-1)))
    return round_index + 1, fork(fr, parents), trace

  trace = None
  if settings.trace_rounds:
    trace = RoundTrace.zeros(settings.max_rounds, frontier.num_rows, settings.max_solution_tokens)
  _, frontier, trace = jax.lax.while_loop(cond, body, (jnp.int32(0), frontier, trace))
  return frontier, trace


def step_search(models: SearchModels, batch: SearchBatch, rng: jax.Array, sampler: Sampler,
                settings: SearchSettings, *, budget: int, child_counts: ChildCountFn,
                group_size: int, lookahead_steps: int = 0) -> SearchOutput:
  """A step-level search from prompts to candidates: `init_frontier`, `run_rounds`
  with the strategy's rule over groups of `group_size` rows, and `finish`.

  Args:
    models, batch, rng, sampler, settings: as every strategy takes them.
    budget: N rows per problem, static.
    child_counts, group_size, lookahead_steps: see `run_rounds`.
  """
  frontier = init_frontier(models, batch, budget, rng, settings)
  frontier, trace = run_rounds(frontier, child_counts, group_size, models, sampler, settings,
                               lookahead_steps=lookahead_steps)
  return finish(frontier, batch.num_problems, settings).replace(trace=trace)


def finish(frontier: Frontier, num_problems: int, settings: SearchSettings) -> SearchOutput:
  """The frontier as a `SearchOutput` ([B, N, ...])."""
  t = settings.max_solution_tokens
  shape = lambda x: x.reshape(num_problems, -1, *x.shape[1:])
  mask = jnp.arange(settings.max_steps)[None, :] < frontier.num_steps[:, None]
  lengths = shape(frontier.lengths)
  candidates = jnp.broadcast_to(jnp.arange(lengths.shape[1], dtype=jnp.int32), lengths.shape)
  return SearchOutput(
      tokens=shape(frontier.tokens[:, :t]), step_end=shape(frontier.step_end[:, :t]),
      lengths=lengths, step_scores=shape(jnp.where(mask, frontier.step_scores, 0.0)),
      step_mask=shape(mask), finished=shape(frontier.finished), compute=frontier.compute,
      chain=candidates, position=jnp.zeros_like(candidates))
