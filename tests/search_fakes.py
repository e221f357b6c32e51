"""Ten-line fakes of a policy and a PRM for exact search tests.

The fake policy writes solutions of three one-digit steps, "d\\n\\nd\\n\\nd<eos>",
drawing each digit uniformly from 1..9; the fake PRM scores every position by the
last digit seen so far, divided by ten. So a step's score is its digit / 10 and
which rows a search keeps can be predicted exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.search import SearchBatch, SearchModels, SearchSettings
from ttcjax.sampling import StepDelimiter
from ttcjax.tasks.arith import testbed

TOKENIZER = testbed.tokenizer()
VOCAB = TOKENIZER.vocab_size
DIGIT = {d: TOKENIZER.encode(str(d))[0] for d in range(10)}
NEWLINE = TOKENIZER.encode("\n")[0]
EOS = TOKENIZER.eos_id
STEPS = 3
_DIGIT_VALUE = np.full(VOCAB, -1, np.int32)
for _d, _t in DIGIT.items():
  _DIGIT_VALUE[_t] = _d
DIGIT_VALUE = jnp.asarray(_DIGIT_VALUE)


def _last_two(tokens, num_new, prev, last):
  """The last two tokens after appending each row's valid chunk."""
  n = num_new[:, None]
  k = jnp.arange(tokens.shape[1])[None, :]
  pick = lambda i: jnp.take_along_axis(tokens, jnp.clip(i, 0, tokens.shape[1] - 1), axis=1)[:, 0]
  new_last = jnp.where(num_new >= 1, pick(n - 1), last)
  new_prev = jnp.where(num_new >= 2, pick(n - 2), jnp.where(num_new == 1, last, prev))
  digits = jnp.sum((DIGIT_VALUE[tokens] > 0) & (k < n), axis=1)
  return new_prev, new_last, digits


def policy_fn(params, tokens, cache, num_new):
  del params
  prev, last, digits = _last_two(tokens, num_new, cache["prev"], cache["last"])
  steps = cache["steps"] + digits
  is_digit = DIGIT_VALUE[last] > 0
  any_digit = jnp.zeros((VOCAB,)).at[jnp.asarray([DIGIT[d] for d in range(1, 10)])].set(1.0)
  uniform = jnp.log(any_digit + 1e-30)
  forced = lambda token: jnp.where(jnp.arange(VOCAB) == token, 0.0, -1e9)
  logits = jnp.where(
      (is_digit & (steps >= STEPS))[:, None], forced(EOS)[None],
      jnp.where(is_digit[:, None] | ((last == NEWLINE) & (DIGIT_VALUE[prev] > 0))[:, None],
                forced(NEWLINE)[None], uniform[None]))
  cache = {"prev": prev, "last": last, "steps": steps, "lengths": cache["lengths"] + num_new}
  return logits, cache


def prm_fn(params, tokens, cache, num_new, step_end=None):
  del params, step_end  # scores every position
  k = jnp.arange(tokens.shape[1])[None, :]
  valid = k < num_new[:, None]
  index = jnp.where((DIGIT_VALUE[tokens] > 0) & valid, k, -1)
  latest = jax.lax.cummax(index, axis=1)
  digit = DIGIT_VALUE[jnp.take_along_axis(tokens, jnp.maximum(latest, 0), axis=1)]
  scores = jnp.where(latest >= 0, digit / 10.0, cache["score"][:, None])
  carry = jnp.where(num_new > 0, jnp.take_along_axis(
      scores, jnp.maximum(num_new - 1, 0)[:, None], axis=1)[:, 0], cache["score"])
  return scores, {"score": carry, "lengths": cache["lengths"] + num_new}


# The fakes ignore their params.
MODELS = SearchModels(policy_fn, None, prm_fn, None)


def settings(max_rounds=40, max_steps=8):
  return SearchSettings(eos_id=EOS, pad_id=TOKENIZER.pad_id,
                        delimiter=StepDelimiter.build(TOKENIZER, "\n\n", VOCAB),
                        max_step_tokens=4, max_solution_tokens=16, max_steps=max_steps,
                        max_rounds=max_rounds)


def batch(num_problems, problem_ids=None):
  prompt = TOKENIZER.encode("=?\n", add_bos=True)
  prompts = jnp.asarray([prompt] * num_problems, jnp.int32)
  zeros = jnp.zeros((num_problems,), jnp.int32)
  ids = jnp.arange(num_problems) if problem_ids is None else jnp.asarray(problem_ids)
  return SearchBatch(
      prompts=prompts, prompt_lengths=jnp.full((num_problems,), len(prompt), jnp.int32),
      problem_ids=ids.astype(jnp.int32),
      policy_cache={"prev": zeros, "last": zeros, "steps": zeros, "lengths": zeros},
      prm_cache={"score": jnp.zeros((num_problems,)), "lengths": zeros})


def step_digits(out, problem=0):
  """[N, steps] the digit of every step of every candidate of one problem."""
  tokens = np.asarray(out.tokens[problem])
  return [[int(DIGIT_VALUE[t]) for t in row if DIGIT_VALUE[t] > 0] for row in tokens]
