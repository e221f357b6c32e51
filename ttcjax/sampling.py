"""Prefill, step-level sampling and cache forking; every function is jittable.

The policy enters as a `DecodeFn` (a pure callable plus its params), so the same
loop drives the Llama-family transformer and the ten-line fakes of the tests.

A `DecodeState` holds a batch of R rows (R = B * N for B problems with N samples
each, row b * N + n). Its cache holds every token of a row except the last one, the
"pending" token: the next forward pass consumes the pending token and yields the
distribution of the token after it. Keeping one token pending lets a state be forked
(beam search), extended by forced tokens, or sampled from without ever carrying a
[R, V] logits buffer.

`sample_steps` runs one `lax.while_loop` that generates until each row has finished
`max_steps` reasoning steps, emitted EOS, hit a cap, or the output buffer is full.
Step ends are found through `StepDelimiter`, a per-token automaton table built once
from the tokenizer: a delimiter such as "\\n\\n" may be a token of its own, sit
inside a merged BPE token (".\\n\\n"), or be split over two tokens ("\\n" + "\\n").

Randomness is per row: the token at position p of a row is drawn with
fold_in(row_key, p), so a row's samples do not depend on which other rows share its
batch, nor on how generation is split into calls.
"""

from __future__ import annotations

from typing import Any, Protocol

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.cache import map_rows, repeat_rows
from ttcjax.models.config import TransformerConfig
from ttcjax.models.tokenizer import Tokenizer
from ttcjax.models.transformer import forward

Cache = Any  # any pytree whose leaves all have the row dimension first


class DecodeFn(Protocol):
  """A policy as a pure function.

  Args:
    params: the policy's parameters.
    tokens: [R, K] int32 tokens to append to each row.
    cache: the rows' cache (any pytree with R leading rows).
    num_new: [R] int32, how many of each row's K tokens are valid (0 = untouched).

  Returns:
    (logits [R, V] float32 after each row's last valid token, updated cache).
  """

  def __call__(self, params, tokens: jax.Array, cache: Cache,
               num_new: jax.Array) -> tuple[jax.Array, Cache]: ...


def transformer_decode_fn(config: TransformerConfig) -> DecodeFn:
  """The `DecodeFn` of a ttcjax transformer with a `KVCache`."""

  def decode(params, tokens, cache, num_new):
    out = forward(params, config, tokens, cache, num_new, logits="last")
    return out.logits, out.cache

  return decode


@flax.struct.dataclass
class Sampler:
  """How to draw a token from logits.

  Attributes:
    temperature: scalar; 0 means greedy (argmax).
    top_p: scalar nucleus mass in (0, 1]; 1 disables it.
    top_k: static int; 0 disables it.
  """

  temperature: float | jax.Array = 1.0
  top_p: float | jax.Array = 1.0
  top_k: int = flax.struct.field(pytree_node=False, default=0)

  @classmethod
  def greedy(cls) -> "Sampler":
    return cls(temperature=0.0)

  def check(self) -> "Sampler":
    """Raises ValueError for settings that cannot be sampled from (host values only)."""
    if not isinstance(self.top_k, int) or self.top_k < 0:
      raise ValueError(f"top_k must be a non-negative int, got {self.top_k!r}.")
    for name, low, high in (("temperature", 0.0, np.inf), ("top_p", 0.0, 1.0)):
      value = getattr(self, name)
      if not isinstance(value, jax.core.Tracer):
        value = float(np.asarray(value))
        if not low <= value <= high or (name == "top_p" and value == 0.0):
          raise ValueError(f"Sampler.{name}={value} is out of range.")
    return self

  def filtered_logits(self, logits: jax.Array) -> jax.Array:
    """Logits [R, V] after temperature, top-k and top-p (masked entries -inf).

    Greedy (temperature 0) returns the logits unchanged.
    """
    logits = logits.astype(jnp.float32)
    temperature = jnp.asarray(self.temperature, jnp.float32)
    logits = logits / jnp.where(temperature > 0, temperature, 1.0)
    if self.top_k:
      kth = jax.lax.top_k(logits, min(self.top_k, logits.shape[-1]))[0][..., -1:]
      logits = jnp.where(logits >= kth, logits, -jnp.inf)
    top_p = jnp.asarray(self.top_p, jnp.float32)

    def nucleus(logits):
      # Keep the smallest set of most likely tokens whose mass reaches top_p.
      probs = jax.nn.softmax(logits, axis=-1)
      sorted_probs = -jnp.sort(-probs, axis=-1)
      mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
      kept = mass_before < top_p
      threshold = jnp.min(jnp.where(kept, sorted_probs, jnp.inf), axis=-1, keepdims=True)
      return jnp.where(probs >= threshold, logits, -jnp.inf)

    return jax.lax.cond(top_p < 1.0, nucleus, lambda x: x, logits)

  def sample(self, logits: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Draws one token per row by inverting the CDF with the given uniforms.

    One uniform per row is far cheaper than a Gumbel variate per vocabulary entry,
    and the CDF is built in two levels (block sums, then one block) because a
    cumulative sum over a whole large vocabulary is slow on CPU.

    Args:
      logits: [R, V].
      uniforms: [R] in [0, 1).

    Returns:
      [R] int32 tokens.
    """
    def draw(logits):
      filtered = self.filtered_logits(logits)
      weights = jnp.exp(filtered - jnp.max(filtered, axis=-1, keepdims=True))
      return _inverse_cdf(weights, uniforms)

    def greedy(logits):
      # The first index of the maximum; XLA's CPU argmax over a large vocabulary is
      # about twice as slow as a max followed by this min.
      best = jnp.max(logits, axis=-1, keepdims=True)
      index = jnp.arange(logits.shape[-1], dtype=jnp.int32)
      return jnp.min(jnp.where(logits == best, index, logits.shape[-1]), axis=-1)

    return jax.lax.cond(jnp.asarray(self.temperature) > 0, draw, greedy, logits)


_CDF_BLOCK = 256


def _inverse_cdf(weights: jax.Array, uniforms: jax.Array) -> jax.Array:
  """Index i with cdf[i-1] <= u * total < cdf[i] for unnormalised weights [R, V] >= 0."""
  rows, vocab = weights.shape
  num_blocks = -(-vocab // _CDF_BLOCK)
  padded = jnp.pad(weights, ((0, 0), (0, num_blocks * _CDF_BLOCK - vocab)))
  blocks = padded.reshape(rows, num_blocks, _CDF_BLOCK)
  block_cdf = jnp.cumsum(jnp.sum(blocks, axis=-1), axis=-1)  # [R, num_blocks]
  target = uniforms * block_cdf[:, -1]
  # Rounding can push the target to the very end: clamp to the last non-empty block.
  last_block = jnp.max(jnp.where(block_cdf[:, :] > jnp.concatenate(
      [jnp.zeros((rows, 1)), block_cdf[:, :-1]], axis=1), jnp.arange(num_blocks), 0), axis=-1)
  block = jnp.minimum(jnp.sum(block_cdf <= target[:, None], axis=-1), last_block)
  before = jnp.where(block > 0, jnp.take_along_axis(
      block_cdf, jnp.maximum(block - 1, 0)[:, None], axis=1)[:, 0], 0.0)
  inner = jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0]  # [R, BLOCK]
  inner_cdf = jnp.cumsum(inner, axis=-1)
  last_nonzero = jnp.max(jnp.where(inner > 0, jnp.arange(_CDF_BLOCK), 0), axis=-1)
  index = jnp.minimum(jnp.sum(inner_cdf <= (target - before)[:, None], axis=-1), last_nonzero)
  return (block * _CDF_BLOCK + index).astype(jnp.int32)


@flax.struct.dataclass
class StepDelimiter:
  """A per-token automaton that finds a step delimiter in token streams.

  State s in [0, m) means the text so far ends with the delimiter's first s
  characters (Knuth-Morris-Pratt). Reading token v from state s moves to
  `next_state[s, v]`; `completes[s, v]` says the delimiter ended inside v, which
  ends the step after v.

  Attributes:
    next_state: [m, V] int32.
    completes: [m, V] bool.
  """

  next_state: jax.Array
  completes: jax.Array

  @classmethod
  def build(cls, tokenizer: Tokenizer, delimiter: str = "\n\n",
            vocab_size: int | None = None) -> "StepDelimiter":
    """Precomputes the table for every token of `tokenizer`.

    Args:
      tokenizer: supplies `token_text(id)` for ids [0, vocab_size).
      delimiter: the text that ends a reasoning step.
      vocab_size: table width (the model's vocabulary, which may exceed the
        tokenizer's); ids the tokenizer lacks never match.
    """
    if not delimiter:
      raise ValueError("The step delimiter must be a non-empty string.")
    vocab_size = vocab_size or tokenizer.vocab_size
    m = len(delimiter)
    failure = [0] * m  # KMP failure function
    k = 0
    for i in range(1, m):
      while k and delimiter[i] != delimiter[k]:
        k = failure[k - 1]
      if delimiter[i] == delimiter[k]:
        k += 1
      failure[i] = k

    def step(state, ch):
      while state and ch != delimiter[state]:
        state = failure[state - 1]
      return state + 1 if ch == delimiter[state] else state

    next_state = np.zeros((m, vocab_size), np.int32)
    completes = np.zeros((m, vocab_size), bool)
    memo: dict[tuple[int, str], tuple[int, bool]] = {}
    for token in range(vocab_size):
      text = tokenizer.token_text(token) if token < tokenizer.vocab_size else ""
      for start in range(m):
        key = (start, text)
        if key not in memo:
          state, done = start, False
          for ch in text:
            state = step(state, ch)
            if state == m:
              done, state = True, 0  # the rest of the token opens the next step
          memo[key] = (state, done)
        next_state[start, token], completes[start, token] = memo[key]
    return cls(next_state=jnp.asarray(next_state), completes=jnp.asarray(completes))


@flax.struct.dataclass
class DecodeState:
  """R rows being decoded. Row b * N + n is sample n of problem b.

  Attributes:
    cache: the policy's cache holding every token but the pending one.
    pending: [R] int32 last token of each row, not yet in the cache.
    lengths: [R] int32 tokens in the cache (the pending token sits at this position).
    prompt_lengths: [R] int32 prompt tokens, pending included at prefill.
    finished: [R] bool, the row emitted EOS or reached a cap; it never grows again.
    delimiter_state: [R] int32 `StepDelimiter` automaton state.
    step_tokens: [R] int32 tokens of the step under way.
    keys: [R, 2] uint32 per-row PRNG keys.
    max_length: static; rows stop (finished) when a row's sequence reaches it.
  """

  cache: Cache
  pending: jax.Array
  lengths: jax.Array
  prompt_lengths: jax.Array
  finished: jax.Array
  delimiter_state: jax.Array
  step_tokens: jax.Array
  keys: jax.Array
  max_length: int = flax.struct.field(pytree_node=False)

  @property
  def num_rows(self) -> int:
    return self.pending.shape[0]

  @property
  def solution_lengths(self) -> jax.Array:
    """[R] tokens generated after the prompt (the pending token included)."""
    return self.lengths + 1 - self.prompt_lengths

  def gather(self, rows: jax.Array) -> "DecodeState":
    """Forks rows: row i of the result continues row `rows[i]` ([R'] int32).

    With a `SharedPrefixCache` every row must stay with its own problem's prompt.
    """
    return map_rows(lambda x: jnp.take(x, rows, axis=0), self)

  def repeat(self, num_copies: int) -> "DecodeState":
    """Each row to `num_copies` consecutive rows (b -> b * n + j); keys unchanged.

    A `SharedPrefixCache` is shared instead of copied (`repeat_rows`).
    """
    return repeat_rows(self, num_copies)

  def with_keys(self, keys: jax.Array) -> "DecodeState":
    chex.assert_shape(keys, (self.num_rows, 2))
    return self.replace(keys=keys)


def row_keys(rng: jax.Array, problem_ids: jax.Array, num_samples: int) -> jax.Array:
  """Per-row keys [B * N, 2] that depend only on (rng, problem id, sample index).

  Args:
    rng: a PRNG key (not consumed; the same rng gives the same keys).
    problem_ids: [B] int32 stable identifiers of the problems.
    num_samples: N.
  """
  def per_problem(pid):
    base = jax.random.fold_in(rng, pid)
    return jax.vmap(lambda n: jax.random.fold_in(base, n))(jnp.arange(num_samples))

  keys = jax.vmap(per_problem)(problem_ids)
  if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):  # a new-style jax.random.key
    keys = jax.random.key_data(keys)
  return keys.reshape(-1, 2)


def prefill(decode_fn: DecodeFn, params, cache: Cache, prompts: jax.Array,
            prompt_lengths: jax.Array, max_length: int) -> tuple[DecodeState, jax.Array]:
  """Runs each prompt once through the policy.

  Args:
    decode_fn: the policy.
    params: its params.
    cache: an empty cache with B rows and room for `max_length` tokens.
    prompts: [B, P] right-padded prompt tokens.
    prompt_lengths: [B] int32 valid tokens per prompt (>= 1).
    max_length: static cap on any row's total length (the cache capacity).

  Returns:
    (a `DecodeState` with B rows and zero keys (set them with `with_keys` or
    `repeat` then `with_keys`), the number of tokens run through the policy).
  """
  batch, width = prompts.shape
  chex.assert_shape(prompt_lengths, (batch,))
  if width > max_length:
    raise ValueError(
        f"Prompts of {width} tokens do not fit max_length={max_length}; raise the cache "
        "capacity or shorten the prompts.")
  if not isinstance(prompt_lengths, jax.core.Tracer):
    lengths = np.asarray(prompt_lengths)
    if lengths.min() < 1 or lengths.max() > width:
      raise ValueError(
          f"prompt_lengths must lie in [1, {width}] (the padded width), got "
          f"{lengths.min()}..{lengths.max()}.")
  prompt_lengths = prompt_lengths.astype(jnp.int32)
  _, cache = decode_fn(params, prompts, cache, prompt_lengths - 1)
  pending = jnp.take_along_axis(prompts, (prompt_lengths - 1)[:, None], axis=1)[:, 0]
  zeros = jnp.zeros((batch,), jnp.int32)
  state = DecodeState(
      cache=cache, pending=pending.astype(jnp.int32), lengths=prompt_lengths - 1,
      prompt_lengths=prompt_lengths, finished=jnp.zeros((batch,), bool),
      delimiter_state=zeros, step_tokens=zeros,
      keys=jnp.zeros((batch, 2), jnp.uint32), max_length=max_length)
  return state, jnp.sum(prompt_lengths - 1)


def append_tokens(decode_fn: DecodeFn, params, state: DecodeState, tokens: jax.Array,
                  num_new: jax.Array) -> tuple[DecodeState, jax.Array]:
  """Forces tokens onto rows (e.g. a step a search chose, or a separator).

  Args:
    decode_fn, params: the policy.
    state: R rows.
    tokens: [R, K] tokens to append after each row's pending token.
    num_new: [R] how many of them are valid; the last becomes the new pending token.

  Returns:
    (the new state, tokens run through the policy). Step-tracking fields are reset
    (a forced chunk is assumed to end on a step boundary or to start one).
  """
  chex.assert_shape(tokens, (state.num_rows, None))
  num_new = num_new.astype(jnp.int32)
  chunk = jnp.concatenate([state.pending[:, None], tokens.astype(jnp.int32)], axis=1)
  _, cache = decode_fn(params, chunk[:, :-1], state.cache, num_new)
  pending = jnp.take_along_axis(chunk, num_new[:, None], axis=1)[:, 0]
  zeros = jnp.zeros_like(state.step_tokens)
  return state.replace(cache=cache, pending=pending, lengths=state.lengths + num_new,
                       delimiter_state=zeros, step_tokens=zeros), jnp.sum(num_new)


@flax.struct.dataclass
class SampleOutput:
  """What one `sample_steps` call generated. R rows, K = max_new_tokens.

  Attributes:
    tokens: [R, K] int32 generated tokens, `pad_id` past each row's length.
    log_probs: [R, K] float32 log-probability of each token under the policy at
      temperature 1 (no truncation); 0 past the length.
    lengths: [R] int32 tokens generated by this call.
    step_end: [R, K] bool, True at the last token of each step (EOS ends a step).
    num_steps: [R] int32 steps completed by this call.
    finished: [R] bool, the row is done for good (EOS, a length cap).
    state: the state to continue from.
    num_generated: scalar int32, tokens sampled (each cost one policy forward).
  """

  tokens: jax.Array
  log_probs: jax.Array
  lengths: jax.Array
  step_end: jax.Array
  num_steps: jax.Array
  finished: jax.Array
  state: DecodeState
  num_generated: jax.Array


def sample_steps(decode_fn: DecodeFn, params, state: DecodeState, sampler: Sampler, *,
                 max_new_tokens: int, eos_id: int, delimiter: StepDelimiter | None = None,
                 max_steps: int | None = 1, max_step_tokens: int | None = None,
                 max_solution_tokens: int | None = None, pad_id: int = 0) -> SampleOutput:
  """Samples until every row ends `max_steps` steps, finishes, or K tokens are out.

  Args:
    decode_fn, params: the policy.
    state: R rows to continue (keys set per row).
    sampler: temperature / top-k / top-p.
    max_new_tokens: static K, the output buffer and the call's token cap.
    eos_id: the token that ends a solution.
    delimiter: step-end table; None means steps end only at EOS.
    max_steps: static; stop a row after this many completed steps (None: no limit).
    max_step_tokens: a step reaching this many tokens is ended there (None: no cap).
    max_solution_tokens: a row whose solution reaches this many tokens finishes.
    pad_id: filler of `tokens` past each row's length.

  Returns:
    A `SampleOutput`.
  """
  rows = state.num_rows
  if max_new_tokens <= 0:
    raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}.")
  if max_steps is not None and max_steps <= 0:
    raise ValueError(f"max_steps must be positive or None, got {max_steps}.")
  step_cap = jnp.int32(max_step_tokens or np.iinfo(np.int32).max)
  solution_cap = jnp.int32(max_solution_tokens or np.iinfo(np.int32).max)
  steps_cap = jnp.int32(max_steps or np.iinfo(np.int32).max)
  # A row already holding max_length tokens (a prompt or forced tokens filled it) is
  # done: sampling it would put a token past the cache's capacity.
  state = state.replace(finished=state.finished | (state.lengths + 1 >= state.max_length))

  def active_rows(st: DecodeState, steps_done):
    return ~st.finished & (steps_done < steps_cap)

  def cond(carry):
    t, st, steps_done, *_ = carry
    return (t < max_new_tokens) & jnp.any(active_rows(st, steps_done))

  def body(carry):
    t, st, steps_done, tokens, log_probs, step_end, generated = carry
    active = active_rows(st, steps_done)
    logits, cache = decode_fn(params, st.pending[:, None], st.cache, active.astype(jnp.int32))
    lengths = st.lengths + active
    uniforms = jax.vmap(lambda k, p: jax.random.uniform(jax.random.fold_in(k, p)))(
        st.keys, lengths)
    token = sampler.sample(logits, uniforms)
    token_log_prob = jnp.take_along_axis(
        jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), token[:, None], axis=1)[:, 0]

    if delimiter is None:
      delim_state, delim_done = st.delimiter_state, jnp.zeros((rows,), bool)
    else:
      delim_state = delimiter.next_state[st.delimiter_state, token]
      delim_done = delimiter.completes[st.delimiter_state, token]
    step_tokens = st.step_tokens + 1
    is_eos = token == eos_id
    solution_tokens = lengths + 1 - st.prompt_lengths
    finished_now = is_eos | (solution_tokens >= solution_cap) | (lengths + 1 >= st.max_length)
    ends_step = delim_done | (step_tokens >= step_cap) | finished_now

    keep = lambda new, old: jnp.where(active, new, old)
    st = st.replace(
        cache=cache, lengths=lengths, pending=keep(token, st.pending),
        finished=st.finished | (active & finished_now),
        delimiter_state=keep(jnp.where(ends_step, 0, delim_state), st.delimiter_state),
        step_tokens=keep(jnp.where(ends_step, 0, step_tokens), st.step_tokens))
    tokens = tokens.at[:, t].set(jnp.where(active, token, pad_id))
    log_probs = log_probs.at[:, t].set(jnp.where(active, token_log_prob, 0.0))
    step_end = step_end.at[:, t].set(active & ends_step)
    steps_done = steps_done + (active & ends_step)
    return t + 1, st, steps_done, tokens, log_probs, step_end, generated + active

  init = (jnp.int32(0), state, jnp.zeros((rows,), jnp.int32),
          jnp.full((rows, max_new_tokens), pad_id, jnp.int32),
          jnp.zeros((rows, max_new_tokens), jnp.float32),
          jnp.zeros((rows, max_new_tokens), bool), jnp.zeros((rows,), jnp.int32))
  _, state, steps_done, tokens, log_probs, step_end, generated = jax.lax.while_loop(
      cond, body, init)
  return SampleOutput(
      tokens=tokens, log_probs=log_probs, lengths=generated, step_end=step_end,
      num_steps=steps_done, finished=state.finished, state=state,
      num_generated=jnp.sum(generated))
