"""The transformer's cached, padded, forked and mixed-precision paths agree with a
plain full forward pass; configs and inputs are validated.

Weights are redrawn with std 0.2 (norm weights 1 +- 0.2): with the default 0.02 the
attention is nearly uniform and the logits nearly flat, so a wrong position, mask or
cache slot would move the logits by little more than float32 noise.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttcjax.models.cache import KVCache
from ttcjax.models.config import PRESETS, RopeScaling, TransformerConfig, get_config
from ttcjax.models.transformer import attention_views, forward, init_params, rope_frequencies
from ttcjax.sampling import prefill, transformer_decode_fn
from jax_helpers import host_jit, random_tree

ATOL = 1e-5

CONFIGS = {
    "tiny": get_config("tiny"),
    "tiny-qwen": get_config("tiny-qwen"),
    # A window shorter than the test sequences, so it actually cuts attention.
    "sliding": get_config("tiny", sliding_window=3),
    # rope_theta=100 at head_dim 8 puts the four frequencies in all three Llama 3
    # bands (kept, interpolated, divided) for original_max_position_embeddings=64.
    "rope-scaled": get_config("tiny", rope_theta=100.0, rope_scaling=RopeScaling(
        "llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)),
}
NAMES = list(CONFIGS)
CONFIGS["tiny-qwen-bf16"] = CONFIGS["tiny-qwen"].replace(param_dtype="bfloat16", dtype="bfloat16")


def random_params(config: TransformerConfig, seed: int, std: float = 0.2):
  """Parameters with init_params's tree, redrawn from numpy."""
  return random_tree(lambda k: init_params(config, k), seed, std)


def random_tokens(seed, shape, vocab):
  return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


@pytest.fixture(scope="module")
def models():
  out = {name: (cfg, random_params(cfg, i)) for i, (name, cfg) in enumerate(CONFIGS.items())}
  # The bfloat16 model is the float32 tiny-qwen, rounded.
  out["tiny-qwen-bf16"] = (CONFIGS["tiny-qwen-bf16"], jax.tree.map(
      lambda x: x.astype(jnp.bfloat16), out["tiny-qwen"][1]))
  return out


PAD_LENGTHS = (7, 3, 5)  # prompt lengths of the three rows, padded to width 8
CHUNK = (4, 0, 3)  # forced tokens per row after the prompt (row 1 takes none)
STEPS = 3  # then single tokens


def _gather_chunk(tokens, start, width):
  idx = jnp.minimum(start[:, None] + jnp.arange(width)[None, :], tokens.shape[1] - 1)
  return jnp.take_along_axis(tokens, idx, axis=1)


@host_jit(static_argnames=("config",))
def _scenarios(params, config, tokens, junk):
  """Everything the per-config tests compare, in one compile per config.

  Row b of `tokens` [3, 16] is a sequence; the full forward over it is the
  reference. The same rows are also run as a right-padded batch (prompt b holds
  PAD_LENGTHS[b] tokens, the rest is junk) without a cache, and with a cache: a
  padded prefill, a chunk of CHUNK[b] forced tokens (num_new per row), then STEPS
  single tokens, each row at its own position.
  """
  out = {"full": forward(params, config, tokens).logits}
  lengths = jnp.array(PAD_LENGTHS, jnp.int32)
  padded = jnp.where(jnp.arange(8)[None, :] < lengths[:, None], tokens[:, :8], junk)
  out["padded"] = forward(params, config, padded, num_new=lengths).logits
  cache = KVCache.init(config, tokens.shape[0], 16)
  prefilled = forward(params, config, padded, cache, lengths)
  out["prefill"], out["prefill_cache"] = prefilled.logits, prefilled.cache
  num_new = jnp.array(CHUNK, jnp.int32)
  chunk = forward(params, config, _gather_chunk(tokens, prefilled.cache.lengths, 4),
                  prefilled.cache, num_new)
  out["chunk"], out["chunk_cache"] = chunk.logits, chunk.cache

  def step(cache, _):
    token = _gather_chunk(tokens, cache.lengths, 1)
    result = forward(params, config, token, cache)
    return result.cache, result.logits[:, 0]

  out["final_cache"], out["steps"] = jax.lax.scan(step, chunk.cache, None, length=STEPS)
  return out


def _models_and_tokens(name):
  cfg = CONFIGS[name]
  tokens = random_tokens(1, (3, 16), cfg.vocab_size)
  # Padding is random junk, not zeros, so any leak into valid positions shows.
  junk = random_tokens(2, (3, 8), cfg.vocab_size)
  return cfg, tokens, junk


_SCENARIOS = {}


def get_scenario(name, models):
  if name not in _SCENARIOS:
    cfg, tokens, junk = _models_and_tokens(name)
    _SCENARIOS[name] = _scenarios(models[name][1], cfg, tokens, junk)
  return _SCENARIOS[name]


@pytest.fixture(scope="module", params=NAMES)
def scenario(request, models):
  return get_scenario(request.param, models)


def test_cached_decoding_matches_full_forward(scenario):
  full = scenario["full"]
  assert full.dtype == jnp.float32 and full.shape[:2] == (3, 16)
  # The logits are not flat, so the comparisons have teeth.
  assert float(np.std(full)) > 0.3
  for b, n in enumerate(PAD_LENGTHS):
    np.testing.assert_allclose(scenario["prefill"][b, :n], full[b, :n], atol=ATOL, rtol=0)
    c = CHUNK[b]
    np.testing.assert_allclose(scenario["chunk"][b, :c], full[b, n:n + c], atol=ATOL, rtol=0)
    np.testing.assert_allclose(scenario["steps"][:, b], full[b, n + c:n + c + STEPS],
                               atol=ATOL, rtol=0)
  np.testing.assert_array_equal(scenario["prefill_cache"].lengths, PAD_LENGTHS)
  np.testing.assert_array_equal(scenario["chunk_cache"].lengths,
                                np.add(PAD_LENGTHS, CHUNK))
  np.testing.assert_array_equal(scenario["final_cache"].lengths,
                                np.add(PAD_LENGTHS, CHUNK) + STEPS)


def test_attention_views():
  assert attention_views(208) == (32, 64, 112, 208)
  assert attention_views(64) == (16, 32, 64)
  assert attention_views(16) == (16,) and attention_views(5) == (5,)
  assert attention_views(33) == (16, 33) and attention_views(48) == (16, 32, 48)


@host_jit(static_argnames=("config",))
def _decode_across_views(params, config, tokens, prompt_lengths):
  """Prefills rows of different lengths into a 64-slot cache, appends a chunk of 8
  tokens, then decodes one token at a time, so attention reads the 16-, 32- and
  64-slot views in turn."""
  cache = KVCache.init(config, tokens.shape[0], 64)
  cache = forward(params, config, tokens[:, :16], cache, prompt_lengths).cache
  chunk = forward(params, config, _gather_chunk(tokens, cache.lengths, 8), cache)

  def step(cache, _):
    result = forward(params, config, _gather_chunk(tokens, cache.lengths, 1), cache)
    return result.cache, result.logits[:, 0]

  return chunk.logits, jax.lax.scan(step, chunk.cache, None, length=tokens.shape[1] - 24)[1]


@pytest.mark.parametrize("name", NAMES)
def test_cached_decoding_reads_only_the_live_views(models, name):
  config, params = models[name]
  tokens = random_tokens(3, (2, 60), config.vocab_size)
  full = forward(params, config, tokens).logits
  lengths = (10, 14)  # the longer row decides: 16 slots, then 32 (the chunk), then 64
  chunk, steps = _decode_across_views(params, config, tokens, jnp.array(lengths, jnp.int32))
  # 60 positions of float32 round-off: up to 1.1e-5 here, as much when attention reads
  # the whole capacity; a wrong view moves logits by far more.
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(chunk[b], full[b, n:n + 8], atol=3e-5, rtol=0)
    np.testing.assert_allclose(steps[:, b], full[b, n + 8:n + 44], atol=3e-5, rtol=0)
  # With a cache, every layer's attention is a conditional over the three views.
  cache = KVCache.init(config, 2, 64)
  jaxpr = str(jax.make_jaxpr(lambda p, t: forward(p, config, t, cache))(params, tokens[:, :1]))
  assert jaxpr.count("cond[") == config.num_layers
  assert "cond[" not in str(jax.make_jaxpr(lambda p, t: forward(p, config, t))(params, tokens))


def test_padded_batch_matches_rows_alone(scenario):
  # Causality makes the first n logits of the full row those of the row alone.
  for b, n in enumerate(PAD_LENGTHS):
    np.testing.assert_allclose(scenario["padded"][b, :n], scenario["full"][b, :n], atol=ATOL)


def test_zero_num_new_leaves_rows_untouched(scenario):
  before, after = scenario["prefill_cache"], scenario["chunk_cache"]
  for a, b in zip(before.keys + before.values, after.keys + after.values):
    # Cache buffers are [B, Hkv, C, D].
    np.testing.assert_array_equal(a[1, :, :PAD_LENGTHS[1]], b[1, :, :PAD_LENGTHS[1]])
    np.testing.assert_array_equal(a[0, :, :PAD_LENGTHS[0]], b[0, :, :PAD_LENGTHS[0]])
    assert not np.allclose(a[0, :, 7:11], b[0, :, 7:11])  # row 0 did take its chunk
  # ... and row 1 continues from its prompt (test_cached_decoding checks the logits).


@host_jit(static_argnames=("config",))
def _modes(params, config, tokens, num_new):
  return (forward(params, config, tokens, num_new=num_new),
          forward(params, config, tokens, num_new=num_new, logits="last"),
          forward(params, config, tokens, num_new=num_new, logits="none"))


def test_logits_modes(models):
  cfg, params = models["tiny-qwen"]
  tokens = random_tokens(2, (3, 6), cfg.vocab_size)
  num_new = np.array([6, 2, 4], np.int32)
  full, last, none = _modes(params, cfg, tokens, num_new)
  np.testing.assert_allclose(last.logits, full.logits[np.arange(3), num_new - 1], atol=ATOL)
  assert none.logits is None and none.cache is None
  np.testing.assert_allclose(none.hidden, full.hidden, atol=ATOL)
  with pytest.raises(ValueError, match="logits"):
    jax.eval_shape(lambda p, t: forward(p, cfg, t, logits="every"), params, tokens)


@host_jit(static_argnames=("config",))
def _windows(params, config, tokens):
  return [forward(params, config.replace(sliding_window=w), tokens).logits
          for w in (config.sliding_window, None, tokens.shape[1], tokens.shape[1] - 1)]


def test_sliding_window_cuts_attention(models):
  cfg, params = models["sliding"]
  windowed, unwindowed, whole, all_but_one = _windows(
      params, cfg, random_tokens(5, (1, 10), cfg.vocab_size))
  window = cfg.sliding_window

  def differs(a, b):
    return np.abs(a - b).max(axis=-1) > 1e-3

  # Position p attends to positions p - window + 1 .. p: the first `window`
  # positions see everything, every later one misses some.
  np.testing.assert_allclose(windowed[:, :window], unwindowed[:, :window], atol=ATOL)
  assert differs(windowed[0, window:], unwindowed[0, window:]).all()
  # A window as long as the sequence changes nothing; one shorter, only the last.
  np.testing.assert_allclose(whole, unwindowed, atol=ATOL)
  np.testing.assert_array_equal(differs(all_but_one[0], unwindowed[0]), [False] * 9 + [True])


def test_rope_scaling_bands():
  cfg = CONFIGS["rope-scaled"]
  scaled = rope_frequencies(cfg)
  plain = rope_frequencies(cfg.replace(rope_scaling=None))
  wavelen = 2 * np.pi / plain
  s = cfg.rope_scaling
  low = s.original_max_position_embeddings / s.low_freq_factor
  high = s.original_max_position_embeddings / s.high_freq_factor
  kept, divided = wavelen < high, wavelen > low
  medium = ~kept & ~divided
  assert kept.any() and divided.any() and medium.any()
  np.testing.assert_allclose(scaled[kept], plain[kept], rtol=1e-6)
  np.testing.assert_allclose(scaled[divided], plain[divided] / s.factor, rtol=1e-6)
  smooth = (s.original_max_position_embeddings / wavelen[medium] - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  np.testing.assert_allclose(
      scaled[medium], (1 - smooth) * plain[medium] / s.factor + smooth * plain[medium],
      rtol=1e-5)
  linear = rope_frequencies(cfg.replace(rope_scaling=RopeScaling("linear", factor=2.0)))
  np.testing.assert_allclose(linear, plain / 2, rtol=1e-6)


@host_jit(static_argnames=("config",))
def _fork(params, config, prompts, rows, cont, parent_cont, rewind_cont):
  cache = forward(params, config, prompts, KVCache.init(config, prompts.shape[0], 12)).cache
  child = forward(params, config, cont, cache.gather(rows))
  parent = forward(params, config, parent_cont, cache)
  prefix = jnp.full(rows.shape, prompts.shape[1], jnp.int32)
  rewound = forward(params, config, rewind_cont, child.cache.truncate(prefix))
  full = forward(params, config, jnp.concatenate([prompts[rows], cont], axis=1)).logits
  full2 = forward(params, config, jnp.concatenate([prompts[rows], rewind_cont], axis=1)).logits
  return child.logits, child.cache, parent.logits, rewound.logits, full, full2


def test_forked_rows_continue_as_parent(models):
  cfg, params = models["tiny-qwen"]
  prompts = random_tokens(6, (2, 6), cfg.vocab_size)
  rows = np.array([1, 0, 1, 1], np.int32)
  cont = random_tokens(7, (4, 3), cfg.vocab_size)
  # Parent 1 continued with child 0's tokens, parent 0 with child 1's.
  parent_cont = np.stack([cont[1], cont[0]])
  rewind_cont = random_tokens(8, (4, 3), cfg.vocab_size)
  child, child_cache, parent, rewound, full, full2 = _fork(
      params, cfg, prompts, rows, cont, parent_cont, rewind_cont)
  np.testing.assert_array_equal(child_cache.lengths, [9, 9, 9, 9])
  np.testing.assert_allclose(child[0], parent[1], atol=ATOL)
  np.testing.assert_allclose(child[1], parent[0], atol=ATOL)
  np.testing.assert_allclose(child, full[:, 6:], atol=ATOL)
  # Rewinding a child to the prompt and writing new tokens forgets the old ones.
  np.testing.assert_allclose(rewound, full2[:, 6:], atol=ATOL)


@host_jit(static_argnames=("config", "copies"))
def _repeat(params, config, prompts, next_tokens, copies):
  def prefill_cache(p):
    return forward(params, config, p, KVCache.init(config, p.shape[0], 10)).cache

  shared = prefill_cache(prompts).repeat(copies)
  separate = prefill_cache(jnp.repeat(prompts, copies, axis=0))
  step_shared = forward(params, config, next_tokens[:, None], shared).logits
  step_separate = forward(params, config, next_tokens[:, None], separate).logits
  return shared, separate, step_shared, step_separate


def test_repeat_matches_separate_prefills(models):
  cfg, params = models["tiny"]
  prompts = random_tokens(9, (2, 5), cfg.vocab_size)
  next_tokens = random_tokens(10, (6,), cfg.vocab_size)  # a different token per copy
  shared, separate, step_shared, step_separate = _repeat(params, cfg, prompts, next_tokens, 3)
  assert shared.batch_size == 6
  np.testing.assert_array_equal(shared.lengths, separate.lengths)
  for a, b in zip(shared.keys + shared.values, separate.keys + separate.values):
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
  np.testing.assert_allclose(step_shared, step_separate, atol=ATOL)
  # Rows b * 3 + j are copies of prompt b.
  np.testing.assert_array_equal(shared.keys[0][0], shared.keys[0][2])
  assert not np.allclose(shared.keys[0][0, :, :5], shared.keys[0][3, :, :5])


def test_bfloat16_close_to_float32(models):
  s32 = get_scenario("tiny-qwen", models)
  s16 = get_scenario("tiny-qwen-bf16", models)
  assert s16["prefill_cache"].keys[0].dtype == jnp.bfloat16
  assert s16["full"].dtype == s16["steps"].dtype == jnp.float32
  full32, full16 = np.asarray(s32["full"]), np.asarray(s16["full"])
  tol = 0.1 * np.abs(full32).max()
  assert np.abs(full16 - full32).max() < tol
  for b, n in enumerate(PAD_LENGTHS):
    c = CHUNK[b]
    for got, want in ((s16["prefill"][b, :n], full16[b, :n]),
                      (s16["chunk"][b, :c], full16[b, n:n + c]),
                      (s16["steps"][:, b], full16[b, n + c:n + c + STEPS])):
      got = np.asarray(got)
      assert np.isfinite(got).all()
      np.testing.assert_allclose(got, want, atol=tol, rtol=0)
  # Rounding noise, not a different function: the top token mostly agrees.
  assert np.mean(full16.argmax(-1) == full32.argmax(-1)) >= 0.75


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_num_params_counts_every_leaf(name):
  cfg = PRESETS[name]
  shapes = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == cfg.num_params


def test_num_params_of_published_checkpoints():
  # Parameter counts the model cards publish.
  assert PRESETS["llama-3.2-1b"].num_params == 1_235_814_400
  assert PRESETS["llama-3.1-8b"].num_params == 8_030_261_248
  assert PRESETS["qwen2.5-1.5b"].num_params == 1_543_714_304
  assert PRESETS["qwen2.5-7b"].num_params == 7_615_616_512


@pytest.mark.parametrize("changes", [
    dict(attention_bias=True, tie_word_embeddings=True),
    dict(head_dim=12),
    dict(num_kv_heads=4, attention_bias=True),
])
def test_num_params_variants(changes):
  cfg = get_config("tiny", **changes)
  params = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == cfg.num_params


def test_config_from_dict():
  cfg = PRESETS["llama-3.2-1b"]
  again = TransformerConfig.from_dict(cfg.to_dict())
  assert again == cfg and hash(again) == hash(cfg)
  assert isinstance(again.rope_scaling, RopeScaling)
  values = get_config("tiny").to_dict()
  values["num_kv_head"] = 2  # a typo
  with pytest.raises(ValueError, match="num_kv_head"):
    TransformerConfig.from_dict(values)
  with pytest.raises(ValueError):
    get_config("no-such-model")


@pytest.mark.parametrize("changes", [
    dict(num_heads=6, num_kv_heads=4),  # heads not a multiple of kv heads
    dict(num_heads=4, num_kv_heads=8),
    dict(hidden_size=30, head_dim=None),  # not divisible by 4 heads
    dict(head_dim=7),  # odd head_dim
    dict(num_layers=0),
    dict(num_kv_heads=0),
    dict(dtype="float64"),
    dict(param_dtype="int8"),
])
def test_config_rejects_bad_shapes(changes):
  with pytest.raises(ValueError):
    get_config("tiny", **changes)


def test_rope_scaling_rejects_unknown_type():
  with pytest.raises(ValueError, match="rope_scaling"):
    RopeScaling("yarn")
  with pytest.raises(ValueError):
    TransformerConfig.from_dict({**get_config("tiny").to_dict(),
                                 "rope_scaling": {"rope_type": "dynamic"}})


# ---------------------------------------------------------------- bad input


def test_forward_rejects_bad_input(models):
  cfg, params = models["tiny"]
  with pytest.raises(ValueError, match="shape"):
    forward(params, cfg, jnp.zeros((5,), jnp.int32))
  cache = KVCache.init(cfg, 2, 8)
  with pytest.raises(ValueError, match="rows"):
    forward(params, cfg, jnp.zeros((3, 1), jnp.int32), cache)
  with pytest.raises(ValueError, match="capacity"):
    forward(params, cfg, jnp.zeros((2, 9), jnp.int32), cache)
  with pytest.raises(ValueError):
    KVCache.init(cfg, 2, 0)
  with pytest.raises(ValueError, match="max_length"):
    prefill(transformer_decode_fn(cfg), params, KVCache.init(cfg, 2, 8),
            jnp.zeros((2, 9), jnp.int32), jnp.array([9, 3], jnp.int32), max_length=8)
