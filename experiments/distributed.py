"""The flags of a multi-process (multi-host) run, shared by the launchers that take them.

Importing this module defines --distributed, --coordinator_address, --num_processes,
--process_id, --initialization_timeout_s and --heartbeat_timeout_s; `run(body)` joins
the other processes first when --distributed is set (`ttcjax.parallel`).
"""

from typing import Callable

from absl import flags

from ttcjax import parallel

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join the other processes of a multi-process (multi-host) run first "
    "(WORKDIR on a filesystem all hosts share).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: HOST:PORT of process 0 (default: the "
    "cluster environment's, or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: how many processes (default: the cluster's).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's id, 0 .. num_processes - 1 "
    "(default: the cluster's).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout_s", 300, "With --distributed: how long to wait for every process.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "With --distributed: a process silent this long counts as dead "
    "and the others exit.")


def run(body: Callable[[], None]) -> None:
  """Runs `body`, first joining the run's other processes when --distributed is set
  (then a failure on any process ends every one at once, with the reason)."""
  if _DISTRIBUTED.value:
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                    _INIT_TIMEOUT.value, _HEARTBEAT_TIMEOUT.value)
    with parallel.exit_at_once_on_failure():
      body()
  elif any(f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
    raise ValueError("--coordinator_address, --num_processes and --process_id apply only "
                     "with --distributed; add it (or drop them for a one-process run).")
  else:
    body()
