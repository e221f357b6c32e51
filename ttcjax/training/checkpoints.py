"""Checkpoints: orbax for training runs, one safetensors file for exported models.

Training state goes through an orbax `CheckpointManager` (periodic saves, keep the
last k, resume from the latest). A workdir remembers the config of the run it holds
(`run_config.json`); starting a run of another config there raises instead of
overwriting it.

Finished models are exported as `model.safetensors` plus `model.json` (the model's
kind and config): one small file per model, loadable without orbax, which is what
the testbed ships.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig

RUN_CONFIG_FILE = "run_config.json"


def check_run_config(workdir: str, config: Mapping[str, Any],
                     ignore: tuple[str, ...] = ()) -> None:
  """Records `config` in `workdir`, or checks that the run there used the same one.

  Args:
    workdir: the run's directory (created if missing).
    config: a JSON-serialisable config.
    ignore: top-level keys allowed to differ (e.g. how often to log).

  Raises:
    ValueError: the workdir holds a run of another config.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_CONFIG_FILE)
  current = json.loads(json.dumps(config, sort_keys=True, default=str))
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    strip = lambda c: {k: v for k, v in c.items() if k not in ignore}
    if strip(previous) != strip(current):
      changed = sorted(k for k in set(previous) | set(current)
                       if k not in ignore and previous.get(k) != current.get(k))
      raise ValueError(
          f"{workdir} holds a run of another config (keys that differ: {changed}). "
          "Use a new --workdir, or delete the old run to start over; nothing was "
          "overwritten.")
    return
  with open(path, "w") as f:
    json.dump(current, f, indent=2, sort_keys=True)


class TrainCheckpointer:
  """Saves and restores a training-state pytree with orbax.

  Args:
    directory: where step folders go.
    save_every: save when `step % save_every == 0` (and always at the last step).
    keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str, save_every: int, keep: int = 2):
    if save_every <= 0 or keep <= 0:
      raise ValueError(f"save_every and keep must be positive, got {save_every}, {keep}.")
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state, step: int | None = None):
    """The state saved at `step` (default: latest), shaped like `abstract_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError("No checkpoint to restore.")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def maybe_save(self, step: int, state, force: bool = False) -> bool:
    if not force and step % self.save_every:
      return False
    if self._manager.latest_step() == step:
      return False
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()
    return True

  def close(self):
    self._manager.close()


# ------------------------------------------------------------------ exported models


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
          "negative_token_id": config.negative_token_id}


def load_exported(directory: str):
  """Loads an `export_model` directory.

  Returns:
    (config (TransformerConfig or PrmConfig), params, extra metadata dict).

  Raises:
    ValueError: the directory has no exported model.
  """
  meta_path = os.path.join(directory, "model.json")
  weights_path = os.path.join(directory, "model.safetensors")
  if not (os.path.exists(meta_path) and os.path.exists(weights_path)):
    raise ValueError(
        f"No exported model in {directory} (expected model.json and model.safetensors); "
        "train one with experiments.train or point at a shipped checkpoint.")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("kind") == "prm":
    values = dict(meta["config"])
    values["backbone"] = TransformerConfig.from_dict(values["backbone"])
    config = PrmConfig(**values)
  elif meta.get("kind") == "transformer":
    config = TransformerConfig.from_dict(meta["config"])
  else:
    raise ValueError(f"{meta_path} has unknown kind {meta.get('kind')!r}.")
  flat = load_file(weights_path)
  params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  return config, jax.tree.map(jax.numpy.asarray, params), meta.get("extra", {})
