"""A decoder-only Llama-family transformer (Llama 3.x, Qwen2.x, Mistral) in Flax.

RMSNorm, rotary embeddings (with Llama 3 frequency scaling), grouped-query
attention, SwiGLU MLP, optional q/k/v bias and tied embeddings. Parameter names
mirror the Hugging Face module names (`layers_3/self_attn/q_proj`), so importing a
checkpoint is a rename and a transpose.

One entry point serves training, prefill and decoding: `forward` takes a chunk of
K tokens per row. Without a cache it is an ordinary causal forward pass over the
chunk (right-padded rows are fine). With a cache the chunk is appended to each row
at that row's own position (`cache.lengths`), `num_new[b]` of its K tokens are valid,
and every query attends to the row's whole valid prefix.

With a `SharedPrefixCache` (after `share`) each row attends to its problem's prompt,
stored once, and to its own slots: the prompt's scores are computed for a problem's
n rows at once (the rows folded into the query axis, so the prompt is read once per
problem, not once per row), and the two blocks are joined by one softmax (their
maxima and sums merged, as fused attention kernels do).

Attention with a cache reads only a prefix of the cache's slots: the shortest of a
few static views (`attention_views`) that holds every row's tokens, chosen at run
time (`lax.switch`). Searches allocate caches for the longest solution while most
rounds and decode steps are far shorter, and slots past every row's length would
only be masked out.

B denotes the batch dimension, K the chunk length, V the vocabulary, H the width.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models import attention, paged
from ttcjax.models.cache import KVCache, SharedPrefixCache, shard_heads
from ttcjax.models.config import TransformerConfig

LogitsMode = Literal["all", "last", "none"]


def attention_views(capacity: int) -> tuple[int, ...]:
  """The cache prefixes attention may read: halvings of the capacity down to an
  eighth, rounded up to multiples of 16 slots, and the capacity itself (a view within
  16 slots of the next is not worth its compile)."""
  views = {capacity}
  for fraction in (2, 4, 8):
    view = -(-capacity // fraction)
    view = -(-view // 16) * 16
    if 16 <= view <= capacity - 16:
      views.add(view)
  return tuple(sorted(views))


class ModelOutput(NamedTuple):
  """Result of one forward pass.

  Attributes:
    logits: float32 [B, K, V] ("all"), [B, V] at each row's last valid token
      ("last"), or None ("none").
    hidden: final-norm hidden states [B, K, H] (what PRM heads read).
    cache: the updated cache, or None when called without one.
  """

  logits: jax.Array | None
  hidden: jax.Array
  cache: KVCache | None


def rope_frequencies(config: TransformerConfig) -> np.ndarray:
  """Inverse rotary frequencies [head_dim / 2], with Llama 3 / linear scaling."""
  dim = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64)
                                          .astype(np.float32) / dim))
  inv_freq = inv_freq.astype(np.float32)
  scaling = config.rope_scaling
  if scaling is None:
    return inv_freq
  if scaling.rope_type == "linear":
    return (inv_freq / scaling.factor).astype(np.float32)
  # Llama 3: keep high frequencies, divide low ones by `factor`, interpolate between.
  old_len = scaling.original_max_position_embeddings
  low_freq_wavelen = old_len / scaling.low_freq_factor
  high_freq_wavelen = old_len / scaling.high_freq_factor
  wavelen = 2 * np.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = (old_len / wavelen - scaling.low_freq_factor) / (
      scaling.high_freq_factor - scaling.low_freq_factor)
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates x [B, K, heads, D] by positions [B, K] (half-split convention of HF)."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, K, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


class RMSNorm(nn.Module):
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return weight.astype(self.dtype) * normed.astype(self.dtype)


class Linear(nn.Module):
  """A dense layer that multiplies [tokens, in] matrices.

  Flattening the leading axes keeps every matrix multiply (and its gradients)
  two-dimensional, which XLA's CPU backend runs several times faster than the
  same product over [B, K, in] inputs.
  """

  features: int
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.normal(0.02), (x.shape[-1], self.features),
                        self.param_dtype)
    y = x.reshape(-1, x.shape[-1]).astype(self.dtype) @ kernel.astype(self.dtype)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y.reshape(*x.shape[:-1], self.features)


def _dense(features, config, name, use_bias=False):
  return Linear(features, use_bias, config.jnp_dtype, config.jnp_param_dtype, name=name)


class Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, positions, keys_cache, values_cache, key_positions, key_valid,
               view_index=None, write_slots=None, prefix=None, pages=None):
    """Grouped-query attention.

    Args:
      x: [B, K, H] inputs of the new tokens.
      positions: [B, K] positions of the new tokens.
      keys_cache, values_cache: [B, Hkv, C, D] buffers the new keys/values are
        written into, or None (attend within the chunk only).
      key_positions: [B, Ck] position of every key slot.
      key_valid: [B, Ck] whether a key slot holds a real token.
      view_index: with a cache, which of `attention_views(C)` to read (it must hold
        every valid slot); None reads all C slots.
      write_slots: [B, K] cache slots of the new tokens (None: their positions).
      prefix: with a shared prompt, (keys [B', Hkv, Cp, D], values, valid [B', Cp])
        of the B' prompts that B = B' * n rows read (see `attention.attend_shared`).
      pages: with paged rows (`paged.PagedRows`), the buffers are page pools
        [Np, Hkv, P, D] and this is (table [B, T], copy_from, copy_to, page [B, K],
        slot [B, K]): the copies on write `PagedRows.reserve` asked for, then where
        each new token goes; attention reads the view's pages through the table.

    Returns:
      ([B, K, H] output, updated keys buffer or None, updated values buffer or None).
    """
    cfg = self.config
    batch, chunk, _ = x.shape
    heads, kv_heads, dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = _dense(heads * dim, cfg, "q_proj", cfg.attention_bias)(x).reshape(batch, chunk, heads, dim)
    k = _dense(kv_heads * dim, cfg, "k_proj", cfg.attention_bias)(x).reshape(batch, chunk, kv_heads, dim)
    v = _dense(kv_heads * dim, cfg, "v_proj", cfg.attention_bias)(x).reshape(batch, chunk, kv_heads, dim)
    inv_freq = rope_frequencies(cfg)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)

    # Attention runs as [B, Hkv, G*K, D] x [B, Hkv, Ck, D] batched matrix multiplies:
    # the G query heads sharing a key head are folded into the query axis.
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, K, D]
    if keys_cache is None:
      all_k, all_v = k, v
    elif pages is not None:
      table, copy_from, copy_to, page, slot = pages
      keys_cache = paged.write_pages(paged.copy_pages(keys_cache, copy_from, copy_to), k, page,
                                     slot)
      values_cache = paged.write_pages(paged.copy_pages(values_cache, copy_from, copy_to), v,
                                       page, slot)
      all_k = all_v = None  # read page by page below
    else:
      # Slot == position; writes past the capacity are dropped (the caller checks room).
      rows = jnp.arange(batch)[:, None, None]
      heads_index = jnp.arange(kv_heads)[None, :, None]
      slots = (positions if write_slots is None else write_slots)[:, None, :]
      all_k = shard_heads(keys_cache.at[rows, heads_index, slots].set(
          k.astype(keys_cache.dtype), mode="drop"))
      all_v = shard_heads(values_cache.at[rows, heads_index, slots].set(
          v.astype(values_cache.dtype), mode="drop"))
      keys_cache, values_cache = all_k, all_v

    groups = heads // kv_heads
    q = q.reshape(batch, chunk, kv_heads, groups, dim).transpose(0, 2, 3, 1, 4)
    q = q.reshape(batch, kv_heads, groups * chunk, dim)

    def read(view):
      """The first `view` slots of every row's keys and values [B, Hkv, view, D]."""
      if pages is None:
        return all_k[:, :, :view], all_v[:, :, :view]
      size = keys_cache.shape[2]
      return (paged.read_pages(keys_cache, pages[0], view // size),
              paged.read_pages(values_cache, pages[0], view // size))

    def attend(view):
      """Attention over the first `view` key slots (the mask built at that width)."""
      view_k, view_v = read(view)
      key_pos, valid = key_positions[:, :view], key_valid[:, :view]
      allowed = valid[:, None, :] & (key_pos[:, None, :] <= positions[:, :, None])
      if cfg.sliding_window is not None:
        allowed &= key_pos[:, None, :] > positions[:, :, None] - cfg.sliding_window
      allowed = jnp.broadcast_to(allowed[:, None], (batch, groups) + allowed.shape[1:])
      allowed = allowed.reshape(batch, 1, groups * chunk, view)
      if prefix is None:
        return attention.attend(q, view_k, view_v, allowed, cfg.jnp_dtype, cfg.attention)
      prefix_keys, prefix_values, prefix_valid = prefix
      n = batch // prefix_valid.shape[0]
      prefix_pos = jnp.arange(prefix_valid.shape[1], dtype=jnp.int32)[None, None, :]
      prefix_allowed = jnp.repeat(prefix_valid, n, axis=0)[:, None, :]  # before every query
      if cfg.sliding_window is not None:
        prefix_allowed = prefix_allowed & (prefix_pos > positions[:, :, None] - cfg.sliding_window)
      prefix_allowed = jnp.broadcast_to(prefix_allowed[:, None],
                                        (batch, groups, chunk, prefix_valid.shape[1]))
      prefix_allowed = prefix_allowed.reshape(batch, 1, groups * chunk, -1)
      return attention.attend_shared(q, prefix_keys, prefix_values, prefix_allowed,
                                     view_k, view_v, allowed, cfg.jnp_dtype, cfg.attention)

    width = key_positions.shape[1]  # the slots a row can hold
    if view_index is None:
      out = attend(width)
    else:  # read only the cache prefix every row's tokens fit in
      out = jax.lax.switch(view_index, [functools.partial(attend, view)
                                        for view in attention_views(width)])
    out = out.reshape(batch, kv_heads, groups, chunk, dim).transpose(0, 3, 1, 2, 4)
    out = out.reshape(batch, chunk, heads * dim)
    return _dense(cfg.hidden_size, cfg, "o_proj")(out), keys_cache, values_cache


class MLP(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    gate = _dense(cfg.intermediate_size, cfg, "gate_proj")(x)
    up = _dense(cfg.intermediate_size, cfg, "up_proj")(x)
    return _dense(cfg.hidden_size, cfg, "down_proj")(nn.silu(gate) * up)


class DecoderLayer(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, positions, keys_cache, values_cache, key_positions, key_valid,
               view_index=None, write_slots=None, prefix=None, pages=None):
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.jnp_dtype, cfg.jnp_param_dtype, name=name)
    attn_out, keys_cache, values_cache = Attention(cfg, name="self_attn")(
        norm("input_layernorm")(x), positions, keys_cache, values_cache,
        key_positions, key_valid, view_index, write_slots, prefix, pages)
    x = x + attn_out
    x = x + MLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
    return x, keys_cache, values_cache


class Transformer(nn.Module):
  """The Llama-family decoder. See the module docstring for the calling modes."""

  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.jnp_dtype,
                                 param_dtype=cfg.jnp_param_dtype,
                                 embedding_init=nn.initializers.normal(0.02))
    self.layers = [DecoderLayer(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
    self.norm = RMSNorm(cfg.rms_norm_eps, cfg.jnp_dtype, cfg.jnp_param_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = _dense(cfg.vocab_size, cfg, "lm_head")

  def __call__(self, tokens, cache: KVCache | SharedPrefixCache | None = None, num_new=None,
               logits: LogitsMode = "all") -> ModelOutput:
    batch, chunk = tokens.shape
    if num_new is None:
      num_new = jnp.full((batch,), chunk, jnp.int32)
    num_new = num_new.astype(jnp.int32)
    if isinstance(cache, SharedPrefixCache) and not cache.is_shared:  # filling the prompts
      out = self(tokens, cache.prefix, num_new, logits)
      return out._replace(cache=cache.replace(prefix=out.cache))
    offsets = jnp.arange(chunk, dtype=jnp.int32)[None, :]
    prefix = write_slots = pages = None
    if isinstance(cache, SharedPrefixCache):
      # Own slot j of a row holds position prompt length + j.
      own, prompt_lengths = cache.rows, cache.prefix_lengths
      if isinstance(own, paged.PagedRows):  # pages to write, copied on write first
        own, copy_from, copy_to = own.reserve(num_new, chunk)
        pages = (own.table, copy_from, copy_to) + own.write_targets(num_new, chunk)
      positions = (prompt_lengths + own.lengths)[:, None] + offsets
      write_slots = own.lengths[:, None] + offsets
      new_lengths = own.lengths + num_new
      slots = jnp.arange(own.capacity, dtype=jnp.int32)[None, :]
      key_positions = prompt_lengths[:, None] + slots
      key_valid = slots < new_lengths[:, None]
      keys, values = own.keys, own.values
      views = jnp.asarray(attention_views(own.capacity), jnp.int32)
      view_index = jnp.minimum(jnp.searchsorted(views, jnp.max(new_lengths)), len(views) - 1)
      prefix_valid = (jnp.arange(cache.prefix.capacity, dtype=jnp.int32)[None, :]
                      < cache.prefix.lengths[:, None])
      prefix = [(k, v, prefix_valid) for k, v in zip(cache.prefix.keys, cache.prefix.values)]
    elif cache is None:
      positions = jnp.broadcast_to(offsets, (batch, chunk))
      key_positions, key_valid = positions, offsets < num_new[:, None]
      keys, values = (None,) * len(self.layers), (None,) * len(self.layers)
      view_index = None
    else:
      positions = cache.lengths[:, None] + offsets
      new_lengths = cache.lengths + num_new
      slots = jnp.arange(cache.capacity, dtype=jnp.int32)[None, :]
      key_positions = jnp.broadcast_to(slots, (batch, cache.capacity))
      key_valid = slots < new_lengths[:, None]
      keys, values = cache.keys, cache.values
      # The first view holding the longest row (writes past the capacity are dropped).
      views = jnp.asarray(attention_views(cache.capacity), jnp.int32)
      view_index = jnp.minimum(jnp.searchsorted(views, jnp.max(new_lengths)), len(views) - 1)

    x = self.embed_tokens(tokens)
    new_keys, new_values = [], []
    for i, (layer, k_buf, v_buf) in enumerate(zip(self.layers, keys, values)):
      x, k_buf, v_buf = layer(x, positions, k_buf, v_buf, key_positions, key_valid, view_index,
                              write_slots, None if prefix is None else prefix[i], pages)
      new_keys.append(k_buf)
      new_values.append(v_buf)
    hidden = self.norm(x)

    new_cache = None
    if isinstance(cache, SharedPrefixCache):
      new_cache = cache.replace(rows=own.replace(keys=tuple(new_keys), values=tuple(new_values),
                                                 lengths=own.lengths + num_new))
    elif cache is not None:
      new_cache = KVCache(keys=tuple(new_keys), values=tuple(new_values),
                          lengths=cache.lengths + num_new)
    if logits == "none":
      return ModelOutput(None, hidden, new_cache)
    if logits == "last":
      last = jnp.clip(num_new - 1, 0, chunk - 1)
      selected = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
      return ModelOutput(self.project(selected), hidden, new_cache)
    if logits != "all":
      raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}.")
    return ModelOutput(self.project(hidden), hidden, new_cache)

  def project(self, hidden):
    """Output logits (float32) for hidden states [..., H]."""
    if self.config.tie_word_embeddings:
      flat = self.embed_tokens.attend(hidden.reshape(-1, hidden.shape[-1]))
      return flat.reshape(*hidden.shape[:-1], -1).astype(jnp.float32)
    return self.lm_head(hidden).astype(jnp.float32)


def init_params(config: TransformerConfig, rng: jax.Array):
  """Random parameters (normal(0.02) matrices, unit norms), as a pytree."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Transformer(config).init(rng, tokens, logits="all")["params"]


def forward(params, config: TransformerConfig, tokens: jax.Array,
            cache: KVCache | None = None, num_new: jax.Array | None = None,
            logits: LogitsMode = "all") -> ModelOutput:
  """Runs the transformer on a chunk of tokens (pure; jit it with config static).

  Args:
    params: the parameter pytree (`init_params` or `load_hf_checkpoint`).
    config: the model's config.
    tokens: [B, K] int32 token ids.
    cache: optional cache with B rows; the chunk is written at each row's position.
    num_new: [B] number of valid tokens of each row's chunk (default K). Rows with
      0 leave their cache untouched.
    logits: which logits to compute ("all", "last", "none").

  Returns:
    A `ModelOutput`.
  """
  if tokens.ndim != 2:
    raise ValueError(f"tokens must have shape [batch, length], got {tokens.shape}.")
  if cache is not None:
    if cache.batch_size != tokens.shape[0]:
      raise ValueError(
          f"Cache has {cache.batch_size} rows but tokens have batch {tokens.shape[0]}; "
          "gather or repeat the cache to match the batch.")
    if tokens.shape[1] > cache.capacity:
      raise ValueError(
          f"A chunk of {tokens.shape[1]} tokens does not fit a cache of capacity "
          f"{cache.capacity}; allocate a larger cache.")
  return Transformer(config).apply({"params": params}, tokens, cache, num_new, logits)
