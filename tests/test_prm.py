"""Process reward models: incremental scoring through the PRM's own cache equals
scoring whole sequences, step tables are gathered exactly, and token-logit heads
read the language model's logits."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models.cache import KVCache
from ttcjax.models.config import get_config
from ttcjax.models.prm import (PrmConfig, gather_step_scores, init_prm_params, score_steps,
                               step_likelihood_features,
                               token_scores)
from ttcjax.models.transformer import forward
from jax_helpers import host_jit, random_tree

HEADS = {
    "value-linear": PrmConfig(get_config("tiny"), kind="value", num_labels=1),
    "value-mlp-2-labels": PrmConfig(get_config("tiny-qwen"), kind="value", num_labels=2,
                                    head_hidden=16),
    "token-logit-tied": PrmConfig(get_config("tiny-qwen"), kind="token_logit",
                                  positive_token_id=7, negative_token_id=11),
    "token-logit-untied": PrmConfig(get_config("tiny"), kind="token_logit",
                                    positive_token_id=60, negative_token_id=3),
}

LENGTHS = (16, 11, 13)
# Tokens each row adds per scoring round (as beam-search rounds would), chunk width 6.
ROUNDS = ((6, 4, 6), (5, 6, 3), (5, 1, 4))
CHUNK = 6
MAX_STEPS = 8


def random_prm_params(config: PrmConfig, seed: int, std: float = 0.2):
  """Parameters with init_prm_params's tree, redrawn from numpy."""
  return random_tree(lambda k: init_prm_params(config, k), seed, std)


def _take(x, start, width):
  idx = jnp.minimum(start[:, None] + jnp.arange(width)[None, :], x.shape[1] - 1)
  return jnp.take_along_axis(x, idx, axis=1)


@host_jit(static_argnames=("config",))
def _scenario(params, config, tokens, step_end):
  lengths = jnp.array(LENGTHS, jnp.int32)
  out = {"full": token_scores(params, config, tokens, num_new=lengths)[0],
         "table": score_steps(params, config, tokens, step_end, MAX_STEPS, lengths)}
  if config.kind == "token_logit":
    out["lm_logits"] = forward(params["backbone"], config.backbone, tokens).logits
  else:
    out["hidden"] = forward(params["backbone"], config.backbone, tokens, logits="none").hidden
  batch = tokens.shape[0]

  def round_(carry, num_new):
    cache, offset, first_step, scores, mask = carry
    chunk_scores, cache = token_scores(params, config, _take(tokens, offset, CHUNK), cache,
                                       num_new)
    ends = _take(step_end, offset, CHUNK) & (jnp.arange(CHUNK)[None, :] < num_new[:, None])
    table = gather_step_scores(chunk_scores, ends, MAX_STEPS, first_step)
    carry = (cache, offset + num_new, first_step + jnp.sum(ends, axis=1),
             jnp.where(table.mask, table.scores, scores), mask | table.mask)
    return carry, chunk_scores

  zeros = jnp.zeros((batch,), jnp.int32)
  init = (KVCache.init(config.backbone, batch, tokens.shape[1]), zeros, zeros,
          jnp.zeros((batch, MAX_STEPS), jnp.float32), jnp.zeros((batch, MAX_STEPS), bool))
  (cache, _, _, scores, mask), chunks = jax.lax.scan(
      round_, init, jnp.array(ROUNDS, jnp.int32))
  out["chunks"], out["cache_lengths"] = chunks, cache.lengths
  out["incremental_table"] = (scores, mask)
  return out


def reference_table(scores, step_end, lengths, max_steps):
  table = np.zeros((len(lengths), max_steps), np.float32)
  mask = np.zeros((len(lengths), max_steps), bool)
  for b, n in enumerate(lengths):
    ends = np.flatnonzero(step_end[b, :n])[:max_steps]
    table[b, :len(ends)] = scores[b, ends]
    mask[b, :len(ends)] = True
  return table, mask


@pytest.fixture(scope="module", params=list(HEADS))
def scored(request):
  config = HEADS[request.param]
  params = random_prm_params(config, seed=len(request.param))
  rng = np.random.default_rng(3)
  tokens = rng.integers(0, config.backbone.vocab_size, (3, 16)).astype(np.int32)
  step_end = np.zeros((3, 16), bool)
  # Row 0 has 10 steps, two more than MAX_STEPS (dropped), one at the last token;
  # rows 1 and 2 have step ends past their lengths (ignored).
  step_end[0, [1, 2, 3, 5, 6, 9, 11, 13, 14, 15]] = True
  step_end[1, [0, 3, 4, 8, 10, 12]] = True
  step_end[2, [1, 2, 7, 11, 14]] = True
  return config, params, tokens, step_end, _scenario(params, config, tokens, step_end)


def test_incremental_scores_match_full(scored):
  config, _, _, _, out = scored
  full = np.asarray(out["full"])
  np.testing.assert_array_equal(out["cache_lengths"], LENGTHS)
  assert ((full > 0) & (full < 1)).all()
  assert full.std() > 0.05  # scores are not all ~0.5, so the comparison has teeth
  offset = np.zeros(3, int)
  for chunk, num_new in zip(out["chunks"], ROUNDS):
    for b, n in enumerate(num_new):
      np.testing.assert_allclose(chunk[b, :n], full[b, offset[b]:offset[b] + n], atol=1e-5,
                                 err_msg=f"row {b}")
    offset += num_new
  np.testing.assert_array_equal(offset, LENGTHS)


def test_step_tables_match(scored):
  _, _, _, step_end, out = scored
  want_scores, want_mask = reference_table(np.asarray(out["full"]), step_end, LENGTHS,
                                           MAX_STEPS)
  np.testing.assert_array_equal(want_mask.sum(axis=1), [8, 5, 4])
  np.testing.assert_array_equal(out["table"].mask, want_mask)
  np.testing.assert_allclose(out["table"].scores, want_scores, atol=1e-6)
  inc_scores, inc_mask = out["incremental_table"]
  np.testing.assert_array_equal(inc_mask, want_mask)
  np.testing.assert_allclose(inc_scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("scored", ["token-logit-tied", "token-logit-untied"], indirect=True)
def test_token_logit_score_reads_lm_logits(scored):
  config, _, _, _, out = scored
  logits = np.asarray(out["lm_logits"], np.float64)
  want = 1 / (1 + np.exp(-(logits[..., config.positive_token_id]
                           - logits[..., config.negative_token_id])))
  for b, n in enumerate(LENGTHS):
    np.testing.assert_allclose(out["full"][b, :n], want[b, :n], atol=1e-5)


@pytest.mark.parametrize("scored", ["value-linear", "value-mlp-2-labels"], indirect=True)
def test_value_head_reads_hidden_state(scored):
  config, params, _, _, out = scored
  head = jax.tree.map(lambda x: np.asarray(x, np.float64), params["head"])
  x = np.asarray(out["hidden"], np.float64)
  if config.head_hidden is not None:
    x = np.maximum(x @ head["dense_0"]["kernel"] + head["dense_0"]["bias"], 0)
  logits = x @ head["dense_1"]["kernel"] + head["dense_1"]["bias"]
  if config.num_labels == 1:
    want = 1 / (1 + np.exp(-logits[..., 0]))
  else:  # softmax over two labels, the positive class is index 1
    want = 1 / (1 + np.exp(logits[..., 0] - logits[..., 1]))
  for b, n in enumerate(LENGTHS):
    np.testing.assert_allclose(out["full"][b, :n], want[b, :n], atol=1e-5)


jit_gather = host_jit(gather_step_scores, static_argnums=2)


def test_gather_step_scores_by_hand():
  scores = np.array([[.1, .2, .3, .4, .5], [.6, .7, .8, .9, 1.]])
  step_end = np.array([[0, 1, 0, 0, 1], [1, 1, 0, 1, 0]], bool)
  table = jit_gather(scores, step_end, 4)
  np.testing.assert_allclose(table.scores, [[.2, .5, 0, 0], [.6, .7, .9, 0]])
  np.testing.assert_array_equal(table.mask, [[1, 1, 0, 0], [1, 1, 1, 0]])
  # Steps beyond max_steps are dropped.
  table = jit_gather(scores, step_end, 2)
  np.testing.assert_allclose(table.scores, [[.2, .5], [.6, .7]])
  np.testing.assert_array_equal(table.mask, [[1, 1], [1, 1]])
  # first_step shifts each row's steps (incremental scoring); the shift can push
  # steps past the table.
  table = jit_gather(scores, step_end, 3, first_step=np.array([1, 2]))
  np.testing.assert_allclose(table.scores, [[0, .2, .5], [0, 0, .6]])
  np.testing.assert_array_equal(table.mask, [[0, 1, 1], [0, 0, 1]])
  with pytest.raises(ValueError, match="shape"):
    jit_gather(scores, step_end[:, :4], 2)


@host_jit(static_argnames=("config",))
def _score_steps_and_full(params, config, tokens, step_end, lengths):
  return (score_steps(params, config, tokens, step_end, 4, lengths),
          token_scores(params, config, tokens)[0])


def test_score_steps_ignores_step_ends_past_lengths():
  config = HEADS["value-linear"]
  params = random_prm_params(config, seed=0)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 6)), jnp.int32)
  step_end = jnp.array([[0, 1, 0, 1, 0, 1], [1, 0, 0, 1, 1, 1]], bool)
  table, full = _score_steps_and_full(params, config, tokens, step_end,
                                      jnp.array([4, 3], jnp.int32))
  np.testing.assert_array_equal(table.mask, [[1, 1, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_allclose(table.scores[:, :2], [[full[0, 1], full[0, 3]], [full[1, 0], 0]],
                             atol=1e-5)
  with pytest.raises(ValueError, match="shape"):
    token_scores(params, config, tokens[0])
  with pytest.raises(ValueError, match="rows"):
    token_scores(params, config, tokens, KVCache.init(config.backbone, 3, 8))


@pytest.mark.parametrize("name", list(HEADS))
def test_prm_num_params(name):
  config = HEADS[name]
  shapes = jax.eval_shape(lambda k: init_prm_params(config, k), jax.random.PRNGKey(0))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == config.num_params
  assert ("head" in shapes) == (config.kind == "value")


def test_prm_config_rejects_bad_input():
  tiny = get_config("tiny")
  with pytest.raises(ValueError, match="positive_token_id"):
    PrmConfig(tiny, kind="token_logit", negative_token_id=3)
  with pytest.raises(ValueError, match="negative_token_id"):
    PrmConfig(tiny, kind="token_logit", positive_token_id=3)
  with pytest.raises(ValueError):
    PrmConfig(tiny, kind="token_logit", positive_token_id=3, negative_token_id=64)
  with pytest.raises(ValueError, match="num_labels"):
    PrmConfig(tiny, kind="value", num_labels=3)
  with pytest.raises(ValueError, match="kind"):
    PrmConfig(tiny, kind="reward")


def test_steps_past_the_table_keep_the_last_score_when_asked():
  scores = jnp.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
  ends = jnp.array([[False, True, False, True, False, True]])
  dropped = gather_step_scores(scores, ends, 2)
  kept = gather_step_scores(scores, ends, 2, keep_last=True)
  np.testing.assert_allclose(dropped.scores, [[0.2, 0.4]])
  np.testing.assert_allclose(kept.scores, [[0.2, 0.6]])
  assert kept.mask.tolist() == [[True, True]]
  # Incremental chunks: two steps already scored, the next chunk overflows.
  later = gather_step_scores(scores[:, :2], ends[:, :2], 2, first_step=jnp.array([2]),
                             keep_last=True)
  np.testing.assert_allclose(later.scores, [[0.0, 0.2]])


# ------------------------------------------------------ step-likelihood features


def test_step_likelihood_features_on_a_hand_made_table():
  # Vocabulary of 4; log-probabilities chosen per position so each token's is known.
  log_p = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
  tokens = np.array([[0, 1, 2, 3, 0, 1, 2]], np.int32)
  # Logits at position t are log_p rolled so token t + 1 gets log_p[t % 4].
  logits = np.zeros((1, 7, 4), np.float32)
  want_lp = {}
  for t in range(6):
    row = np.roll(log_p, tokens[0, t + 1] - t % 4)
    logits[0, t] = row
    want_lp[t + 1] = row[tokens[0, t + 1]]
  step_end = np.zeros((1, 7), bool)
  step_end[0, [3, 6]] = True  # steps: tokens 2..3 (solution starts at 2) and 4..6
  feats = np.asarray(step_likelihood_features(jnp.asarray(logits), jnp.asarray(tokens),
                                              jnp.asarray(step_end), jnp.array([2])))
  # Step 1: its first token (position 2) is not counted; position 3 counts.
  np.testing.assert_allclose(feats[0, 2], [0.0, 0.0])
  np.testing.assert_allclose(feats[0, 3], [want_lp[3], want_lp[3]], rtol=1e-6)
  # Step 2: position 4 (first) not counted; 5 and 6 are.
  np.testing.assert_allclose(feats[0, 4], [0.0, 0.0])
  np.testing.assert_allclose(feats[0, 5], [want_lp[5], want_lp[5]], rtol=1e-6)
  np.testing.assert_allclose(feats[0, 6], [min(want_lp[5], want_lp[6]),
                                           (want_lp[5] + want_lp[6]) / 2], rtol=1e-6)
  # The prompt's positions (before the solution) count nothing.
  np.testing.assert_allclose(feats[0, :2], 0.0)


def test_step_likelihood_prm_scores_steps_the_same_whole_or_step_by_step():
  config = PrmConfig(get_config("tiny"), kind="value", head_hidden=8, step_likelihood=True)
  params = random_prm_params(config, seed=5)
  rng = np.random.default_rng(0)
  prompt, steps = 5, (4, 3, 5)  # a prompt of 5 tokens, then three steps
  length = prompt + sum(steps)
  tokens = jnp.asarray(rng.integers(0, config.backbone.vocab_size, (2, length)), jnp.int32)
  ends = np.zeros((2, length), bool)
  ends[:, np.cumsum(steps) + prompt - 1] = True
  whole = score_steps(params, config, tokens, jnp.asarray(ends), 3,
                      prompt_lengths=jnp.full((2,), prompt, jnp.int32))
  cache = KVCache.init(config.backbone, 2, length)
  _, cache = token_scores(params, config, tokens[:, :prompt], cache)
  start, incremental = prompt, []
  for n in steps:
    chunk_end = jnp.asarray(ends[:, start:start + n])
    scores, cache = token_scores(params, config, tokens[:, start:start + n], cache,
                                 step_end=chunk_end)
    incremental.append(np.asarray(scores)[:, -1])
    start += n
  np.testing.assert_allclose(np.asarray(whole.scores), np.stack(incremental, 1), atol=1e-5)
  # Where the solution starts matters: read from position 0 the features differ, so
  # whole sequences must say it.
  from_zero, _ = token_scores(params, config, tokens, step_end=jnp.asarray(ends))
  assert not np.allclose(np.asarray(from_zero)[ends], np.asarray(whole.scores).ravel())
  with pytest.raises(ValueError, match="needs prompt_lengths"):
    score_steps(params, config, tokens, jnp.asarray(ends), 3)


def test_step_likelihood_needs_a_value_head():
  with pytest.raises(ValueError, match="step_likelihood"):
    PrmConfig(get_config("tiny"), kind="token_logit", positive_token_id=1, negative_token_id=2,
              step_likelihood=True)
