"""Monte Carlo step labels for PRM training, from a trained policy.

  python -m experiments.mc_labels --config configs/arith/mc_labels.py --workdir runs/mc_labels

Writes `labels.jsonl` (one problem per line, resumable) and `summary.json`.
"""

from absl import app, flags
from ml_collections import config_flags

from ttcjax.training import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "An ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds this run).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if _CONFIG.value.stage != "mc_labels":
    raise ValueError("experiments.mc_labels runs configs whose stage is 'mc_labels'.")
  print(pipeline.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
