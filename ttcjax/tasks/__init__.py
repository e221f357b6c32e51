"""Tasks ttcjax searches: each a package with the same parts, found by name.

* `arith`: the synthetic arithmetic testbed (`arithmetic`: problems, splits and the
  verifier; `testbed`: the shipped models, loading and evaluation; `task`: its sweep
  and study).
* `math`: MATH-style data with open checkpoints (`data`, `grading`, `prompts`; `task`:
  its sweep and study).

`get_task(name)` imports a task's module only when it is asked for, so the testbed
never loads the MATH path's dependencies and vice versa.
"""

from __future__ import annotations

import importlib

from ttcjax.tasks.base import Task

# name -> the module whose TASK is the task's `Task`.
TASK_MODULES = {"arith": "ttcjax.tasks.arith.task", "math500": "ttcjax.tasks.math.task"}


def get_task(name: str) -> Task:
  """The task registered as `name`."""
  if name not in TASK_MODULES:
    raise ValueError(f"Unknown task {name!r}; ttcjax runs {sorted(TASK_MODULES)}.")
  return importlib.import_module(TASK_MODULES[name]).TASK


def task_of(config) -> Task:
  """The task a sweep or study config names in its `task` field."""
  name = config.get("task")
  if name is None:
    raise ValueError(f"The config names no task; add task = one of {sorted(TASK_MODULES)} "
                     "(configs/arith and configs/math500 show how).")
  return get_task(name)
