"""Tiny random-weight Hugging Face models saved locally, for import/parity tests.

Nothing is downloaded: each builder constructs a transformers model from a small
config under a fixed torch seed and (optionally) writes it with `save_pretrained`.
The shapes are small but exercise every feature the importer maps: grouped-query
attention, Llama 3 rope scaling (with `original_max_position_embeddings=64`, so all
three frequency bands -- kept, interpolated and divided -- occur at head_dim 16),
q/k/v biases and tied embeddings (Qwen2), a sliding window shorter than the test
sequences and a head_dim that is not hidden/heads (Mistral), and the Qwen2.5-Math-PRM
layout (Qwen2 backbone + Linear(H, H) -> ReLU -> Linear(H, 2) under `score.*`).

Weights are drawn with std `INIT_STD` = 0.1 rather than transformers' 0.02: with
0.02 and H=64 the attention is nearly uniform and the logits nearly flat, so a
wrong rotary frequency or a swapped matrix would move the logits by little more than
the float32 noise the parity tests allow. Norm weights (ones at init) and biases
(zeros at init) are randomised too, so a mis-mapped norm or bias cannot hide.

bos/eos/pad ids are None so that `generate` never stops early or masks a token.

`save_bpe_tokenizer` trains a tiny tokenizer (byte-level BPE, or SentencePiece-style)
with a family's special tokens and chat template, for the PRM adapter tests.
"""

from __future__ import annotations

import copy
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen2Model)

INIT_STD = 0.1
_NO_SPECIAL_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def _randomize(module: torch.nn.Module, seed: int) -> None:
  """Redraws every parameter: matrices N(0, INIT_STD), norms N(1, 0.1), biases N(0, 0.05)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in module.named_parameters():
      noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
      if name.endswith("norm.weight"):
        param.copy_(1.0 + 0.1 * noise)
      elif name.endswith(".bias"):
        param.copy_(0.05 * noise)
      else:
        param.copy_(INIT_STD * noise)


def llama_config(**overrides) -> LlamaConfig:
  """Llama 3 style: GQA (4 heads, 2 KV heads), llama3 rope scaling, untied, no bias."""
  values = dict(
      vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=96, max_position_embeddings=512,
      rope_theta=10000.0, rms_norm_eps=1e-5, attention_bias=False, tie_word_embeddings=False,
      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
      **_NO_SPECIAL_TOKENS)
  values.update(overrides)
  return LlamaConfig(**values)


def qwen2_config(**overrides) -> Qwen2Config:
  """Qwen2 style: q/k/v biases, tied embeddings, rope_theta 1e6, 3 layers."""
  values = dict(
      vocab_size=160, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=112, max_position_embeddings=512,
      rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
      use_sliding_window=False, **_NO_SPECIAL_TOKENS)
  values.update(overrides)
  return Qwen2Config(**values)


def mistral_config(**overrides) -> MistralConfig:
  """Mistral v0.1 style: sliding window 16, head_dim 24 != 64 / 4, untied."""
  values = dict(
      vocab_size=192, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, head_dim=24, intermediate_size=80, max_position_embeddings=512,
      rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=16, tie_word_embeddings=False,
      **_NO_SPECIAL_TOKENS)
  values.update(overrides)
  return MistralConfig(**values)


_BUILDERS = {
    "llama": (llama_config, LlamaForCausalLM),
    "qwen2": (qwen2_config, Qwen2ForCausalLM),
    "mistral": (mistral_config, MistralForCausalLM),
}
ARCHS = tuple(_BUILDERS)


def build_causal_lm(arch: str, seed: int = 0, **config_overrides) -> torch.nn.Module:
  """A float32, eval-mode, randomly initialised `arch` ("llama", "qwen2", "mistral")."""
  make_config, model_cls = _BUILDERS[arch]
  torch.manual_seed(seed)
  config = make_config(**config_overrides)
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  model = model_cls(config)
  _randomize(model, seed)
  if config.tie_word_embeddings:
    model.tie_weights()
  return model.eval()


def save_model(model: torch.nn.Module, path: str, dtype: torch.dtype = torch.float32,
               max_shard_size: int | str | None = None) -> str:
  """`save_pretrained` in `dtype` (a copy is cast; `model` is untouched); returns path.

  `max_shard_size` (e.g. "40KB") writes shards plus model.safetensors.index.json.
  """
  if dtype != torch.float32:
    model = copy.deepcopy(model).to(dtype)
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(path, safe_serialization=True, **kwargs)
  return path


def save_causal_lm(arch: str, path: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                   max_shard_size: int | str | None = None, **config_overrides):
  """Builds and saves a tiny `arch` model; returns the float32 torch model."""
  model = build_causal_lm(arch, seed, **config_overrides)
  save_model(model, path, dtype=dtype, max_shard_size=max_shard_size)
  return model


class Qwen2ProcessRewardModel(torch.nn.Module):
  """The Qwen2.5-Math-PRM layout: Qwen2Model + Linear(H, H) -> ReLU -> Linear(H, 2)."""

  def __init__(self, config: Qwen2Config):
    super().__init__()
    self.config = config
    self.model = Qwen2Model(config)
    hidden = config.hidden_size
    self.score = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                     torch.nn.Linear(hidden, 2))

  def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, 2] of every position."""
    return self.score(self.model(input_ids=input_ids).last_hidden_state)

  def probabilities(self, input_ids: torch.Tensor) -> torch.Tensor:
    """P(step is correct) [B, T]: softmax(logits)[..., 1], as the Qwen PRM is read."""
    return torch.softmax(self.forward(input_ids), dim=-1)[..., 1]


def save_qwen2_prm(path: str, seed: int = 0, **config_overrides) -> Qwen2ProcessRewardModel:
  """Builds a tiny Qwen2-PRM and saves it (float32 safetensors + config.json).

  The tensors are `model.*` (backbone) and `score.{0,2}.{weight,bias}` (head), and
  config.json names the architecture "Qwen2ForProcessRewardModel", as the published
  Qwen2.5-Math-PRM checkpoints do. Returns the torch module (eval mode).
  """
  torch.manual_seed(seed)
  config = qwen2_config(tie_word_embeddings=False, **config_overrides)
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  prm = Qwen2ProcessRewardModel(config)
  _randomize(prm, seed)
  prm.eval()
  os.makedirs(path, exist_ok=True)
  state = {k: v.detach().contiguous() for k, v in prm.state_dict().items()}
  save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  hf = config.to_dict()
  hf["architectures"] = ["Qwen2ForProcessRewardModel"]
  hf.pop("_attn_implementation", None)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  return prm


def save_bpe_tokenizer(path: str, corpus, special_tokens=(), added_tokens=(),
                       tokenizer_config=None, vocab_size: int = 300,
                       bos_token: str | None = None, sentencepiece: bool = False,
                       characters_only: bool = False) -> int:
  """Trains a tiny byte-level BPE on `corpus` and saves tokenizer.json (+ config).

  Every whitespace and punctuation character is its own pre-token, so no merge
  crosses a space, a newline or a "." (Llama 3's and Qwen2's pre-tokenizers split
  punctuation from words and digits too): text cut at whitespace, punctuation or
  special tokens tokenizes piece by piece exactly as it does whole, which lets a test
  compare a layout assembled from token pieces with the official whole-text
  tokenization.

  Args:
    path: directory to write into (created).
    corpus: strings to learn merges from.
    special_tokens: added special tokens (ids 0, 1, ... in this order).
    added_tokens: added non-special tokens (e.g. ".\\n\\n", as Llama 3 / Qwen merge it).
    tokenizer_config: written as tokenizer_config.json (chat_template, eos_token, ...).
    vocab_size: BPE vocabulary (256 bytes + merges + specials).
    bos_token: a special token the post-processor prepends, as Llama 2 / Mistral do.
    sentencepiece: instead, the layout of Llama 2 / Mistral tokenizer.json files:
      words start with "▁" (text encoded alone gets one too), merges never cross a
      "▁", and newlines (kept out of the merges) fall back to byte tokens "<0x0A>".
    characters_only: no merges and no byte tokens beyond the corpus's characters:
      any sequence of (non-special) tokens decodes to text that encodes back to it,
      so a random policy's steps survive a trip through text.

  Returns:
    The vocabulary size, added tokens included.
  """
  from tokenizers import (AddedToken, Regex, Tokenizer, decoders,  # pylint: disable=import-outside-toplevel
                          models, pre_tokenizers, processors, trainers)

  if sentencepiece:
    tokenizer = Tokenizer(models.BPE(byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)])
    special_tokens = list(special_tokens) + [f"<0x{b:02X}>" for b in range(256)]
    corpus, alphabet = [text.replace("\n", " ") for text in corpus], []
  else:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s"), behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
  if characters_only:
    alphabet, vocab_size = [], 0  # the corpus's characters, no merges
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                initial_alphabet=alphabet, show_progress=False)
  tokenizer.train_from_iterator(list(corpus), trainer)
  tokenizer.add_tokens([AddedToken(t, normalized=False) for t in added_tokens])
  if bos_token is not None:
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos_token} $A", special_tokens=[(bos_token, tokenizer.token_to_id(bos_token))])
  os.makedirs(path, exist_ok=True)
  tokenizer.save(os.path.join(path, "tokenizer.json"))
  config = dict(tokenizer_class="PreTrainedTokenizerFast", **(tokenizer_config or {}))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2)
  return tokenizer.get_vocab_size(with_added_tokens=True)
