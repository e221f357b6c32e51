"""Run directories: the config they remember, and append-only result files.

Every long run (training, labelling, sweeps, studies) records its config in its
workdir as `run_config.json`; restarting the same run there resumes it, and starting
a run of another config there raises instead of mixing or overwriting results. Its
results are JSON lines appended and flushed as they finish; a kill can cut only the
last line, which `drop_partial_line` removes before a resumed run appends.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

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


def drop_partial_line(path: str) -> None:
  """Truncates a file after its last complete line (a kill can cut the last one)."""
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory where a JSON-lines file belongs; move it away.")
  if not os.path.exists(path):
    return
  with open(path, "rb") as f:
    data = f.read()
  keep = data.rfind(b"\n") + 1
  if keep != len(data):
    with open(path, "wb") as f:
      f.write(data[:keep])


def read_json_lines(path: str, what: str, required: Sequence[str] = ("uid",)) -> list[dict]:
  """The complete records of an append-only JSON-lines file (none if it is missing).

  Blank lines are skipped, and so is a last line without its newline (a run writing
  it, or one a kill cut: the next run drops it and redoes that record).

  Args:
    path: the file.
    what: what one line holds, for the error ("labelled problem").
    required: keys every record must have.

  Raises:
    ValueError: a complete line that is not such a record, naming the file, the line
      and how to repair it.
  """
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory where a JSON-lines file belongs; move it away.")
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        missing = [k for k in required if k not in record]
      except (json.JSONDecodeError, TypeError) as e:
        if not line.endswith("\n"):
          continue
        problem = repr(e)
      else:
        if not missing:
          records.append(record)
          continue
        problem = f"it lacks {missing}"
      raise ValueError(
          f"{path}, line {number}: not a {what} ({problem}); the file was damaged. Delete "
          f"the line (e.g. sed -i '{number}d' {path}) and rerun: that record is made again.")
  return records
