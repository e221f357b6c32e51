"""Sampling: token distributions, step detection, caps, and per-row randomness.

Exact behaviour of `sample_steps` is tested with a scripted fake policy (row r
predicts script[r, p] at position p, greedy), so every expected token, step end and
count is known in advance; the real tiny transformer then checks that greedy
decoding, per-row keys and call splitting hold end to end.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models.cache import KVCache
from ttcjax.models.config import get_config
from ttcjax.models.tokenizer import CharTokenizer
from ttcjax.models.transformer import forward, init_params
from ttcjax.sampling import (Sampler, StepDelimiter, append_tokens, prefill, row_keys,
                             sample_steps, transformer_decode_fn)
from jax_helpers import host_jit

# ---------------------------------------------------------------- fakes


class FakeTokenizer:
  """Token texts chosen to put "\\n\\n" alone, inside, across and twice in tokens."""

  TEXTS = ("", "", "a", "b", ".\n\n", "\n", "\n\n", "c", "\n\n\n", "x\n\ny", " \n", "d")
  A, B, MERGED, NL, NLNL, C, NL3, INSIDE, SPACE_NL, D = range(2, 12)
  vocab_size = len(TEXTS)
  pad_id, bos_id, eos_id = 0, None, 1

  def encode(self, text, add_bos=False):
    raise NotImplementedError

  def decode(self, ids):
    return "".join(self.TEXTS[i] for i in ids)

  def token_text(self, token_id):
    return self.TEXTS[token_id]


T = FakeTokenizer
V = T.vocab_size
EOS = T.eos_id
PAD = 0
# Non-uniform offsets make the temperature-1 log-probabilities non-trivial.
OFFSETS = jnp.linspace(0.0, 0.5, V)


def scripted_decode(script, tokens, cache, num_new):
  """Greedy-predicts script[r, p] for the token at position p of row r.

  The cache records every token fed at its position ("seq") and the count ("n"),
  so tests can check that exactly the right tokens reached the policy.
  """
  rows, width = tokens.shape
  r = jnp.arange(rows)
  pos = cache["n"][:, None] + jnp.arange(width)[None, :]
  valid = jnp.arange(width)[None, :] < num_new[:, None]
  seq = cache["seq"].at[r[:, None], jnp.where(valid, pos, cache["seq"].shape[1])].set(
      tokens, mode="drop")
  n = cache["n"] + num_new
  nxt = script[r, jnp.minimum(n, script.shape[1] - 1)]
  logits = 4.0 * jax.nn.one_hot(nxt, V) + OFFSETS
  return logits, {"n": n, "seq": seq}


def fake_cache(rows, width=64):
  return {"n": jnp.zeros((rows,), jnp.int32), "seq": jnp.full((rows, width), -1, jnp.int32)}


_SAMPLE_STATIC = ("decode_fn", "max_new_tokens", "eos_id", "max_steps", "max_step_tokens",
                  "max_solution_tokens", "pad_id")
jit_sample_steps = host_jit(sample_steps, static_argnames=_SAMPLE_STATIC)
jit_prefill = host_jit(prefill, static_argnames=("decode_fn", "max_length"))
jit_append_tokens = host_jit(append_tokens, static_argnames=("decode_fn",))


def scripted_run(prompts, continuations, max_length=32):
  """Prefills the prompts, then runs sample_steps greedily on the scripted fake."""
  rows = len(prompts)
  width = max(map(len, prompts))
  script = np.full((rows, 64), T.A, np.int32)
  padded = np.full((rows, width), PAD, np.int32)
  for r, (p, c) in enumerate(zip(prompts, continuations)):
    script[r, :len(p) + len(c)] = list(p) + list(c)
    padded[r, :len(p)] = p
  script = jnp.asarray(script)
  lengths = jnp.asarray([len(p) for p in prompts], jnp.int32)
  state, _ = jit_prefill(decode_fn=scripted_decode, params=script, cache=fake_cache(rows),
                         prompts=jnp.asarray(padded), prompt_lengths=lengths,
                         max_length=max_length)
  return script, state


def run_steps(script, state, **kwargs):
  kwargs.setdefault("eos_id", EOS)
  kwargs.setdefault("pad_id", PAD)
  sampler = kwargs.pop("sampler", Sampler.greedy())
  return jit_sample_steps(scripted_decode, script, state, sampler, **kwargs)


@pytest.fixture(scope="module")
def delimiter():
  return StepDelimiter.build(FakeTokenizer(), "\n\n")


def expected_log_prob(token):
  logits = 4.0 * np.eye(V)[token] + np.linspace(0.0, 0.5, V)
  return logits[token] - np.log(np.sum(np.exp(logits)))


def check_output(out, expected_tokens, expected_step_ends):
  """Tokens, pad past length, lengths, step ends, log-probs of a greedy scripted run."""
  tokens, step_end = np.asarray(out.tokens), np.asarray(out.step_end)
  log_probs = np.asarray(out.log_probs)
  width = tokens.shape[1]
  for r, (want, ends) in enumerate(zip(expected_tokens, expected_step_ends)):
    n = len(want)
    assert int(out.lengths[r]) == n, (r, tokens[r])
    np.testing.assert_array_equal(tokens[r], list(want) + [PAD] * (width - n), err_msg=f"row {r}")
    want_ends = np.zeros(width, bool)
    want_ends[list(ends)] = True
    np.testing.assert_array_equal(step_end[r], want_ends, err_msg=f"row {r}")
    np.testing.assert_allclose(log_probs[r, :n], [expected_log_prob(t) for t in want],
                               rtol=1e-6, err_msg=f"row {r}")
    np.testing.assert_array_equal(log_probs[r, n:], 0.0)
  assert int(out.num_generated) == sum(map(len, expected_tokens))


def check_fed(out, script):
  """The policy was fed exactly the script up to each row's pending token."""
  st = out.state
  lengths = np.asarray(st.lengths)
  np.testing.assert_array_equal(st.cache["n"], lengths)
  seq, script = np.asarray(st.cache["seq"]), np.asarray(script)
  for r, n in enumerate(lengths):
    np.testing.assert_array_equal(seq[r, :n], script[r, :n])
    assert (seq[r, n:] == -1).all()
    assert int(st.pending[r]) == script[r, n]


# ---------------------------------------------------------------- step delimiter


def test_delimiter_table(delimiter):
  nxt, done = np.asarray(delimiter.next_state), np.asarray(delimiter.completes)
  assert nxt.shape == done.shape == (2, V)
  expect = {  # (state, token): (next state, completes)
      (0, T.A): (0, False), (0, T.NL): (1, False), (0, T.NLNL): (0, True),
      (0, T.MERGED): (0, True), (0, T.NL3): (1, True), (0, T.INSIDE): (0, True),
      (0, T.SPACE_NL): (1, False), (0, EOS): (0, False),
      (1, T.A): (0, False), (1, T.NL): (0, True), (1, T.NLNL): (1, True),
      (1, T.MERGED): (0, True), (1, T.NL3): (0, True), (1, T.SPACE_NL): (1, False),
      (1, EOS): (1, False), (1, T.INSIDE): (0, True),
  }
  for (s, v), (want_state, want_done) in expect.items():
    assert (nxt[s, v], done[s, v]) == (want_state, want_done), (s, FakeTokenizer.TEXTS[v])


def test_delimiter_table_wider_vocab_and_overlap():
  wide = StepDelimiter.build(FakeTokenizer(), "\n\n", vocab_size=V + 3)
  assert wide.next_state.shape == (2, V + 3)
  assert not np.asarray(wide.completes)[:, V:].any()
  np.testing.assert_array_equal(np.asarray(wide.next_state)[:, V:], [[0] * 3, [1] * 3])
  # A self-overlapping delimiter needs the KMP fallback: "aa" + "a" still ends in "aa".
  tok = CharTokenizer("ab")
  a, b = tok.encode("ab")
  table = StepDelimiter.build(tok, "aab")
  nxt, done = np.asarray(table.next_state), np.asarray(table.completes)
  assert nxt[2, a] == 2 and not done[2, a]
  assert done[2, b] and not done[1, b] and nxt[1, b] == 0


# ---------------------------------------------------------------- scripted runs

A, B_, NL, NLNL, C = T.A, T.B, T.NL, T.NLNL, T.C

SCRIPT_A = [  # (prompt, continuation, tokens of call 1, step ends of call 1)
    ([A, B_], [A, NLNL, C, C, NLNL], [A, NLNL], [1]),  # delimiter is a token
    ([A], [B_, T.MERGED, C, NLNL], [B_, T.MERGED], [1]),  # inside a merged token
    ([A, B_, C], [NL, A, NL, NL, T.NL3], [NL, A, NL, NL], [3]),  # split over two tokens
    ([C], [A, B_, EOS, A, A], [A, B_, EOS], [2]),  # EOS ends the step and the row
    ([A, A], [C, T.INSIDE, NLNL], [C, T.INSIDE], [1]),  # "x\n\ny"
    # No step end within the 10-token buffer; it ends on "\n" ...
    ([B_], [A, B_] * 4 + [A, NL] + [NL, C, NLNL], [A, B_] * 4 + [A, NL], []),
]
# Call 2 (continuing from call 1's state): finished rows stay empty; row 5's "\n"
# from call 1 and its first token "\n" of call 2 complete the delimiter.
CALL_2 = [([C, C, NLNL], [2]), ([C, NLNL], [1]), ([T.NL3], [0]), ([], []), ([NLNL], [0]),
          ([NL], [0])]


@pytest.fixture(scope="module")
def two_calls(delimiter):
  prompts = [p for p, *_ in SCRIPT_A]
  script, state = scripted_run(prompts, [c for _, c, *_ in SCRIPT_A])
  first = run_steps(script, state, delimiter=delimiter, max_new_tokens=10, max_steps=1)
  second = run_steps(script, first.state, delimiter=delimiter, max_new_tokens=10, max_steps=1)
  return script, state, first, second


def test_sample_steps_finds_step_ends(two_calls):
  script, state, first, _ = two_calls
  check_output(first, [t for *_, t, _ in SCRIPT_A], [e for *_, e in SCRIPT_A])
  np.testing.assert_array_equal(first.num_steps, [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(first.finished, [False, False, False, True, False, False])
  np.testing.assert_array_equal(first.state.finished, first.finished)
  np.testing.assert_array_equal(first.state.step_tokens, [0, 0, 0, 0, 0, 10])
  np.testing.assert_array_equal(first.state.delimiter_state, [0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(first.state.lengths, np.asarray(state.lengths) + first.lengths)
  np.testing.assert_array_equal(
      first.state.solution_lengths, [len(t) for *_, t, _ in SCRIPT_A])
  check_fed(first, script)


def test_sample_steps_continues_across_calls(two_calls):
  script, _, first, second = two_calls
  check_output(second, [t for t, _ in CALL_2], [e for _, e in CALL_2])
  np.testing.assert_array_equal(second.num_steps, [1, 1, 1, 0, 1, 1])
  # The finished row's cache and pending token are untouched.
  assert int(second.state.lengths[3]) == int(first.state.lengths[3])
  assert int(second.state.pending[3]) == EOS
  check_fed(second, script)


def test_sample_steps_caps(delimiter):
  prompts = [[C], [C], [C], [C, C]]
  continuations = [
      [A] * 8,  # no delimiter: the step cap ends steps of 3
      [A, NLNL] + [A] * 6,  # a delimiter step, then a capped step
      # A capped step ending on "\n" resets the automaton: "\n" + "\n" across the
      # step boundary is not a delimiter.
      [NL, A, NL, NL, A, A, A],
      [A, EOS, A],
  ]
  script, state = scripted_run(prompts, continuations)
  out = run_steps(script, state, delimiter=delimiter, max_new_tokens=8, max_steps=2,
                  max_step_tokens=3)
  check_output(out, [[A] * 6, [A, NLNL, A, A, A], [NL, A, NL, NL, A, A], [A, EOS]],
               [[2, 5], [1, 4], [2, 5], [1]])
  np.testing.assert_array_equal(out.num_steps, [2, 2, 2, 1])
  np.testing.assert_array_equal(out.finished, [False, False, False, True])
  check_fed(out, script)


def test_sample_steps_solution_and_length_caps():
  # Prompts of 2, 4 and 6 tokens; at most 5 solution tokens and 9 tokens in all.
  prompts = [[C] * 2, [C] * 4, [C] * 6, [C] * 2]
  continuations = [[A] * 8, [A] * 8, [A] * 8, [A, A, EOS]]
  script, state = scripted_run(prompts, continuations, max_length=9)
  first = run_steps(script, state, max_new_tokens=2, max_steps=None, max_solution_tokens=5)
  check_output(first, [[A, A]] * 3 + [[A, A]], [[]] * 4)  # the buffer filled up
  assert not np.asarray(first.finished).any()
  second = run_steps(script, first.state, max_new_tokens=6, max_steps=None,
                     max_solution_tokens=5)
  # Solution cap (counted since the prompt, across calls): rows 0 and 1; max_length
  # (2 + 5 = 7 < 9 for row 0, 4 + 5 = 9 for row 1): row 2 stops at 9 tokens in all.
  check_output(second, [[A] * 3, [A] * 3, [A], [EOS]], [[2], [2], [0], [0]])
  np.testing.assert_array_equal(second.finished, [True] * 4)
  np.testing.assert_array_equal(second.state.solution_lengths, [5, 5, 3, 3])
  np.testing.assert_array_equal(np.asarray(second.state.lengths) + 1, [7, 9, 9, 5])
  np.testing.assert_array_equal(second.num_steps, [1, 1, 1, 1])
  check_fed(second, script)
  third = run_steps(script, second.state, max_new_tokens=6, max_steps=None,
                    max_solution_tokens=5)
  assert int(third.num_generated) == 0
  assert (np.asarray(third.tokens) == PAD).all()


def test_rows_already_at_max_length_generate_nothing():
  # Row 0's prompt fills max_length; row 1 reaches it through forced tokens.
  script, state = scripted_run([[C] * 6, [C] * 3], [[A] * 4, [A] * 4], max_length=6)
  state, _ = jit_append_tokens(scripted_decode, script, state,
                               np.array([[B_] * 3, [B_] * 3], np.int32),
                               np.array([0, 3], np.int32))
  out = run_steps(script, state, max_new_tokens=4, max_steps=None)
  np.testing.assert_array_equal(out.lengths, [0, 0])
  np.testing.assert_array_equal(out.finished, [True, True])
  np.testing.assert_array_equal(out.state.lengths, [5, 5])  # the caches stay in capacity


def test_append_tokens_forces_tokens(two_calls):
  script, _, first, _ = two_calls
  rows = first.state.num_rows
  forced = (np.arange(rows * 3).reshape(rows, 3) % (V - 2) + 2).astype(np.int32)
  num_new = np.array([3, 0, 1, 2, 3, 1], np.int32)
  state, count = jit_append_tokens(scripted_decode, script, first.state, forced, num_new)
  assert int(count) == num_new.sum()
  np.testing.assert_array_equal(state.lengths, first.state.lengths + num_new)
  np.testing.assert_array_equal(state.delimiter_state, 0)
  np.testing.assert_array_equal(state.step_tokens, 0)
  seq = np.asarray(state.cache["seq"])
  for r in range(rows):
    n0, k = int(first.state.lengths[r]), int(num_new[r])
    expect = [int(first.state.pending[r])] + list(forced[r, :k])
    np.testing.assert_array_equal(seq[r, n0:n0 + k], expect[:k])
    assert int(state.pending[r]) == expect[k]


# ---------------------------------------------------------------- distributions

LOGITS = np.array([2.0, 1.2, 0.7, 0.0, -0.4, -1.0, 1.6, 0.3])
NUM_DRAWS = 20000


def reference_probs(logits, temperature=1.0, top_k=0, top_p=1.0, strict=True):
  z = logits / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  if top_k:
    p[np.argsort(-p)[top_k:]] = 0
    p /= p.sum()
  if top_p < 1:
    order = np.argsort(-p)
    before = np.cumsum(p[order]) - p[order]
    # The test's own cut must not sit on a float-precision boundary.
    assert not strict or np.min(np.abs(before - top_p)) > 0.01
    p[order[before >= top_p]] = 0
    p /= p.sum()
  return p


def chi2_critical(df, z=3.09):
  """Wilson-Hilferty quantile of chi-square(df) at upper tail ~1e-3 (z = 3.09)."""
  a = 2.0 / (9 * df)
  return df * (1 - a + z * math.sqrt(a)) ** 3


def check_frequencies(tokens, probs):
  tokens = np.asarray(tokens)
  n = tokens.size
  counts = np.bincount(tokens, minlength=len(probs))
  assert counts.sum() == n
  assert (counts[probs == 0] == 0).all(), (counts, probs)  # never outside the support
  support = probs > 0
  freq, p = counts[support] / n, probs[support]
  sigma = np.sqrt(p * (1 - p) / n)
  assert (np.abs(freq - p) < 5 * sigma).all(), (freq, p)
  if support.sum() > 1:
    stat = float(np.sum((counts[support] - n * p) ** 2 / (n * p)))
    assert stat < chi2_critical(support.sum() - 1), (stat, freq, p)


SAMPLER_CASES = [
    dict(temperature=0.5), dict(temperature=1.0), dict(temperature=2.0),
    dict(temperature=1.0, top_k=3), dict(temperature=1.0, top_p=0.7),
    dict(temperature=0.8, top_k=5, top_p=0.8),
]


@host_jit(static_argnames=("top_k",))
def _sample(temperature, top_p, logits, uniforms, top_k):
  return Sampler(temperature, top_p, top_k).sample(logits, uniforms)


def draw(case, logits, uniforms):
  return _sample(np.float32(case.get("temperature", 1.0)), np.float32(case.get("top_p", 1.0)),
                 np.asarray(logits, np.float32), np.asarray(uniforms, np.float32),
                 top_k=case.get("top_k", 0))


@pytest.mark.parametrize("case", SAMPLER_CASES, ids=str)
def test_sample_frequencies(case):
  uniforms = np.random.default_rng(0).random(NUM_DRAWS, np.float32)
  tokens = draw(case, np.broadcast_to(LOGITS, (NUM_DRAWS, 8)), uniforms)
  check_frequencies(tokens, reference_probs(LOGITS, **case))


# A vocabulary of several CDF blocks (the sampler inverts the CDF in blocks of 256):
# the support is spread over all three blocks, and top-k/top-p empty whole blocks.
BIG_V = 700
BIG_DRAWS = 4000
BIG_SUPPORT = [0, 100, 255, 256, 300, 511, 512, 513, 600, 650, 699]
BIG_LOGITS = np.full(BIG_V, -np.inf)
BIG_LOGITS[BIG_SUPPORT] = np.random.default_rng(5).permutation(np.linspace(-1.0, 2.0, 11))


@pytest.mark.parametrize("case", [dict(temperature=1.0), dict(temperature=0.5, top_k=5),
                                  dict(temperature=1.0, top_p=0.6)], ids=str)
def test_sample_frequencies_large_vocab(case):
  uniforms = np.random.default_rng(6).random(BIG_DRAWS, np.float32)
  tokens = draw(case, np.broadcast_to(BIG_LOGITS, (BIG_DRAWS, BIG_V)), uniforms)
  check_frequencies(tokens, reference_probs(BIG_LOGITS, **case))


def support_mask(logits, temperature=1.0, top_k=0, top_p=1.0):
  """[N, V] tokens that temperature, top-k then top-p keep (top_p loosened by 1e-4:
  float32 may round a token onto the nucleus' edge)."""
  z = logits / temperature
  p = np.exp(z - z.max(-1, keepdims=True))
  if top_k:
    p = np.where(z >= -np.sort(-z, axis=-1)[:, top_k - 1:top_k], p, 0)
  p /= p.sum(-1, keepdims=True)
  order = np.argsort(-p, axis=-1)
  sorted_p = np.take_along_axis(p, order, axis=-1)
  kept = np.zeros_like(p, bool)
  np.put_along_axis(kept, order, np.cumsum(sorted_p, -1) - sorted_p < top_p + 1e-4, axis=-1)
  return kept & (p > 0)


def test_sample_extreme_uniforms_stay_in_support():
  edge = np.array([0.0, np.nextafter(np.float32(1), np.float32(0))], np.float32)
  rng = np.random.default_rng(1)
  small = rng.normal(size=(NUM_DRAWS, 8)) * 3
  big = rng.normal(size=(BIG_DRAWS, BIG_V)) * 3
  for case, logits in [(c, small) for c in SAMPLER_CASES[3:]] + [
      (dict(temperature=1.0, top_k=3), big), (dict(temperature=0.3, top_p=0.5), big)]:
    tokens = draw(case, logits, np.resize(edge, len(logits)))
    kept = support_mask(logits, **case)[np.arange(len(logits)), tokens]
    assert kept.all(), (case, np.flatnonzero(~kept)[:5])


def test_greedy_is_argmax():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(NUM_DRAWS, 8)) * 2
  uniforms = rng.random(NUM_DRAWS, np.float32)
  want = logits.argmax(-1)
  for case in (dict(temperature=0.0), dict(temperature=0.0, top_k=3),
               dict(temperature=0.0, top_p=0.5), dict(temperature=1.0, top_p=1e-6)):
    np.testing.assert_array_equal(draw(case, logits, uniforms), want, err_msg=str(case))
  big = rng.normal(size=(BIG_DRAWS, BIG_V))
  np.testing.assert_array_equal(draw(dict(temperature=0.0), big, uniforms[:BIG_DRAWS]),
                                big.argmax(-1))


def fixed_decode(logits, tokens, cache, num_new):
  """The same logits for every row and position."""
  return jnp.broadcast_to(logits, (tokens.shape[0], logits.shape[0])), cache + num_new


def test_sample_steps_frequencies_with_row_keys():
  case = SAMPLER_CASES[5]  # temperature, top-k and top-p together
  problems, samples = 200, NUM_DRAWS // 200
  rows = problems * samples
  logits = jnp.asarray(LOGITS, jnp.float32)
  state, _ = jit_prefill(fixed_decode, logits, np.zeros((rows,), np.int32),
                         np.full((rows, 1), 3, np.int32), np.ones((rows,), np.int32), 8)
  state = state.with_keys(row_keys(jax.random.PRNGKey(0), jnp.arange(problems), samples))
  sampler = Sampler(case["temperature"], case.get("top_p", 1.0), case.get("top_k", 0))
  out = jit_sample_steps(fixed_decode, logits, state, sampler, max_new_tokens=2, eos_id=-1,
                         max_steps=None, pad_id=PAD)
  probs = reference_probs(LOGITS, **case)
  tokens = np.asarray(out.tokens)
  check_frequencies(tokens[:, 0], probs)
  check_frequencies(tokens[:, 1], probs)
  # Positions are drawn independently: P(same token twice) = sum p^2.
  same, p_same = np.mean(tokens[:, 0] == tokens[:, 1]), np.sum(probs ** 2)
  assert abs(same - p_same) < 5 * math.sqrt(p_same * (1 - p_same) / rows)
  # log_probs are at temperature 1 without truncation, whatever the sampler.
  np.testing.assert_allclose(out.log_probs, np.asarray(jax.nn.log_softmax(logits))[tokens],
                             rtol=1e-5)


def test_row_keys():
  rng = jax.random.PRNGKey(7)
  keys = np.asarray(row_keys(rng, jnp.array([5, 9, 2]), 4))
  assert keys.shape == (12, 2)
  assert len({tuple(k) for k in keys}) == 12
  np.testing.assert_array_equal(keys, row_keys(rng, jnp.array([5, 9, 2]), 4))
  # A problem's keys depend on its id, not on where it sits in the batch.
  np.testing.assert_array_equal(keys[4:8], row_keys(rng, jnp.array([9]), 4))
  np.testing.assert_array_equal(keys[:2], row_keys(rng, jnp.array([5]), 2))
  other = np.asarray(row_keys(jax.random.PRNGKey(8), jnp.array([5, 9, 2]), 4))
  assert not (other == keys).all(axis=1).any()
  # A new-style typed key gives the same raw keys as the legacy key of its seed.
  for samples in (1, 4):
    np.testing.assert_array_equal(
        row_keys(jax.random.key(7), jnp.array([5, 9, 2]), samples),
        row_keys(rng, jnp.array([5, 9, 2]), samples))


# ---------------------------------------------------------------- real transformer

CFG = get_config("tiny")
MAX_LENGTH = 24
PROMPTS = [[5, 9, 14, 3, 7], [40, 2, 33], [8, 8, 61, 20, 11, 4]]


@pytest.fixture(scope="module")
def tiny_params():
  shapes = jax.eval_shape(lambda k: init_params(CFG, k), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)

  def draw_leaf(path, leaf):
    is_norm = jax.tree_util.keystr(path).endswith("['weight']")
    value = (1.0 if is_norm else 0.0) + 0.3 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value.astype(leaf.dtype))

  return jax.tree_util.tree_map_with_path(draw_leaf, shapes)


def pad_prompts(prompts, width=None):
  width = width or max(map(len, prompts))
  out = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    out[i, :len(p)] = p
  return jnp.asarray(out), jnp.asarray([len(p) for p in prompts], jnp.int32)


DECODE = transformer_decode_fn(CFG)


@host_jit(static_argnames=("samples",))
def _prepare(params, prompts, lengths, problem_ids, samples):
  cache = KVCache.init(CFG, prompts.shape[0], MAX_LENGTH)
  state, _ = prefill(DECODE, params, cache, prompts, lengths, MAX_LENGTH)
  state = state.repeat(samples)
  return state.with_keys(row_keys(jax.random.PRNGKey(42), problem_ids, samples))


def prepare(params, prompts, problem_ids, samples=2, width=None):
  padded, lengths = pad_prompts(prompts, width)
  return _prepare(params, padded, lengths, jnp.asarray(problem_ids, jnp.int32), samples)


def real_steps(params, state, sampler, **kwargs):
  kwargs.setdefault("max_new_tokens", 8)
  kwargs.setdefault("max_steps", None)
  return jit_sample_steps(DECODE, params, state, sampler, eos_id=-1, pad_id=0, **kwargs)


@host_jit
def _manual_greedy(params, buffer, lengths):
  """Greedy decoding by full forward passes over the whole row, no cache."""
  def step(carry, _):
    buffer, lengths = carry
    logits = forward(params, CFG, buffer, num_new=lengths, logits="last").logits
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    buffer = buffer.at[jnp.arange(buffer.shape[0]), lengths].set(token)
    return (buffer, lengths + 1), (token, jax.nn.log_softmax(logits)[
        jnp.arange(buffer.shape[0]), token])

  _, (tokens, log_probs) = jax.lax.scan(step, (buffer, lengths), None, length=8)
  return tokens.T, log_probs.T


def test_greedy_matches_manual_loop(tiny_params):
  state = prepare(tiny_params, PROMPTS, [0, 1, 2], samples=2)
  out = real_steps(tiny_params, state, Sampler.greedy())
  buffer, lengths = pad_prompts(PROMPTS, MAX_LENGTH)
  tokens, log_probs = _manual_greedy(tiny_params, buffer, lengths)
  np.testing.assert_array_equal(out.tokens, np.repeat(np.asarray(tokens), 2, axis=0))
  np.testing.assert_allclose(out.log_probs, np.repeat(np.asarray(log_probs), 2, axis=0),
                             atol=1e-4)
  np.testing.assert_array_equal(out.lengths, 8)
  assert len(np.unique(np.asarray(tokens))) > 3  # not a degenerate model


def test_rows_do_not_depend_on_batch(tiny_params):
  sampler = Sampler(temperature=1.0)
  alone = real_steps(tiny_params, prepare(tiny_params, PROMPTS[:1], [10], width=6), sampler)
  batch = real_steps(tiny_params, prepare(tiny_params, [PROMPTS[1], PROMPTS[0], PROMPTS[2]],
                                          [20, 10, 30]), sampler)
  np.testing.assert_array_equal(batch.tokens[2:4], alone.tokens)
  np.testing.assert_allclose(batch.log_probs[2:4], alone.log_probs, atol=1e-5)
  # Different samples of one problem, and different problems, differ.
  tokens = np.asarray(batch.tokens)
  assert len({tuple(t) for t in tokens}) == 6


class SeparatorTokenizer:
  """Every fourth id of the tiny model's vocabulary is "\\n\\n"."""

  vocab_size = CFG.vocab_size

  def token_text(self, token_id):
    return "\n\n" if token_id % 4 == 0 else "w"


def test_split_calls_match_one_call(tiny_params):
  delimiter = StepDelimiter.build(SeparatorTokenizer())
  state = prepare(tiny_params, PROMPTS, [0, 1, 2])
  sampler = Sampler(temperature=1.0)
  kwargs = dict(delimiter=delimiter, max_new_tokens=10, max_step_tokens=4)
  once = real_steps(tiny_params, state, sampler, max_steps=2, **kwargs)
  first = real_steps(tiny_params, state, sampler, max_steps=1, **kwargs)
  second = real_steps(tiny_params, first.state, sampler, max_steps=1, **kwargs)
  np.testing.assert_array_equal(once.num_steps, 2)
  np.testing.assert_array_equal(first.num_steps, 1)
  for r in range(state.num_rows):
    n1, n2 = int(first.lengths[r]), int(second.lengths[r])
    assert int(once.lengths[r]) == n1 + n2
    for field in ("tokens", "step_end"):
      joined = np.concatenate([getattr(first, field)[r, :n1], getattr(second, field)[r, :n2]])
      np.testing.assert_array_equal(getattr(once, field)[r, :n1 + n2], joined)
    joined = np.concatenate([first.log_probs[r, :n1], second.log_probs[r, :n2]])
    np.testing.assert_allclose(once.log_probs[r, :n1 + n2], joined, atol=1e-5)
  for field in ("lengths", "pending", "finished", "step_tokens", "delimiter_state"):
    np.testing.assert_array_equal(getattr(once.state, field), getattr(second.state, field))
  # Steps of several lengths occurred (the delimiter and the cap both ended steps).
  assert len(set(np.asarray(first.lengths).tolist())) > 1


def test_append_then_sample_matches_longer_prompt(tiny_params):
  forced = [[17, 23, 29], [31, 37, 41], [43, 47, 53]]
  num_new = [3, 1, 2]
  sampler = Sampler(temperature=0.9, top_p=0.9)
  state = prepare(tiny_params, PROMPTS, [0, 1, 2])
  appended, count = jit_append_tokens(
      DECODE, tiny_params, state, jnp.asarray(np.repeat(forced, 2, axis=0), jnp.int32),
      jnp.asarray(np.repeat(num_new, 2), jnp.int32))
  assert int(count) == 2 * sum(num_new)
  longer = prepare(tiny_params, [p + f[:n] for p, f, n in zip(PROMPTS, forced, num_new)],
                   [0, 1, 2])
  np.testing.assert_array_equal(appended.lengths, longer.lengths)
  np.testing.assert_array_equal(appended.pending, longer.pending)
  a = real_steps(tiny_params, appended, sampler)
  b = real_steps(tiny_params, longer, sampler)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-5)


# ---------------------------------------------------------------- bad input


def test_bad_input_raises(delimiter):
  script, state = scripted_run([[A]], [[A]])
  with pytest.raises(ValueError, match="max_new_tokens"):
    sample_steps(scripted_decode, script, state, Sampler(), max_new_tokens=0, eos_id=EOS)
  with pytest.raises(ValueError, match="max_steps"):
    sample_steps(scripted_decode, script, state, Sampler(), max_new_tokens=4, eos_id=EOS,
                 max_steps=0)
  for bad in (Sampler(top_p=0.0), Sampler(top_p=1.5), Sampler(top_k=-1),
              Sampler(temperature=-0.5)):
    with pytest.raises(ValueError):
      bad.check()
  assert Sampler(temperature=0.0, top_p=1.0, top_k=0).check() is not None
  with pytest.raises(ValueError, match="delimiter"):
    StepDelimiter.build(FakeTokenizer(), "")
  prompts = jnp.zeros((2, 4), jnp.int32)
  for lengths in ([0, 3], [2, 5]):
    with pytest.raises(ValueError, match="prompt_lengths"):
      prefill(scripted_decode, script, fake_cache(2), prompts, jnp.asarray(lengths, jnp.int32),
              max_length=8)
