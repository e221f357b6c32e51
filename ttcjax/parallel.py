"""Device meshes and shardings for search.

Problems are independent, so a search shards them over a "data" axis; rows of one
problem never leave their device (every fork gathers within a problem). Parameters
are replicated, or, for models that do not fit one device, split over a "model"
axis: each weight matrix is cut along its largest dimension that the axis divides
(GSPMD inserts the collectives), and anything smaller stays replicated.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
  """A (data, model) mesh over the first data * model devices (data: all that remain)."""
  devices = list(devices if devices is not None else jax.devices())
  if model < 1 or len(devices) % model:
    raise ValueError(f"model={model} must divide the {len(devices)} devices.")
  data = data or len(devices) // model
  if data < 1 or data * model > len(devices):
    raise ValueError(f"A {data} x {model} mesh needs {data * model} devices; "
                     f"{len(devices)} are available.")
  return Mesh(np.array(devices[:data * model]).reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (problem) dimension over the data axis, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def model_split_dim(shape: tuple[int, ...], model: int) -> int | None:
  """The dimension of a weight of `shape` split over `model` devices: its largest one
  that `model` divides (matrices only), or None (replicated)."""
  if model > 1 and len(shape) >= 2:
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % model == 0:
        return dim
  return None


def param_sharding(x, mesh: Mesh) -> NamedSharding:
  """A weight's sharding: its largest dimension the model axis divides, else replicated."""
  spec = [None] * np.ndim(x)
  dim = model_split_dim(np.shape(x), mesh.shape.get(MODEL_AXIS, 1))
  if dim is not None:
    spec[dim] = MODEL_AXIS
  return NamedSharding(mesh, PartitionSpec(*spec))


def shard_params(params, mesh: Mesh):
  """Places a parameter tree on the mesh (see `param_sharding`)."""
  return jax.tree.map(lambda x: jax.device_put(x, param_sharding(x, mesh)), params)


def shard_batch(tree, mesh: Mesh):
  """Places every leaf of a batch pytree with its leading dimension over the data axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def to_host(tree):
  """Every array of `tree` as a host numpy array holding its global value.

  With one process that is `jax.device_get`. Across hosts (after
  `jax.distributed.initialize()`), a sharded array is not addressable from any one
  host, so every process gathers the global arrays
  (`multihost_utils.process_allgather`) and all hosts see the same results.
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return multihost_utils.process_allgather(tree, tiled=True)
