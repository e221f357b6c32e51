"""Run directories: the wall clock of every invocation, kills included."""

import os
import signal
import subprocess
import sys
import time

from ttcjax import rundir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wall_time_adds_up_invocations_and_what_kills_lost(tmp_path):
  # A killed invocation: it saved once at about 0.1 s, then lived on (heartbeats) until
  # SIGKILL at about 0.5 s; that time after its save is lost.
  script = (
      "import os, signal, time\n"
      "from ttcjax import rundir\n"
      f"with rundir.Invocation({str(tmp_path)!r}, heartbeat_s=0.05) as clock:\n"
      "  time.sleep(0.1); clock.saved(); time.sleep(0.4)\n"
      "  os.kill(os.getpid(), signal.SIGKILL)\n")
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
  assert done.returncode == -signal.SIGKILL
  with rundir.Invocation(str(tmp_path), heartbeat_s=0) as clock:
    time.sleep(0.2)
    clock.saved()
    running = rundir.wall_time(str(tmp_path), running=clock, running_within_s=0.0)
  # Seconds after the kill its heartbeats are recent: it reads as still running.
  assert rundir.wall_time(str(tmp_path))["running"] == 1
  wall = rundir.wall_time(str(tmp_path), running_within_s=0.0)
  assert wall["invocations"] == 2 and wall["killed"] == 1 and wall["running"] == 0
  assert 0.3 <= wall["lost_to_kills_s"] <= 0.45  # 0.4 s to within a heartbeat
  assert 0.4 + 0.2 <= wall["wall_s"] <= 0.5 + 0.2 + 1.0
  assert running["invocations"] == 2 and running["wall_s"] <= wall["wall_s"]


def test_an_unwritable_workdir_keeps_no_log_and_the_run_goes_on(tmp_path):
  missing = tmp_path / "not_there"
  with rundir.Invocation(str(missing), heartbeat_s=0.01) as clock:
    clock.saved()
  assert not missing.exists() and rundir.wall_time(str(missing))["invocations"] == 0
  with rundir.Invocation(str(tmp_path), enabled=False) as clock:  # not process 0
    clock.saved()
  assert not (tmp_path / rundir.INVOCATIONS_FILE).exists()
