"""Model configurations for the Llama family (Llama 3.x, Qwen2.x, Mistral).

A `TransformerConfig` is a frozen, hashable dataclass so that it can be a static
argument of jitted functions. `from_dict` rejects unknown keys so that a typo in a
config file fails loudly instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from ttcjax.models import attention as attention_kernels

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3 rotary-frequency scaling (`rope_type: llama3` in HF configs).

  `rope_type="linear"` divides every frequency by `factor` (position interpolation).
  """

  rope_type: str = "llama3"
  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def __post_init__(self):
    if self.rope_type not in ("llama3", "linear"):
      raise ValueError(
          f"Unsupported rope_scaling type {self.rope_type!r}; ttcjax implements "
          "'llama3' and 'linear'. Remove rope_scaling or convert the checkpoint.")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and numerics of a decoder-only Llama-family transformer.

  Attributes:
    vocab_size: number of token embeddings (rows of the embedding matrix).
    hidden_size: model width H.
    num_layers: number of decoder blocks L.
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention when < num_heads).
    intermediate_size: SwiGLU hidden width.
    head_dim: per-head width; defaults to hidden_size // num_heads.
    rope_theta: rotary base.
    rope_scaling: optional Llama 3 / linear frequency scaling.
    rms_norm_eps: epsilon of every RMSNorm.
    attention_bias: q/k/v projections carry a bias (Qwen2).
    tie_word_embeddings: the output projection reuses the embedding matrix.
    sliding_window: attend only to the last `sliding_window` positions (Mistral v0.1).
    max_position_embeddings: the context length the model was trained for.
    param_dtype: storage dtype of the parameters ("float32" or "bfloat16").
    dtype: compute dtype of activations ("float32" or "bfloat16"). Norms, softmax
      and logits are always computed in float32.
    attention: the attention kernel ("auto": cuDNN's fused attention on NVIDIA GPUs,
      XLA's `dot_product_attention` on TPU, ttcjax's reference einsums on CPU; or one
      of "reference", "xla", "cudnn"; see `ttcjax.models.attention`). A choice of
      numerics, not of weights: checkpoints load under any of them.
  """

  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  intermediate_size: int
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  rms_norm_eps: float = 1e-5
  attention_bias: bool = False
  tie_word_embeddings: bool = False
  sliding_window: int | None = None
  max_position_embeddings: int = 8192
  param_dtype: str = "float32"
  dtype: str = "float32"
  attention: str = "auto"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                 "num_kv_heads", "intermediate_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads}) for grouped-query attention.")
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError(
            f"hidden_size ({self.hidden_size}) is not divisible by num_heads "
            f"({self.num_heads}); set head_dim explicitly.")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}.")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"{name} must be one of {sorted(_DTYPES)}, got {getattr(self, name)!r}.")
    attention_kernels.check_implementation(self.attention)
    if isinstance(self.rope_scaling, Mapping):
      object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))

  @property
  def jnp_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def num_params(self) -> int:
    """Parameter count, embeddings included (the output head once if tied)."""
    h, d = self.hidden_size, self.head_dim
    attn = h * d * (self.num_heads + 2 * self.num_kv_heads) + self.num_heads * d * h
    if self.attention_bias:
      attn += d * (self.num_heads + 2 * self.num_kv_heads)
    mlp = 3 * h * self.intermediate_size
    per_layer = attn + mlp + 2 * h
    embed = self.vocab_size * h
    head = 0 if self.tie_word_embeddings else self.vocab_size * h
    return self.num_layers * per_layer + embed + head + h

  @property
  def num_non_embedding_params(self) -> int:
    """Parameters touched by matrix multiplies per token, except the output head."""
    return self.num_params - self.vocab_size * self.hidden_size * (
        1 if self.tie_word_embeddings else 2)

  def replace(self, **changes) -> "TransformerConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    return out

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "TransformerConfig":
    """Builds a config, rejecting keys that are not fields (a typo, or another model)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ValueError(
          f"Unknown TransformerConfig keys {unknown}; valid keys are {sorted(names)}.")
    values = dict(values)
    if isinstance(values.get("rope_scaling"), Mapping):
      values["rope_scaling"] = RopeScaling(**values["rope_scaling"])
    return cls(**values)


_LLAMA3_ROPE = RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)

# Shapes of published checkpoints. Real weights come from `load_hf_checkpoint`; these
# let you plan memory and FLOPs or run random-weight stand-ins at true size. The
# comments give the config.json values each preset copies (hidden / intermediate /
# layers / heads / kv heads / head_dim / vocab / rope_theta / max positions / tied).
PRESETS: dict[str, TransformerConfig] = {
    # meta-llama/Llama-3.2-1B(-Instruct): 2048 / 8192 / 16 / 32 / 8 / 64 / 128256 /
    # 500000 (llama3 scaling, factor 32) / 131072 / tied; bfloat16.
    "llama-3.2-1b": TransformerConfig(
        vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32,
        num_kv_heads=8, intermediate_size=8192, head_dim=64, rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE, tie_word_embeddings=True,
        max_position_embeddings=131072, param_dtype="bfloat16", dtype="bfloat16"),
    "llama-3.2-3b": TransformerConfig(
        vocab_size=128256, hidden_size=3072, num_layers=28, num_heads=24,
        num_kv_heads=8, intermediate_size=8192, head_dim=128, rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE, tie_word_embeddings=True,
        max_position_embeddings=131072, param_dtype="bfloat16", dtype="bfloat16"),
    # meta-llama/Llama-3.1-8B(-Instruct), and RLHFlow/Llama3.1-8B-PRM-Deepseek-Data
    # fine-tuned from it: 4096 / 14336 / 32 / 32 / 8 / 128 / 128256 / 500000 (llama3
    # scaling, factor 8) / 131072 / untied; bfloat16.
    "llama-3.1-8b": TransformerConfig(
        vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32,
        num_kv_heads=8, intermediate_size=14336, rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192),
        max_position_embeddings=131072, param_dtype="bfloat16", dtype="bfloat16"),
    "qwen2.5-1.5b": TransformerConfig(
        vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12,
        num_kv_heads=2, intermediate_size=8960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, attention_bias=True, tie_word_embeddings=True,
        max_position_embeddings=32768, param_dtype="bfloat16", dtype="bfloat16"),
    # Qwen/Qwen2.5-Math-1.5B(-Instruct): 1536 / 8960 / 28 / 12 / 2 / 128 / 151936 /
    # 10000 / 4096 / tied; q/k/v bias, rms_norm_eps 1e-6; bfloat16.
    "qwen2.5-math-1.5b": TransformerConfig(
        vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12,
        num_kv_heads=2, intermediate_size=8960, rope_theta=10000.0,
        rms_norm_eps=1e-6, attention_bias=True, tie_word_embeddings=True,
        max_position_embeddings=4096, param_dtype="bfloat16", dtype="bfloat16"),
    "qwen2.5-7b": TransformerConfig(
        vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
        num_kv_heads=4, intermediate_size=18944, rope_theta=1000000.0,
        rms_norm_eps=1e-6, attention_bias=True, max_position_embeddings=32768,
        param_dtype="bfloat16", dtype="bfloat16"),
    # Qwen/Qwen2.5-Math-7B(-Instruct), and the backbone of Qwen/Qwen2.5-Math-PRM-7B:
    # 3584 / 18944 / 28 / 28 / 4 / 128 / 152064 / 10000 / 4096 / untied; q/k/v bias,
    # rms_norm_eps 1e-6; bfloat16.
    "qwen2.5-math-7b": TransformerConfig(
        vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
        num_kv_heads=4, intermediate_size=18944, rope_theta=10000.0,
        rms_norm_eps=1e-6, attention_bias=True, max_position_embeddings=4096,
        param_dtype="bfloat16", dtype="bfloat16"),
    "mistral-7b": TransformerConfig(
        vocab_size=32768, hidden_size=4096, num_layers=32, num_heads=32,
        num_kv_heads=8, intermediate_size=14336, rope_theta=1000000.0,
        max_position_embeddings=32768, param_dtype="bfloat16", dtype="bfloat16"),
    # Tiny shapes for tests: GQA, odd sizes, both tied and untied heads.
    "tiny": TransformerConfig(
        vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=48, max_position_embeddings=256),
    "tiny-qwen": TransformerConfig(
        vocab_size=96, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
        intermediate_size=64, attention_bias=True, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=256),
}


def get_config(name: str, **overrides) -> TransformerConfig:
  """Returns a preset by name, optionally with fields replaced."""
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; choose one of {sorted(PRESETS)}.")
  return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
