"""Exported models: one `model.safetensors` plus `model.json` (kind, config, extra).

One small file per model, loadable without orbax or the training code: what the
testbed ships and what training stages write when they finish.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ttcjax import shipped
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig


def _flatten(params) -> dict[str, np.ndarray]:
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  return {k: np.asarray(v) for k, v in flat.items()}


def export_model(directory: str, params, config: TransformerConfig | PrmConfig,
                 extra: Mapping[str, Any] | None = None) -> None:
  """Writes `model.safetensors` and `model.json` (kind, config, extra metadata)."""
  os.makedirs(directory, exist_ok=True)
  if isinstance(config, PrmConfig):
    meta = {"kind": "prm", "config": {**_prm_to_dict(config)}}
  else:
    meta = {"kind": "transformer", "config": config.to_dict()}
  meta["extra"] = dict(extra or {})
  save_file(_flatten(params), os.path.join(directory, "model.safetensors"))
  with open(os.path.join(directory, "model.json"), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)


def _prm_to_dict(config: PrmConfig) -> dict[str, Any]:
  return {"backbone": config.backbone.to_dict(), "kind": config.kind,
          "num_labels": config.num_labels, "head_hidden": config.head_hidden,
          "positive_token_id": config.positive_token_id,
          "negative_token_id": config.negative_token_id,
          "step_likelihood": config.step_likelihood}


def load_exported(directory: str):
  """Loads an `export_model` directory.

  Returns:
    (config (TransformerConfig or PrmConfig), params, extra metadata dict).

  Raises:
    ValueError: the directory has no exported model.
  """
  named, directory = directory, shipped.locate(directory)
  meta_path = os.path.join(directory, "model.json")
  weights_path = os.path.join(directory, "model.safetensors")
  if not (os.path.exists(meta_path) and os.path.exists(weights_path)):
    raise ValueError(
        f"No exported model in {named} (expected model.json and model.safetensors; looked "
        f"in {shipped.where_looked(named)}); train one with experiments.train or point at "
        "a shipped checkpoint.")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{meta_path} is damaged ({e}); re-export the model or restore the "
                     "file (a shipped checkpoint: git checkout -- <path>).") from e
  if meta.get("kind") == "prm":
    values = dict(meta["config"])
    values["backbone"] = TransformerConfig.from_dict(values["backbone"])
    config = PrmConfig(**values)
  elif meta.get("kind") == "transformer":
    config = TransformerConfig.from_dict(meta["config"])
  else:
    raise ValueError(f"{meta_path} has unknown kind {meta.get('kind')!r}.")
  try:
    flat = load_file(weights_path)
  except (SafetensorError, OSError) as e:  # safetensors' own error names no path
    raise ValueError(f"{weights_path} is damaged or not a safetensors file ({e}); re-export "
                     "the model or restore the file (a shipped checkpoint: git checkout -- "
                     "<path>).") from e
  params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  return config, jax.tree.map(jax.numpy.asarray, params), meta.get("extra", {})


def weights_fingerprint(directory: str) -> str:
  """The first 16 hex digits of the SHA-256 of an export's `model.safetensors`: what a
  run records so that results of other weights at the same path are never mixed."""
  path = os.path.join(shipped.locate(directory), "model.safetensors")
  if not os.path.exists(path):
    raise ValueError(f"No exported model in {directory} (expected model.safetensors; looked "
                     f"in {shipped.where_looked(directory)}).")
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()[:16]
