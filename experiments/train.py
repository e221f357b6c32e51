"""Trains a testbed model: a policy (SFT), a PRM or an ORM, as `config.stage` says.

  python -m experiments.train --config configs/arith/policy_small.py --workdir runs/policy_small
  python -m experiments.train --config configs/arith/policy_small.py --workdir runs/x \
      --config.train.steps=100

Each config's docstring gives the command that regenerates the shipped checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from ttcjax.training import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "An ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds this run).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  summary = pipeline.run(_CONFIG.value, _WORKDIR.value)
  print({k: v for k, v in summary.items() if not isinstance(v, dict)})


if __name__ == "__main__":
  app.run(main)
