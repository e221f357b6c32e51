"""Host-level helpers: sample whole solutions for lists of prompts, score them.

These wrap the jittable pieces (`prefill`, `sample_steps`, `score_steps`) with
tokenisation, fixed shapes (so each helper compiles once) and decoding, for the
places that want texts: evaluation, labelling, notebooks.

B denotes the number of prompts, N the samples per prompt, T the solution buffer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.cache import KVCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, score_steps
from ttcjax.models.tokenizer import Tokenizer, pad_batch
from ttcjax.sampling import (Sampler, StepDelimiter, prefill, row_keys, sample_steps,
                             transformer_decode_fn)


@dataclasses.dataclass
class Solutions:
  """N sampled solutions for each of B prompts.

  Attributes:
    texts: B lists of N decoded solutions.
    tokens: [B, N, T] generated tokens (pad past the length).
    step_end: [B, N, T] bool, the last token of each step.
    lengths: [B, N] generated tokens.
    finished: [B, N] the solution ended (EOS or cap).
    num_generated: tokens sampled (policy forwards of one token).
    num_prefilled: prompt tokens run through the policy (once per prompt).
  """

  texts: list[list[str]]
  tokens: np.ndarray
  step_end: np.ndarray
  lengths: np.ndarray
  finished: np.ndarray
  num_generated: int
  num_prefilled: int


class SolutionSampler:
  """Samples complete solutions; compiles once per (B, N).

  Args:
    config: the policy's config.
    tokenizer: its tokenizer.
    max_prompt_tokens: prompt buffer width (longer prompts raise).
    max_solution_tokens: T.
    step_delimiter: text that ends a step.
    max_steps: stop each row after this many steps (None: at its end), e.g. 1 for the
      policy's next step after a prefix.
  """

  def __init__(self, config: TransformerConfig, tokenizer: Tokenizer, *, max_prompt_tokens: int,
               max_solution_tokens: int, step_delimiter: str = "\n\n",
               max_steps: int | None = None):
    self.config, self.tokenizer = config, tokenizer
    self.max_prompt_tokens, self.max_solution_tokens = max_prompt_tokens, max_solution_tokens
    self.max_steps = max_steps
    self.capacity = max_prompt_tokens + max_solution_tokens + 1
    self.delimiter = StepDelimiter.build(tokenizer, step_delimiter, config.vocab_size)
    self._run = jax.jit(self._sample, static_argnames=("num_samples",))

  def _sample(self, params, prompts, prompt_lengths, problem_ids, rng, sampler, num_samples):
    decode = transformer_decode_fn(self.config)
    cache = KVCache.init(self.config, prompts.shape[0], self.capacity)
    state, prefilled = prefill(decode, params, cache, prompts, prompt_lengths, self.capacity)
    state = state.repeat(num_samples).with_keys(row_keys(rng, problem_ids, num_samples))
    out = sample_steps(decode, params, state, sampler, max_new_tokens=self.max_solution_tokens,
                       eos_id=self.tokenizer.eos_id, delimiter=self.delimiter,
                       max_steps=self.max_steps,
                       max_solution_tokens=self.max_solution_tokens, pad_id=self.tokenizer.pad_id)
    return out.tokens, out.step_end, out.lengths, out.finished, out.num_generated, prefilled

  def sample(self, params, prompts: Sequence[str], num_samples: int, sampler: Sampler,
             rng: jax.Array, problem_ids: Sequence[int] | None = None) -> Solutions:
    """Samples `num_samples` solutions per prompt.

    Args:
      params: the policy's parameters.
      prompts: B prompt texts.
      num_samples: N.
      sampler: temperature / top-k / top-p.
      rng: PRNG key (not consumed: the same key and ids give the same samples).
      problem_ids: B stable ids (default 0..B-1); a problem's samples depend only on
        (rng, its id).
    """
    sampler.check()
    tokens, lengths = pad_batch(self.tokenizer, prompts, width=self.max_prompt_tokens)
    ids = np.arange(len(prompts)) if problem_ids is None else np.asarray(problem_ids)
    out = self._run(params, jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(ids, jnp.int32),
                    rng, sampler, num_samples=num_samples)
    gen, ends, lens, fin, generated, prefilled = jax.device_get(out)
    b, n = len(prompts), num_samples
    gen, ends = gen.reshape(b, n, -1), ends.reshape(b, n, -1)
    lens, fin = lens.reshape(b, n), fin.reshape(b, n)
    texts = [[self.tokenizer.decode(gen[i, j, :lens[i, j]]) for j in range(n)] for i in range(b)]
    return Solutions(texts, gen, ends, lens, fin, int(generated), int(prefilled))


class SolutionScorer:
  """Scores solutions step by step with a PRM (or an ORM: read the last step).

  Each (prompt, solution) is scored in one forward pass over the whole sequence;
  compiles once per batch size.

  Args:
    config: the PRM's config.
    tokenizer: the policy's tokenizer (the PRM shares it).
    max_length: sequence buffer (prompt + solution + EOS).
    max_steps: S, width of the score table.
  """

  def __init__(self, config: PrmConfig, tokenizer: Tokenizer, *, max_length: int, max_steps: int):
    self.config, self.tokenizer = config, tokenizer
    self.max_length, self.max_steps = max_length, max_steps
    # Steps past S share the last column, which keeps the final step's score.
    self._run = jax.jit(functools.partial(score_steps, config=config, max_steps=max_steps,
                                          keep_last=True))

  def score(self, params, prompts: Sequence[str], step_tokens: np.ndarray, step_end: np.ndarray,
            lengths: np.ndarray):
    """Scores generated solutions.

    Args:
      params: PRM parameters.
      prompts: R prompt texts (one per solution).
      step_tokens: [R, T] generated tokens.
      step_end: [R, T] bool step ends (`Solutions.step_end` reshaped).
      lengths: [R] generated tokens.

    Returns:
      (scores [R, S], mask [R, S]) as numpy arrays.
    """
    rows = len(prompts)
    prompt_tokens, prompt_lengths = pad_batch(self.tokenizer, prompts)
    tokens = np.full((rows, self.max_length), self.tokenizer.pad_id, np.int32)
    ends = np.zeros((rows, self.max_length), bool)
    total = prompt_lengths + lengths
    if total.max() > self.max_length:
      raise ValueError(f"A sequence of {total.max()} tokens exceeds max_length={self.max_length}.")
    for r in range(rows):
      p, g = prompt_lengths[r], lengths[r]
      tokens[r, :p] = prompt_tokens[r, :p]
      tokens[r, p:p + g] = step_tokens[r, :g]
      ends[r, p:p + g] = step_end[r, :g]
    out = self._run(params, tokens=jnp.asarray(tokens), step_end=jnp.asarray(ends),
                    lengths=jnp.asarray(total), prompt_lengths=jnp.asarray(prompt_lengths))
    scores, mask = jax.device_get(out)
    return np.asarray(scores), np.asarray(mask)
