"""The types every search strategy shares.

B denotes the number of problems searched at once, N the rows (samples, beams)
per problem, R = B * N the rows of a batch (row b * N + n), T the solution buffer,
W the longest step, S the most steps a solution can have.

The policy enters as a `DecodeFn` (`ttcjax.sampling`), the PRM as a `PrmFn`; each is a
pure function plus its params, so the ten-line fakes of the tests drive exactly the
code the transformers do.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import flax
import jax
import jax.numpy as jnp

from ttcjax.models.prm import PrmConfig, token_scores
from ttcjax.sampling import DecodeState, StepDelimiter

Cache = Any  # a pytree whose leaves all have the row dimension first


class PrmFn(Protocol):
  """A process reward model as a pure function.

  Args:
    params: the PRM's parameters.
    tokens: [R, K] int32 tokens to append to each row.
    cache: the rows' PRM cache; it exposes `lengths` ([R] int32, the tokens it holds),
      as an attribute (`KVCache`) or a key (a dict), so that a search can count what
      the PRM ran.
    num_new: [R] int32, how many of each row's K tokens are valid.
    step_end: optional [R, K] bool, the tokens that end a step (all False for a
      prompt). A PRM that reads scores at every token ignores it; one that lays steps
      out itself (`PrmAdapter.wrap_prm_fn`) puts its step suffixes there.

  Returns:
    (scores [R, K] float32 in [0, 1], the PRM's score after each token, or at least at
    each step end; updated cache).
  """

  def __call__(self, params, tokens: jax.Array, cache: Cache, num_new: jax.Array,
               step_end: jax.Array | None = None) -> tuple[jax.Array, Cache]: ...


def transformer_prm_fn(config: PrmConfig) -> PrmFn:
  """The `PrmFn` of a ttcjax PRM (value or token-logit head) with a `KVCache`."""

  def score(params, tokens, cache, num_new, step_end=None):
    del step_end  # every position is scored
    return token_scores(params, config, tokens, cache, num_new)

  return score


def prm_cache_lengths(cache: Cache) -> jax.Array:
  """[R] int32 tokens a PRM cache holds (see `PrmFn`)."""
  lengths = cache.get("lengths") if isinstance(cache, Mapping) else getattr(cache, "lengths", None)
  if lengths is None:
    raise ValueError(
        f"A PRM cache ({type(cache).__name__}) must expose its per-row fill as `lengths` "
        "(an attribute, or a dict key) so that the search can count the tokens the PRM "
        "runs; add it to the cache your PrmFn returns.")
  return lengths


@flax.struct.dataclass
class SearchSettings:
  """Caps and token ids a search needs; all static (they set shapes or loop bounds).

  Attributes:
    eos_id: the token that ends a solution.
    pad_id: filler of token buffers.
    delimiter: the step-end automaton (a pytree of arrays; not static).
    max_step_tokens: W, a step reaching this many tokens is ended there.
    max_solution_tokens: T, a solution reaching this many tokens is finished.
    max_steps: S, columns of the step-score table; a solution with more steps keeps
      its last step's score in column S-1 (the steps in between are not kept).
    max_rounds: step-level searches stop after this many rounds (the paper: 40).
    prm_rows_per_pass: 0, or the most rows one PRM pass over new tokens runs at once;
      more rows are scored in slices one after another, which bounds the pass's
      activations (best-of-N scores whole solutions: [rows, heads, T, capacity]
      attention scores at once) at the price of a sequential loop.
  """

  eos_id: int = flax.struct.field(pytree_node=False)
  pad_id: int = flax.struct.field(pytree_node=False)
  delimiter: StepDelimiter
  max_step_tokens: int = flax.struct.field(pytree_node=False)
  max_solution_tokens: int = flax.struct.field(pytree_node=False)
  max_steps: int = flax.struct.field(pytree_node=False, default=40)
  max_rounds: int = flax.struct.field(pytree_node=False, default=40)
  prm_rows_per_pass: int = flax.struct.field(pytree_node=False, default=0)

  def check(self) -> "SearchSettings":
    for name in ("max_step_tokens", "max_solution_tokens", "max_steps", "max_rounds"):
      if getattr(self, name) <= 0:
        raise ValueError(f"SearchSettings.{name} must be positive, got {getattr(self, name)}.")
    if self.prm_rows_per_pass < 0:
      raise ValueError(f"prm_rows_per_pass must be 0 (all rows) or positive, got "
                       f"{self.prm_rows_per_pass}.")
    if self.max_step_tokens > self.max_solution_tokens:
      raise ValueError(f"max_step_tokens ({self.max_step_tokens}) cannot exceed "
                       f"max_solution_tokens ({self.max_solution_tokens}).")
    return self


@flax.struct.dataclass
class ComputeRecord:
  """What a search spent, per problem ([B] each).

  Attributes:
    policy_generated: tokens the policy sampled (one forward of one token each).
    policy_prefilled: prompt tokens the policy ran (once per problem).
    policy_context: sum over generated tokens of the context each attended to.
    prm_scored: tokens the PRM ran (its prompt once, then each new step's tokens; with
      a PRM adapter, the step suffixes it ran too, the delimiters it stripped not).
    prm_context: sum over PRM tokens of the context each attended to.
  """

  policy_generated: jax.Array
  policy_prefilled: jax.Array
  policy_context: jax.Array
  prm_scored: jax.Array
  prm_context: jax.Array

  @classmethod
  def zeros(cls, num_problems: int) -> "ComputeRecord":
    z = jnp.zeros((num_problems,), jnp.float32)
    return cls(z, z, z, z, z)

  def __add__(self, other: "ComputeRecord") -> "ComputeRecord":
    return jax.tree.map(jnp.add, self, other)


@flax.struct.dataclass
class SearchOutput:
  """N candidate solutions per problem with their step scores.

  Attributes:
    tokens: [B, N, T] generated tokens (EOS included), pad after each length.
    step_end: [B, N, T] bool, the last token of each step.
    lengths: [B, N] generated tokens.
    step_scores: [B, N, S] the PRM's score of each step.
    step_mask: [B, N, S] bool, the step exists.
    finished: [B, N] bool, the solution ended (EOS or the token cap); rows the
      round cap stopped are not finished.
    compute: per-problem `ComputeRecord`.
  """

  tokens: jax.Array
  step_end: jax.Array
  lengths: jax.Array
  step_scores: jax.Array
  step_mask: jax.Array
  finished: jax.Array
  compute: ComputeRecord


@flax.struct.dataclass
class Frontier:
  """The rows a search is growing. R = B * N rows, row b * N + n.

  Attributes:
    policy: the policy's decode state (its cache holds every token but the pending one).
    prm_cache: the PRM's cache, holding every token scored so far.
    tokens: [R, 2T] the solution so far (T of slack so a chunk of up to T tokens
      can be written at any offset below T without clipping).
    step_end: [R, 2T] bool.
    lengths: [R] solution tokens so far.
    step_scores: [R, S].
    num_steps: [R] steps so far.
    slot_keys: [R, 2] a fixed key per row slot; round r samples with fold_in(key, r),
      so siblings forked from one parent draw different steps.
    compute: per-problem `ComputeRecord` ([B] fields).
  """

  policy: DecodeState
  prm_cache: Cache
  tokens: jax.Array
  step_end: jax.Array
  lengths: jax.Array
  step_scores: jax.Array
  num_steps: jax.Array
  slot_keys: jax.Array
  compute: ComputeRecord

  @property
  def finished(self) -> jax.Array:
    return self.policy.finished

  @property
  def num_rows(self) -> int:
    return self.lengths.shape[0]


@flax.struct.dataclass
class SearchBatch:
  """B problems to search, with the empty caches their rows will grow in.

  Attributes:
    prompts: [B, P] right-padded prompt tokens (BOS included).
    prompt_lengths: [B] int32 valid prompt tokens.
    problem_ids: [B] int32 stable ids; a problem's search depends only on (rng, its id).
    policy_cache: the policy's empty cache, B rows, capacity P + T + 1.
    prm_cache: the PRM's empty cache, B rows, capacity `prm_cache_capacity`.
    prm_prompts: optional [B, P'] right-padded tokens the PRM is prefilled with, when
      its layout has a prompt of its own (a published PRM's chat template); None: the
      PRM reads `prompts`, as the policy does.
    prm_prompt_lengths: [B] int32 valid `prm_prompts` tokens (None with them).
  """

  prompts: jax.Array
  prompt_lengths: jax.Array
  problem_ids: jax.Array
  policy_cache: Cache
  prm_cache: Cache
  prm_prompts: jax.Array | None = None
  prm_prompt_lengths: jax.Array | None = None

  @property
  def num_problems(self) -> int:
    return self.prompts.shape[0]


def cache_capacity(prompt_width: int, settings: SearchSettings) -> int:
  """Slots a row's caches need: the prompt, the longest solution, and one spare."""
  return prompt_width + settings.max_solution_tokens + 1


def prm_cache_capacity(prompt_width: int, settings: SearchSettings, suffix_length: int = 0,
                       max_suffixes: int = 0) -> int:
  """Slots a row's PRM cache needs: `cache_capacity` plus room for step suffixes.

  Args:
    prompt_width: P', the PRM's prompt buffer.
    settings: the search's caps.
    suffix_length: L, tokens a PRM adapter writes after every step (0: none).
    max_suffixes: the most steps one row's PRM cache receives suffixes for (see
      `runner.prm_suffixes_per_row`).
  """
  return cache_capacity(prompt_width, settings) + suffix_length * max_suffixes
