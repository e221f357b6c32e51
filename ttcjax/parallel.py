"""Device meshes and shardings for search, on one host or several.

Problems are independent, so a search shards them over a "data" axis; rows of one
problem never leave their device (every fork gathers within a problem). Parameters
are replicated, or, for models that do not fit one device, split over a "model"
axis: each weight matrix is cut along its largest dimension that the axis divides
(GSPMD inserts the collectives), and anything smaller stays replicated. KV caches
split their heads over the model axis where it divides them (`shard_caches`, and
`models.cache.shard_heads` inside the search).

Across hosts (`initialize_distributed`: one process per host, every one running the
same program) the mesh spans every process's devices; each process holds the whole
host value of a batch and of the weights and places only its own shards, and
`to_host` gathers the global results onto every process.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ttcjax.models import cache as cache_lib

DATA_AXIS = cache_lib.ROW_AXIS  # "data"
MODEL_AXIS = cache_lib.HEAD_AXIS  # "model"


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


def _put(x, sharding: NamedSharding) -> jax.Array:
  """`x` (its global value, on this host) placed with `sharding`."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  # Every process holds the whole value: each places only its own devices' slices.
  # (device_put would first gather every host's copy to check that they agree: the
  # whole KV cache and every weight, per process, through host memory.)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_params(params, mesh: Mesh):
  """Places a parameter tree on the mesh (see `param_sharding`)."""
  return jax.tree.map(lambda x: _put(x, param_sharding(x, mesh)), params)


def shard_batch(tree, mesh: Mesh):
  """Places every leaf of a batch pytree with its leading dimension over the data axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_caches(tree, mesh: Mesh):
  """Places a tree of KV caches: every [rows, kv heads, slots, width] buffer with
  its rows over the data axis and its heads over the model axis where that divides
  them (`models.cache.heads_spec`), lengths and other leaves by rows."""
  axes = dict(mesh.shape)
  def place(x):
    if np.ndim(x) == 4:
      return _put(x, NamedSharding(mesh, cache_lib.heads_spec(np.shape(x), axes)))
    return _put(x, batch_sharding(mesh))
  return jax.tree.map(place, tree)


def to_host(tree):
  """Every array of `tree` as a host numpy array holding its global value.

  With one process that is `jax.device_get`. Across hosts (after
  `initialize_distributed`), a sharded array is not addressable from any one host,
  so every process gathers the global arrays (`multihost_utils.process_allgather`)
  and all hosts see the same results; arrays this process holds whole are read as
  they are.
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)

  return jax.tree.map(get, tree)


def is_writer() -> bool:
  """Whether this process writes a run's files: process 0 (the only one with one host)."""
  return jax.process_index() == 0


def sync_processes(name: str) -> None:
  """Waits until every process gets here (nothing with one process); `name` must be
  the same on all of them."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def check_same_on_every_process(value: str, what: str) -> None:
  """ValueError on every process when `value` (e.g. a digest of a plan) differs
  between processes; nothing with one process."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  digest = np.frombuffer(value.encode().ljust(64)[:64], np.uint8)
  values = multihost_utils.process_allgather(digest)  # [processes, 64]
  if not (values == values[0]).all():
    raise ValueError(f"The processes disagree on {what} (process {jax.process_index()} of "
                     f"{jax.process_count()}): every process must read the same WORKDIR (on a "
                     "filesystem all hosts share, no other run writing it) and get the same "
                     "flags and config.")


# ------------------------------------------------------------------- several hosts


def _cluster_environment() -> str | None:
  """The cluster environment jax.distributed.initialize() would read its settings
  from (a TPU pod, SLURM, Open MPI, Kubernetes), or None on a plain machine."""
  try:
    from jax._src import clusters  # pylint: disable=import-outside-toplevel
    envs = clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return "unknown"  # another JAX: cannot tell, so let jax.distributed decide
  for env in envs:
    if not env.opt_in_only_method and env.is_env_present():
      return env.__name__
  return None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           initialization_timeout_s: int = 300,
                           heartbeat_timeout_s: int = 100) -> None:
  """Joins this process to a multi-process (multi-host) run: `jax.distributed.initialize`.

  Call it first, before anything touches a device. In a cluster environment JAX
  recognises (a TPU pod, SLURM, Open MPI, Kubernetes) the arguments left None are
  read from it; elsewhere all three must be given (JAX_COORDINATOR_ADDRESS may stand
  for the address). On CPU the processes' collectives run over TCP (gloo).

  Args:
    coordinator_address: "host:port" of process 0, where it serves the coordination
      service (the same on every process).
    num_processes: how many processes the run has (the same on every process).
    process_id: this one's, 0 .. num_processes - 1; process 0 writes the run's files.
    initialization_timeout_s: how long to wait for every process to join.
    heartbeat_timeout_s: how long a silent process is given before the others fail
      (a killed or stuck process ends the run after about this long, not a hang).

  Raises:
    ValueError: settings missing (without a cluster environment) or inconsistent.
    (When the processes do not all join within the timeout, the runtime aborts.)
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
           "--process_id": process_id}
  missing = [name for name, value in given.items() if value is None]
  if missing and _cluster_environment() is None:
    raise ValueError(
        f"--distributed on a machine without a cluster environment JAX recognises (a TPU "
        f"pod, SLURM, Open MPI, Kubernetes) needs {missing} as well: start one process per "
        "host, each with --coordinator_address=HOST:PORT (process 0's host and a free "
        "port, the same on all), --num_processes=N and its own --process_id (0 .. N-1).")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be positive, got {num_processes}.")
  if process_id is not None and (process_id < 0 or
                                 num_processes is not None and process_id >= num_processes):
    raise ValueError(f"--process_id must be in 0 .. --num_processes - 1, got {process_id} "
                     f"of {num_processes}.")
  if jax.config.jax_cpu_collectives_implementation is None:
    # Without it (older JAX's default) CPU processes cannot run one program together.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # When the others do not all come in time the runtime aborts this process (no Python
  # error to catch): this line says what it was waiting for.
  logging.info("process %s of %s: joining the run at %s (every process must join within "
               "%d s)", process_id, num_processes, coordinator_address,
               initialization_timeout_s)
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=initialization_timeout_s,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
  # A first collective over every device, while the processes are in step: it checks
  # that they can compute together, and sets up the CPU (gloo) transport, whose setup
  # fails when a process comes to it 30 s after another (e.g. one slower to load models).
  sync_processes("ttcjax: every process joined")
  logging.info("process %d of %d: local devices %s, %d devices in all (a mesh may span them)",
               jax.process_index(), jax.process_count(), jax.local_devices(),
               jax.device_count())


# Errors of a collective or of the coordination service whose peer is gone (the gloo
# TCP transport and the runtime report them as such).
_LOST_PROCESS_SIGNS = ("Gloo", "Connection closed by peer", "Connection reset by peer",
                       "heartbeat", "coordination service", "UNAVAILABLE")


def lost_process(err: BaseException) -> bool:
  """Whether `err` says another process of a multi-process run died (or cannot be
  reached)."""
  return jax.process_count() > 1 and any(sign in str(err) for sign in _LOST_PROCESS_SIGNS)


@contextlib.contextmanager
def exit_at_once_on_failure():
  """Wraps the body of a multi-process run: when it fails, on this process or because
  another one died, this process prints why and what to do, and exits at once
  (status 1).

  Not through the distributed runtime's shutdown: that waits for every process, and
  the others wait in their next collective for this one, so a failure on one process
  would hang the run (until the shutdown timeout) instead of ending it. Exiting closes
  this process's connections, so the others fail at their next collective, or within
  the heartbeat timeout. Results are flushed as each unit finishes: nothing saved is
  lost, and a rerun of every process resumes.
  """
  try:
    yield
  except Exception as err:  # pylint: disable=broad-except
    traceback.print_exc()
    where = f"Process {jax.process_index()} of {jax.process_count()}"
    if lost_process(err):
      what = (f"{where}: lost contact with another process of this distributed run (it "
              "failed, was killed, or its host went down; see its log).")
    else:
      what = f"{where} failed (above); the other processes of the run stop too."
    print(f"\n{what} Nothing saved is lost: once the cause is fixed, start every process "
          "again with the same flags and the run resumes from what WORKDIR holds.",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
