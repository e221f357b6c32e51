"""Imports Hugging Face checkpoints (Llama, Qwen2, Mistral, Qwen2.5-Math-PRM).

Everything is read from a local checkpoint directory: `config.json` for the shape
and `*.safetensors` (one file, or shards listed by `model.safetensors.index.json`)
for the weights. Nothing is downloaded and torch is not needed: the safetensors
files are parsed here and memory-mapped, so each tensor is read from disk only when
it is converted, and the host holds at most one converted tensor at a time besides
the result.

Conversion is a rename plus a transpose: HF `nn.Linear` stores `weight` as
[out, in], a Flax `Dense` stores `kernel` as [in, out]. Embeddings ([V, H]), norm
weights ([H]) and biases ([out]) keep their layout. Every tensor is checked against
the shape the config implies, every tensor the model needs must be present, and a
tensor the model does not know is an error (it means the checkpoint belongs to
another architecture); only rotary `inv_freq` buffers, which are recomputed from the
config, and an unused `lm_head.weight` (tied embeddings, value PRMs) are skipped.

H denotes the hidden size, V the vocabulary, I the MLP width, D the head width.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from typing import Any, Mapping

import jax
import ml_dtypes
import numpy as np

from ttcjax.models.config import RopeScaling, TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.tokenizer import HFTokenizer
from ttcjax.models.transformer import init_params

CAUSAL_LM_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
PRM_ARCHITECTURES = ("Qwen2ForProcessRewardModel",)
SUPPORTED_ARCHITECTURES = CAUSAL_LM_ARCHITECTURES + PRM_ARCHITECTURES

_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("bool"),
}
_PARAM_DTYPES = ("float32", "bfloat16", "float16")
# Buffers some checkpoints carry that are recomputed from the config.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


# --------------------------------------------------------------------------- config


def _read_json(path: str, what: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise ValueError(f"No {what} at {path}; pass the directory of a Hugging Face checkpoint "
                     "(the one holding config.json and *.safetensors).")
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as err:
      raise ValueError(f"{path} is not valid JSON ({err}).") from None


def _architecture(hf: Mapping[str, Any], path: str) -> str:
  archs = hf.get("architectures") or []
  supported = [a for a in archs if a in SUPPORTED_ARCHITECTURES]
  if not supported:
    raise ValueError(
        f"Unsupported architecture {archs or '(none given)'} in {path}/config.json; ttcjax "
        f"imports {', '.join(SUPPORTED_ARCHITECTURES)}. Use a checkpoint of one of these "
        "families, or convert the weights to a TransformerConfig param tree yourself.")
  return supported[0]


def _normalize_dtype(dtype) -> str:
  name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
  if name not in _PARAM_DTYPES:
    raise ValueError(f"dtype must be one of {_PARAM_DTYPES}, got {dtype!r}.")
  return name


def _rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
  """(rope_theta, rope_scaling) from a transformers 4 or 5 config."""
  params = hf.get("rope_parameters")
  scaling = hf.get("rope_scaling")
  if isinstance(params, Mapping) and params and all(isinstance(v, Mapping) for v in params.values()):
    raise ValueError(
        "config.json has per-layer-type rope_parameters "
        f"({sorted(params)}); ttcjax supports one rotary setting for all layers.")
  theta = hf.get("rope_theta")
  if theta is None and isinstance(params, Mapping):
    theta = params.get("rope_theta")
  theta = 10000.0 if theta is None else float(theta)
  # transformers >= 5 writes everything to rope_parameters, older versions to rope_scaling.
  spec = scaling if isinstance(scaling, Mapping) else params
  if not isinstance(spec, Mapping):
    return theta, None
  rope_type = spec.get("rope_type") or spec.get("type")
  if rope_type in (None, "default"):
    return theta, None
  if rope_type == "linear":
    return theta, RopeScaling(rope_type="linear", factor=float(spec["factor"]))
  if rope_type == "llama3":
    try:
      return theta, RopeScaling(
          rope_type="llama3", factor=float(spec["factor"]),
          low_freq_factor=float(spec["low_freq_factor"]),
          high_freq_factor=float(spec["high_freq_factor"]),
          original_max_position_embeddings=int(spec["original_max_position_embeddings"]))
    except KeyError as err:
      raise ValueError(f"llama3 rope scaling in config.json lacks {err.args[0]!r}.") from None
  raise ValueError(
      f"Unsupported rope scaling type {rope_type!r} in config.json; ttcjax implements "
      "'llama3' and 'linear' (and none). Use a checkpoint without this scaling.")


def load_hf_config(path: str, dtype=None) -> TransformerConfig:
  """Reads a checkpoint directory's `config.json` into a `TransformerConfig`.

  Args:
    path: a local Hugging Face checkpoint directory (LlamaForCausalLM,
      Qwen2ForCausalLM, MistralForCausalLM or Qwen2ForProcessRewardModel).
    dtype: parameter and compute dtype ("float32", "bfloat16", "float16", or a
      numpy/jax dtype). Default: "bfloat16" for a bfloat16 checkpoint, else "float32".

  Returns:
    The backbone's config (for a PRM, the config of its transformer).

  Raises:
    ValueError: config.json is missing, names another architecture, or asks for a
      feature ttcjax does not implement (e.g. Qwen2 sliding windows, yarn rope).
  """
  hf = _read_json(os.path.join(path, "config.json"), "config.json")
  arch = _architecture(hf, path)
  is_qwen2 = arch.startswith("Qwen2")

  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise ValueError(f"hidden_act {act!r} in {path}/config.json is not supported; "
                     "ttcjax's MLP is SwiGLU (silu).")
  if hf.get("mlp_bias"):
    raise ValueError(f"mlp_bias=true in {path}/config.json is not supported (ttcjax MLPs "
                     "have no biases).")

  if is_qwen2:
    attention_bias = True  # Qwen2 always has q/k/v biases and an unbiased o_proj.
    layer_types = hf.get("layer_types") or []
    if hf.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
      raise ValueError(
          f"{path}/config.json enables Qwen2 sliding-window attention "
          "(use_sliding_window / layer_types), which ttcjax does not support; set "
          "use_sliding_window to false if the model was trained without it.")
    sliding_window = None
  else:
    attention_bias = bool(hf.get("attention_bias", False))
    sliding_window = hf.get("sliding_window") if arch == "MistralForCausalLM" else None

  theta, scaling = _rope(hf)
  if dtype is None:
    stored = hf.get("dtype", hf.get("torch_dtype"))
    dtype = "bfloat16" if stored == "bfloat16" else "float32"
  dtype = _normalize_dtype(dtype)

  try:
    heads = int(hf["num_attention_heads"])
    config = TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        intermediate_size=int(hf["intermediate_size"]),
        head_dim=int(hf["head_dim"]) if hf.get("head_dim") else None,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        attention_bias=attention_bias,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=int(sliding_window) if sliding_window else None,
        max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
        param_dtype=dtype,
        dtype=dtype)
  except KeyError as err:
    raise ValueError(f"{path}/config.json lacks the required key {err.args[0]!r}.") from None
  return config


# ----------------------------------------------------------------------- safetensors


class SafetensorsReader:
  """Lazy, memory-mapped access to the tensors of a checkpoint directory.

  Reads `model.safetensors.index.json` (sharded) or `model.safetensors` (single
  file). Only headers are parsed up front; `get` returns a read-only numpy view of
  the mapped file, bfloat16/float8 tensors as `ml_dtypes` arrays (numpy has no
  bfloat16 and the safetensors library cannot return one to numpy).

  Args:
    path: the checkpoint directory.

  Raises:
    ValueError: no safetensors weights, a shard listed in the index is missing, or
      a file is truncated or malformed.
  """

  def __init__(self, path: str):
    self.path = path
    index_file = os.path.join(path, "model.safetensors.index.json")
    single_file = os.path.join(path, "model.safetensors")
    if os.path.isfile(index_file):
      weight_map = _read_json(index_file, "safetensors index").get("weight_map")
      if not isinstance(weight_map, Mapping) or not weight_map:
        raise ValueError(f"{index_file} has no weight_map; the index is corrupt.")
      files = sorted(set(weight_map.values()))
      missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
      if missing:
        raise ValueError(
            f"Checkpoint shard(s) {missing} listed in {index_file} are missing from "
            f"{path}; download or copy every shard the index names.")
    elif os.path.isfile(single_file):
      weight_map, files = None, ["model.safetensors"]
    else:
      extra = " (found PyTorch .bin weights; re-save them with safe_serialization=True)" if any(
          f.endswith(".bin") for f in os.listdir(path)) else ""
      raise ValueError(f"No model.safetensors or model.safetensors.index.json in {path}{extra}.")

    self._entries: dict[str, tuple[str, np.dtype, tuple[int, ...], int, int]] = {}
    self._maps: dict[str, np.memmap] = {}
    for name in files:
      for key, entry in self._read_header(name).items():
        if weight_map is None or weight_map.get(key) == name:
          self._entries[key] = entry
    if weight_map is not None:
      absent = [k for k, f in weight_map.items() if k not in self._entries]
      if absent:
        raise ValueError(
            f"Tensors {absent[:5]} are listed in the index of {path} but absent from "
            "their shard files; the checkpoint is incomplete or the index is stale.")

  def _read_header(self, name: str):
    file = os.path.join(self.path, name)
    size = os.path.getsize(file)
    with open(file, "rb") as f:
      raw = f.read(8)
      if len(raw) < 8:
        raise ValueError(f"{file} is not a safetensors file (shorter than 8 bytes).")
      (header_len,) = struct.unpack("<Q", raw)
      if header_len > size - 8:
        raise ValueError(f"{file} is truncated or not a safetensors file.")
      try:
        header = json.loads(f.read(header_len))
      except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{file} has a corrupt safetensors header.") from None
    header.pop("__metadata__", None)
    start = 8 + header_len
    entries = {}
    for key, info in header.items():
      dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
      if dtype is None:
        raise ValueError(f"Tensor {key!r} in {file} has unsupported dtype {info.get('dtype')!r}.")
      shape = tuple(int(d) for d in info["shape"])
      begin, end = (int(o) for o in info["data_offsets"])
      if end - begin != math.prod(shape) * dtype.itemsize or start + end > size:
        raise ValueError(f"Tensor {key!r} in {file} has inconsistent offsets; the file is "
                         "truncated or corrupt.")
      entries[key] = (name, dtype, shape, start + begin, start + end)
    return entries

  def keys(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, key: str) -> bool:
    return key in self._entries

  def shape(self, key: str) -> tuple[int, ...]:
    return self._entries[key][2]

  def get(self, key: str) -> np.ndarray:
    """The tensor `key` as a read-only numpy array backed by the mapped file."""
    name, dtype, shape, begin, end = self._entries[key]
    if name not in self._maps:
      self._maps[name] = np.memmap(os.path.join(self.path, name), dtype=np.uint8, mode="r")
    return self._maps[name][begin:end].view(dtype).reshape(shape)


# ------------------------------------------------------------------------- weights


def _hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
  """HF tensor name of one of our params, and whether it is a transposed Linear."""
  parts = list(path)
  leaf = parts.pop()
  if parts[0] == "lm_head":
    return "lm_head.weight", True
  if parts[0].startswith("layers_"):
    parts = ["layers", parts[0][len("layers_"):]] + parts[1:]
  name = "model." + ".".join(parts)
  if leaf == "kernel":
    return name + ".weight", True
  if leaf == "embedding":
    return name + ".weight", False
  return f"{name}.{leaf}", False  # "weight" of norms, "bias"


def _convert(reader: SafetensorsReader, key: str, expected: tuple[int, ...],
             transpose: bool, dtype: np.dtype) -> jax.Array:
  if key not in reader:
    raise ValueError(
        f"Tensor {key!r} is missing from the checkpoint in {reader.path}; the weights do "
        "not match config.json (another architecture, or an incomplete checkpoint).")
  stored = reader.shape(key)
  want = tuple(reversed(expected)) if transpose else tuple(expected)
  if stored != want:
    raise ValueError(
        f"Tensor {key!r} has shape {stored} in the checkpoint but config.json implies "
        f"{want}; config.json and the weights disagree (check sizes such as "
        "hidden_size, intermediate_size, num_key_value_heads, head_dim, vocab_size).")
  array = reader.get(key)
  if transpose:
    array = array.T
  # One host copy in the target dtype (never a view of the mapped file), then device.
  return jax.device_put(np.array(array, dtype=dtype, order="C"))


def _load_tree(reader: SafetensorsReader, shapes, dtype: np.dtype, used: set[str],
               name_fn) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  out: dict = {}
  for key_path, leaf in flat:
    names = tuple(k.key for k in key_path)
    hf_key, transpose = name_fn(names)
    node = out
    for part in names[:-1]:
      node = node.setdefault(part, {})
    node[names[-1]] = _convert(reader, hf_key, leaf.shape, transpose, dtype)
    used.add(hf_key)
  return out


def _check_unused(reader: SafetensorsReader, used: set[str], skippable: set[str]) -> None:
  extra = [k for k in reader.keys()
           if k not in used and k not in skippable and not _IGNORED.search(k)]
  if extra:
    raise ValueError(
        f"The checkpoint in {reader.path} has {len(extra)} tensor(s) the model does not "
        f"use, e.g. {extra[:5]}; it is probably of another architecture than its "
        "config.json says, or needs a feature ttcjax lacks.")


def _backbone_shapes(config: TransformerConfig):
  return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def load_hf_checkpoint(path: str, dtype=None) -> tuple[TransformerConfig, dict]:
  """Loads a Llama / Qwen2 / Mistral causal LM from a local checkpoint directory.

  Args:
    path: directory with config.json and model.safetensors (or shards plus
      model.safetensors.index.json).
    dtype: parameter/compute dtype override (see `load_hf_config`).

  Returns:
    (config, params): params is the pytree `forward` takes, as jax arrays of
    `config.param_dtype`: `embed_tokens/embedding` [V, H], per layer
    `self_attn/{q,k,v}_proj/kernel` [H, heads*D] (+ bias), `o_proj/kernel`
    [heads*D, H], `mlp/{gate,up}_proj/kernel` [H, I], `mlp/down_proj/kernel` [I, H],
    norm weights [H], and `lm_head/kernel` [H, V] unless embeddings are tied.

  Raises:
    ValueError: unsupported architecture or config, a PRM checkpoint (use
      `load_hf_prm`), missing/extra tensors, or shapes that disagree with the config.
  """
  config = load_hf_config(path, dtype=dtype)
  arch = _architecture(_read_json(os.path.join(path, "config.json"), "config.json"), path)
  if arch not in CAUSAL_LM_ARCHITECTURES:
    raise ValueError(f"{path} holds a {arch}; load it with load_hf_prm, not load_hf_checkpoint.")
  reader = SafetensorsReader(path)
  used: set[str] = set()
  params = _load_tree(reader, _backbone_shapes(config), np.dtype(config.jnp_param_dtype),
                      used, _hf_name)
  # Tied checkpoints sometimes also store the (identical) output matrix.
  _check_unused(reader, used, {"lm_head.weight"} if config.tie_word_embeddings else set())
  return config, params


def load_hf_prm_config(path: str, dtype=None, positive_token_id: int | None = None,
                       negative_token_id: int | None = None) -> PrmConfig:
  """The `PrmConfig` `load_hf_prm` would return, without reading the weights (e.g. to
  count a PRM's FLOPs). Arguments and errors as `load_hf_prm`'s."""
  hf = _read_json(os.path.join(path, "config.json"), "config.json")
  arch = _architecture(hf, path)
  has_tokens = positive_token_id is not None or negative_token_id is not None
  if arch in CAUSAL_LM_ARCHITECTURES:
    if positive_token_id is None or negative_token_id is None:
      raise ValueError(
          f"{path} holds a {arch}, which loads as a token-logit PRM only: pass both "
          "positive_token_id and negative_token_id (the ids of the '+' and '-' tags).")
    return PrmConfig(backbone=load_hf_config(path, dtype=dtype), kind="token_logit",
                     positive_token_id=positive_token_id, negative_token_id=negative_token_id)
  if has_tokens:
    raise ValueError(f"{path} holds a {arch} with its own value head; do not pass "
                     "positive_token_id / negative_token_id.")
  config = load_hf_config(path, dtype=dtype)
  return PrmConfig(backbone=config, kind="value", num_labels=2, head_hidden=config.hidden_size)


def load_hf_prm(path: str, dtype=None, positive_token_id: int | None = None,
                negative_token_id: int | None = None) -> tuple[PrmConfig, dict]:
  """Loads a process reward model from a local checkpoint directory.

  Two layouts are recognised:

  * `Qwen2ForProcessRewardModel` (Qwen2.5-Math-PRM): backbone tensors `model.*` and
    the head `score.0` (Linear H -> H), ReLU, `score.2` (Linear H -> 2). Gives a
    value PRM (num_labels=2, score = softmax(head(hidden))[..., 1]).
  * A causal LM (Llama / Qwen2 / Mistral) with `positive_token_id` and
    `negative_token_id`: a token-logit PRM (Math-Shepherd style), score =
    sigmoid(logit[+] - logit[-]).

  Args:
    path: the checkpoint directory.
    dtype: parameter/compute dtype override (see `load_hf_config`).
    positive_token_id, negative_token_id: the "+" / "-" tag tokens; only for
      token-logit PRMs.

  Returns:
    (prm_config, params) with params {"backbone": ..., "head": {"dense_0": {kernel
    [H, H], bias [H]}, "dense_1": {kernel [H, 2], bias [2]}}} for a value PRM and
    {"backbone": ...} for a token-logit PRM.

  Raises:
    ValueError: as `load_hf_checkpoint`, or token ids given for a value PRM / missing
      for a causal LM.
  """
  prm = load_hf_prm_config(path, dtype, positive_token_id, negative_token_id)
  if prm.kind == "token_logit":
    return prm, {"backbone": load_hf_checkpoint(path, dtype=dtype)[1]}
  config = prm.backbone
  shapes = jax.eval_shape(lambda: init_prm_params(prm, jax.random.PRNGKey(0)))
  reader = SafetensorsReader(path)
  used: set[str] = set()
  param_dtype = np.dtype(config.jnp_param_dtype)
  backbone = _load_tree(reader, shapes["backbone"], param_dtype, used, _hf_name)
  head_names = {"dense_0": "score.0", "dense_1": "score.2"}

  def head_name(names):
    layer, leaf = names
    return f"{head_names[layer]}.{'weight' if leaf == 'kernel' else leaf}", leaf == "kernel"

  head = _load_tree(reader, shapes["head"], param_dtype, used, head_name)
  # A value PRM never reads an output projection, so one stored anyway is skipped.
  _check_unused(reader, used, {"lm_head.weight"})
  return prm, {"backbone": backbone, "head": head}


def load_hf_tokenizer(path: str, eos_token: str | None = None) -> HFTokenizer:
  """The fast tokenizer (`tokenizer.json`) of a checkpoint directory."""
  return HFTokenizer.from_dir(path, eos_token=eos_token)
