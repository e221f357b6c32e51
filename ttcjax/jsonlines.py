"""Append-only JSON-lines files that survive a kill mid-write."""

from __future__ import annotations

import os


def drop_partial_line(path: str) -> None:
  """Truncates a file after its last complete line (a kill can cut the last one)."""
  if not os.path.exists(path):
    return
  with open(path, "rb") as f:
    data = f.read()
  keep = data.rfind(b"\n") + 1
  if keep != len(data):
    with open(path, "wb") as f:
      f.write(data[:keep])
