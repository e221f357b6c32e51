"""Two JAX processes on this machine run one sweep and one study together.

Each process is a launcher started as a pod's hosts start it (docs/math500.md):
`--distributed --coordinator_address=localhost:PORT --num_processes=2
--process_id=i`, one CPU device each, the collectives over TCP (gloo). The records
and study.json equal one process's, and process 0 alone writes them; a killed process
ends the other with a clear error within the heartbeat timeout, and a rerun resumes.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from ttcjax import parallel, sweep
from ttcjax.models import export
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.transformer import init_params
from ttcjax.tasks.arith import testbed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32,
            max_position_embeddings=128)
HEARTBEAT_S = 10
# Short timeouts: a process that cannot join, or falls silent, ends the run in seconds.
TIMEOUTS = ("--initialization_timeout_s=60", f"--heartbeat_timeout_s={HEARTBEAT_S}")
RUN_TIMEOUT_S = 300  # one launcher run on a shared CPU core; past it the run hung
CAPS = dict(max_prompt_tokens=32, max_step_tokens=8, max_solution_tokens=24, max_steps=4,
            max_rounds=3)

# The configs, as files both launchers read (a strategy list cannot be a flag).
SWEEP_CONFIG = """from configs.arith import sweep


def get_config():
  c = sweep.get_config()
  c.policy_dir, c.prm_dir = {policy!r}, {prm!r}
  c.problems_per_level = 1  # 10 problems, in 2 batches
  c.problems_per_batch = 5
  c.budgets = (2,)  # a program (a compile) per strategy
  c.caps = {caps!r}
  c.strategies = [dict(name="best_of_n"), dict(name="beam", beam_width=2, label="beam_m2")]
  return c
"""
# The quick study, smaller still: best-of-N alone, tiny models, 2 bins of 10 problems.
STUDY_CONFIG = """from configs.arith import study


def get_config():
  c = study.get_config("quick")
  c.policy_dir, c.large_policy_dir, c.prm_dir = {policy!r}, {large!r}, {prm!r}
  c.revision_dir = ""
  c.problems_per_level = 1
  c.problems_per_batch = 10
  c.budgets = (1, 2)
  c.difficulty_samples = 2
  c.num_bins = 2
  c.cv_repeats = 2
  c.num_draws = 2
  c.caps = {caps!r}
  c.strategies = [dict(name="best_of_n", max_budget_only=True)]
  return c
"""


@pytest.fixture(scope="module")
def config_files(tmp_path_factory):
  """{"sweep", "study"}: config files over tiny random models."""
  root = tmp_path_factory.mktemp("multihost")
  config = TransformerConfig(vocab_size=testbed.tokenizer().vocab_size, **TINY)
  large = TransformerConfig(vocab_size=config.vocab_size, **dict(TINY, hidden_size=48))
  prm = PrmConfig(config, head_hidden=8)
  dirs = {name: str(root / name) for name in ("policy", "large", "prm")}
  # The study charges each policy the tokens it was trained on (FLOPs-matched exchange).
  export.export_model(dirs["policy"], init_params(config, jax.random.PRNGKey(0)), config,
                      extra={"train_tokens": 10_000})
  export.export_model(dirs["large"], init_params(large, jax.random.PRNGKey(2)), large,
                      extra={"train_tokens": 10_000})
  export.export_model(dirs["prm"], init_prm_params(prm, jax.random.PRNGKey(1)), prm)
  paths = {"sweep": root / "sweep_config.py", "study": root / "study_config.py"}
  paths["sweep"].write_text(SWEEP_CONFIG.format(caps=CAPS, **dirs))
  paths["study"].write_text(STUDY_CONFIG.format(caps=CAPS, **dirs))
  return {name: str(path) for name, path in paths.items()}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env() -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  # One CPU device per process: no device-count flag, only the suite's compile flags.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def start(module: str, flags: list[str], log_stem, processes: int = 2) -> list:
  """Starts `processes` launchers of one distributed run; their output goes to
  LOG_STEM.<process id>.log. Returns the Popen objects, by process id."""
  port = _free_port()
  procs = []
  for i in range(processes):
    log = open(f"{log_stem}.{i}.log", "w")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", module, *flags, "--distributed",
         f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
         f"--process_id={i}", *TIMEOUTS], cwd=ROOT, env=_env(), stdout=log,
        stderr=subprocess.STDOUT))
    log.close()
  return procs


def _log(log_stem, i) -> str:
  with open(f"{log_stem}.{i}.log") as f:
    return f.read()


def finish(procs, log_stem) -> list[str]:
  """Waits for every process to succeed; returns their logs."""
  deadline = time.monotonic() + RUN_TIMEOUT_S
  for proc in procs:
    try:
      proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail(f"The distributed run hung; last output:\n{_log(log_stem, 0)[-3000:]}")
  logs = [_log(log_stem, i) for i in range(len(procs))]
  for i, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f"process {i} failed:\n{log[-3000:]}"
  return logs


def run_alone(module: str, flags: list[str], log_stem) -> str:
  """The same launcher as one ordinary process; returns its output."""
  out = subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
  with open(f"{log_stem}.log", "w") as f:
    f.write(out.stdout + out.stderr)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout + out.stderr


def read(path) -> dict:
  """Records by key, without their unit's wall time (the one field a rerun changes)."""
  return {r["key"]: {k: v for k, v in r.items() if k != "unit_wall_s"}
          for r in sweep.read_results(str(path))}


def invocation_pids(workdir) -> set[int]:
  """The processes whose invocations `workdir` logged (`rundir.Invocation` ids end in
  the pid)."""
  with open(os.path.join(workdir, "invocations.jsonl")) as f:
    return {int(json.loads(line)["invocation"].rsplit("/", 1)[1]) for line in f}


def check_joined(logs: list[str]) -> None:
  """Each process saw its own CPU device, and the mesh spans both."""
  for i, log in enumerate(logs):
    assert f"process {i} of 2: local devices [CpuDevice(id=" in log, log[-2000:]
    assert "2 devices in all" in log


# Either the launcher's message (a collective failed) or the runtime's (the heartbeat
# timed out while this process computed on its own).
LOST = ("lost contact with another process of this distributed run", "another task died")


def test_a_sweep_on_two_processes_equals_one_and_resumes_after_a_kill(config_files, tmp_path):
  flags = lambda workdir: [f"--config={config_files['sweep']}", f"--workdir={workdir}"]
  run_alone("experiments.search", flags(tmp_path / "one"), tmp_path / "one")
  expected = read(tmp_path / "one" / "results.jsonl")
  assert len(expected) == 20  # 10 problems x (best-of-N, beam)

  # Two processes; process 1 is killed once the first unit is on disk.
  workdir, stem = tmp_path / "two", tmp_path / "killed"
  results = workdir / "results.jsonl"
  procs = killed = start("experiments.search", flags(workdir), stem)
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while not (results.exists() and results.read_text().count("\n") >= 1):
    assert all(p.poll() is None for p in procs), _log(stem, 0)[-3000:]
    assert time.monotonic() < deadline, "no unit finished"
    time.sleep(0.1)
  procs[1].kill()
  killed_at = time.monotonic()
  try:
    procs[0].wait(timeout=HEARTBEAT_S + 60)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail("process 0 hung after process 1 was killed")
  survivor_s = time.monotonic() - killed_at
  procs[1].wait()
  survivor = _log(stem, 0)
  assert procs[0].returncode != 0 and any(sign in survivor for sign in LOST), survivor[-3000:]
  partial = read(results)
  assert 5 <= len(partial) < 20 and results.read_text().count("\n") == len(partial)
  assert all(expected[k] == r for k, r in partial.items())

  # The rerun skips what is there and ends with one process's records, each once.
  procs = start("experiments.search", flags(workdir), tmp_path / "resumed")
  logs = finish(procs, tmp_path / "resumed")
  check_joined(logs)
  skipped = len(partial) // 5  # units of 5 problems
  for log in logs:
    assert f"'units_skipped': {skipped}" in log, log[-2000:]
  assert read(results) == expected
  assert results.read_text().count("\n") == 20
  assert invocation_pids(workdir) == {killed[0].pid, procs[0].pid}  # process 0 of each run
  how = "the launcher" if LOST[0] in survivor else "the runtime (heartbeat)"
  print(f"process 0 exited {survivor_s:.1f} s after the kill, reported by {how}")


def test_a_study_on_two_processes_equals_one(config_files, tmp_path):
  # The testbed's study stages run without a mesh (`ttcjax.tasks.arith.task`), so each
  # process searches every problem on its own device: this checks that the stages keep
  # in step across processes and that process 0 alone writes.
  flags = lambda workdir: [f"--config={config_files['study']}", f"--workdir={workdir}"]
  run_alone("experiments.reproduce", flags(tmp_path / "one"), tmp_path / "one")
  procs = start("experiments.reproduce", flags(tmp_path / "two"), tmp_path / "two")
  logs = finish(procs, tmp_path / "two")
  check_joined(logs)
  assert "Wrote " in logs[0] and "Process 0 writes " in logs[1]
  with open(tmp_path / "one" / "study.json") as f:
    expected = json.load(f)
  with open(tmp_path / "two" / "study.json") as f:
    assert json.load(f) == expected
  for stage in ("sweep", "difficulty", "large_greedy"):  # each record written once
    one, two = (tmp_path / run / stage / "results.jsonl" for run in ("one", "two"))
    assert read(two) == read(one) and two.read_text().count("\n") == len(read(one))
  assert invocation_pids(tmp_path / "two") == {procs[0].pid}
  assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_incomplete_distributed_flags_are_refused_before_anything_loads(monkeypatch, tmp_path):
  monkeypatch.setattr(parallel, "_cluster_environment", lambda: None)  # a plain machine
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  with pytest.raises(ValueError, match=r"needs \['--coordinator_address', '--process_id'\]"):
    parallel.initialize_distributed(num_processes=2)
  with pytest.raises(ValueError, match="--process_id must be in 0 .. --num_processes - 1"):
    parallel.initialize_distributed("localhost:1", num_processes=2, process_id=2)
  assert not jax.distributed.is_initialized()
  out = subprocess.run(
      [sys.executable, "-m", "experiments.search", "--config=configs/arith/sweep.py",
       f"--workdir={tmp_path / 'w'}", "--num_processes=2"], cwd=ROOT, env=_env(),
      capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "apply only with --distributed" in out.stderr
  assert not (tmp_path / "w").exists()
