"""Runs (or resumes) a search sweep: the testbed's shipped models, or MATH-500 with
open checkpoints (a config with task = "math500").

  python -m experiments.search --config configs/arith/sweep.py --workdir runs/sweep
  python -m experiments.search --config configs/arith/sweep.py --workdir runs/look \
      --config.problems_per_level=5 --config.budgets='(4,16)'
  python -m experiments.search --config configs/math500/qwen_math1p5b_prm7b.py \
      --workdir runs/math_sweep --config.policy_dir=/data/Qwen2.5-Math-1.5B-Instruct \
      --config.prm_dir=/data/Qwen2.5-Math-PRM-7B

Results go to WORKDIR/results.jsonl, one line per (problem, strategy, budget, seed),
written as each batch finishes; a restarted run skips what is there. With
--archive=DIR (testbed sweeps) it also skips the groups summarised there
(`experiments.search_report --update_archive` writes them): a sweep continues from
a committed archive, e.g. results/arith_sweep_v2, on a machine without its workdir.

On several devices the problems are sharded over a "data" mesh axis (the testbed: all
devices by default; MATH-500: the config's `mesh`, unless the flags say otherwise).
On several hosts, start one process per host with the same flags and --distributed:
it joins them (`ttcjax.parallel.initialize_distributed`) before building the mesh,
which then spans every host's devices. In a cluster environment JAX recognises (a
TPU pod, SLURM, Open MPI, Kubernetes) that is all; elsewhere give each process
--coordinator_address=HOST:PORT (process 0's host, a free port), --num_processes=N
and its --process_id (0 .. N-1), e.g. two processes on one CPU machine:

  python -m experiments.search --config configs/arith/sweep.py --workdir runs/two \
      --distributed --coordinator_address=localhost:12355 --num_processes=2 --process_id=0 &
  python -m experiments.search --config configs/arith/sweep.py --workdir runs/two \
      --distributed --coordinator_address=localhost:12355 --num_processes=2 --process_id=1

Every process gathers the global results and process 0 alone writes them, so WORKDIR
must be on a filesystem all hosts share. When a process dies the others exit with an
error within --heartbeat_timeout_s; start them all again to resume.
"""

from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from experiments import distributed
from ttcjax import sweep, tasks
from ttcjax.sweep import archive

_CONFIG = config_flags.DEFINE_config_file("config", None, "A sweep config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds this sweep).")
_DATA_SHARDS = flags.DEFINE_integer(
    "data_shards", 0, "Devices on the data axis (0: the config's mesh for MATH-500, else all "
    "devices over model_shards).")
_MODEL_SHARDS = flags.DEFINE_integer(
    "model_shards", 0, "Devices each model's weights are split over (0: the config's mesh "
    "for MATH-500, else 1).")
_ARCHIVE = flags.DEFINE_string(
    "archive", None, "A directory of archived sweep groups to skip (testbed sweeps).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  distributed.run(run)


def run():
  config = _CONFIG.value
  try:  # a mistyped or not yet started archive is named before anything loads
    archive.read(_ARCHIVE.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  task = tasks.task_of(config)
  mesh = task.make_mesh(config, _DATA_SHARDS.value, _MODEL_SHARDS.value)
  bar = tqdm(desc="search units", unit="unit", disable=None)

  def progress(stats):
    bar.total = stats["units_total"]
    bar.n = stats["units_run"] + stats["units_skipped"]
    bar.set_postfix(sweep.progress_postfix(stats))
    bar.refresh()
    if bar.disable:  # not a terminal (a run in the background): one log line a unit
      postfix = sweep.progress_postfix(stats)
      logging.info("search units %d/%d, %s tokens/s, %s left", bar.n, bar.total,
                   postfix["tok_s"], postfix["left"])

  stats = task.run_sweep(config, _WORKDIR.value, mesh=mesh, progress=progress,
                         archive_dir=_ARCHIVE.value)
  bar.close()
  stats.pop("uids", None)
  print(stats)


if __name__ == "__main__":
  app.run(main)
