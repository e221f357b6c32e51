"""Runs (or resumes) a search sweep on the testbed's shipped models.

  python -m experiments.search --config configs/arith/sweep.py --workdir runs/sweep
  python -m experiments.search --config configs/arith/sweep.py --workdir runs/look \
      --config.problems_per_level=5 --config.budgets='(4,16)'

Results go to WORKDIR/results.jsonl, one line per (problem, strategy, budget, seed),
written as each batch finishes; a restarted run skips what is there.

On several devices the problems are sharded over a "data" mesh axis (all devices by
default). On a TPU pod or a multi-host GPU cluster, start one process per host with
--distributed: it calls jax.distributed.initialize() (which reads the coordinator
address and process ids from the cluster environment) before building the mesh.
"""

import jax
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from ttcjax import parallel
from ttcjax.tasks import testbed

_CONFIG = config_flags.DEFINE_config_file("config", None, "A sweep config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds this sweep).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() first (multi-host runs).")
_DATA_SHARDS = flags.DEFINE_integer("data_shards", 0,
                                    "Devices on the data axis (0: all devices over model_shards).")
_MODEL_SHARDS = flags.DEFINE_integer("model_shards", 1,
                                     "Devices each model's weights are split over.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  shards = _DATA_SHARDS.value or jax.device_count() // _MODEL_SHARDS.value
  mesh = None
  if shards * _MODEL_SHARDS.value > 1:
    mesh = parallel.make_mesh(data=shards, model=_MODEL_SHARDS.value)
  bar = tqdm(desc="search units", unit="unit", disable=None)

  def progress(stats):
    bar.total = stats["units_total"]
    bar.n = stats["units_run"] + stats["units_skipped"]
    bar.set_postfix(tok_s=f"{stats['tokens_generated'] / stats['wall_s']:.0f}")
    bar.refresh()

  stats = testbed.run_search_sweep(_CONFIG.value, _WORKDIR.value, mesh=mesh, progress=progress)
  bar.close()
  print(stats)


if __name__ == "__main__":
  app.run(main)
