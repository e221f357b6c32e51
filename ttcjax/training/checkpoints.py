"""Training checkpoints: orbax `CheckpointManager` (periodic saves, keep the last k,
resume from the latest). Run configs are guarded by `ttcjax.rundir`; finished models
are exported by `ttcjax.models.export`.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


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
