"""Where the files the project ships beside its code are found: the testbed's
checkpoints (`checkpoints/`) and archived sweep results (`results/`).

Configs name them by relative paths (`checkpoints/arith/prm`). Such a path is read from
the working directory, as any path is, and where that does not hold it, from the
directory the `ttcjax` package sits in: the repository root in a clone, `site-packages`
in an installed wheel, which carries `checkpoints/` and `results/` as package data
(pyproject.toml). So the shipped models serve a `pip install` from anywhere, while a
model trained into `checkpoints/...` of the working directory still takes precedence.
"""

from __future__ import annotations

import os

# The repository root in a clone; site-packages in an installed wheel.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def locate(path: str) -> str:
  """`path` if it exists (or is absolute), else the shipped file or directory of that
  relative path beside the package if there is one, else `path` unchanged (for the
  caller's own "not found" error, `where_looked` says where)."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  shipped = os.path.join(PACKAGE_ROOT, path)
  return shipped if os.path.exists(shipped) else path


def where_looked(path: str) -> str:
  """For errors: the places `locate` tried."""
  if os.path.isabs(path):
    return path
  return f"{os.path.abspath(path)} and {os.path.join(PACKAGE_ROOT, path)}"
