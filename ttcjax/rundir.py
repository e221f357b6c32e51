"""Run directories: the config they remember, and append-only result files.

Every long run (training, labelling, sweeps, studies) records its config in its
workdir as `run_config.json`; restarting the same run there resumes it, and starting
a run of another config there raises instead of mixing or overwriting results. Its
results are JSON lines appended and flushed as they finish; a kill can cut only the
last line, which `drop_partial_line` removes before a resumed run appends.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
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
  # Written whole or not at all (a rename): another process of a multi-host run, or a
  # run after a kill mid-write, never reads half a file.
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(current, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


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
    if not os.access(path, os.W_OK):
      raise ValueError(f"{path} ends in a cut line (a run was killed writing it) and is "
                       "read-only, so it cannot be repaired; make it writable and rerun.")
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


INVOCATIONS_FILE = "invocations.jsonl"
# An invocation without an "end" line whose last line is this recent is still running
# (it writes a heartbeat every 30 s by default); older, it was killed.
RUNNING_WITHIN_S = 120.0


class Invocation:
  """The wall clock of one invocation of a long run, kept in its workdir.

  A resumed run's own timer sees only its last invocation; this log lets a report add
  up all of them and say how much a kill cost. Each invocation appends, to
  `invocations.jsonl`, a "start" line, a "saved" line whenever its results reach the
  disk (`saved()`), an "alive" line every `heartbeat_s` from a background thread, and
  an "end" line when it finishes. An invocation without "end" is running (its last line
  is recent) or was killed: then the time between its last "saved" and its last "alive"
  line is work the kill lost (to within one heartbeat). Nothing is written before the
  first event, so a run refused in its first seconds leaves its workdir as it was. A
  workdir that cannot be written (a read-only finished run) gets no lines; the run
  still goes on.

  Use as a context manager: `with Invocation(workdir) as clock: ... clock.saved()`.
  """

  def __init__(self, workdir: str, heartbeat_s: float = 30.0, enabled: bool = True):
    self._enabled = enabled  # e.g. only on process 0 of a multi-host run
    self._path = os.path.join(workdir, INVOCATIONS_FILE)
    self._heartbeat_s = heartbeat_s
    self._start = 0.0
    self._id = ""
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._writable = False
    self._started = False

  @property
  def id(self) -> str:
    """When and by which process the invocation started."""
    return self._id

  def elapsed_s(self) -> float:
    return time.perf_counter() - self._start

  def _write(self, event: str) -> None:
    if not self._writable:
      return
    line = lambda event, elapsed: json.dumps(
        {"invocation": self._id, "event": event, "elapsed_s": round(elapsed, 3),
         "time": round(time.time(), 3)}) + "\n"
    with self._lock:
      lines = line(event, self.elapsed_s())
      if not self._started:  # the start line goes with the first event
        lines = line("start", 0.0) + lines
      try:
        with open(self._path, "a") as f:
          f.write(lines)
        self._started = True
      except OSError:
        self._writable = False

  def saved(self) -> None:
    """Marks that everything done so far is on disk (a kill now loses nothing)."""
    self._write("saved")

  def __enter__(self) -> "Invocation":
    self._start = time.perf_counter()
    self._id = f"{datetime.datetime.now().isoformat(timespec='seconds')}/{os.getpid()}"
    directory = os.path.dirname(self._path)
    self._writable = (self._enabled and os.path.isdir(directory)
                      and os.access(directory, os.W_OK)
                      and (not os.path.exists(self._path) or os.access(self._path, os.W_OK)))
    if self._writable:
      drop_partial_line(self._path)
    if self._writable and self._heartbeat_s > 0:
      self._thread = threading.Thread(target=self._beat, daemon=True)
      self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      self._write("alive")

  def __exit__(self, exc_type, *exc) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    # An invocation refused before it did anything (bad input) leaves no trace; one that
    # failed later ended (it was not killed), having saved what it saved.
    if exc_type is None or self._started:
      self._write("end")


def wall_time(workdir: str, running: Invocation | None = None,
              running_within_s: float = RUNNING_WITHIN_S) -> dict[str, Any]:
  """Every recorded invocation's wall time in `workdir`, added up.

  Args:
    workdir: the run's directory.
    running: the invocation still under way, counted at its current elapsed time.
    running_within_s: an unfinished invocation with a line this recent counts as still
      running, not killed (0: none other than `running` can be).

  Returns:
    {"invocations": count, "running": how many still write heartbeats (a line within
     the last `RUNNING_WITHIN_S`, no "end"), "killed": how many else ended without an
     "end" line, "wall_s": the sum of each invocation's last recorded time,
     "lost_to_kills_s": for killed invocations, the time after their last save}.
  """
  events: dict[str, list[dict]] = {}
  for line in read_json_lines(os.path.join(workdir, INVOCATIONS_FILE), "invocation event",
                              required=("invocation", "event", "elapsed_s")):
    events.setdefault(line["invocation"], []).append(line)
  if running is not None:
    # Rounded as the recorded lines are, so a later reading never comes out smaller.
    events[running.id] = [{"event": "end", "elapsed_s": round(running.elapsed_s(), 3)}]
  wall_s = lost_s = 0.0
  killed = running_now = 0
  now = time.time()
  for lines in events.values():
    last = max(e["elapsed_s"] for e in lines)
    wall_s += last
    if not any(e["event"] == "end" for e in lines):
      if now - max(e.get("time", 0.0) for e in lines) < running_within_s:
        running_now += 1
        continue
      killed += 1
      saved = [e["elapsed_s"] for e in lines if e["event"] in ("saved", "start")]
      lost_s += last - max(saved)
  return {"invocations": len(events), "running": running_now, "killed": killed,
          "wall_s": wall_s, "lost_to_kills_s": lost_s}
