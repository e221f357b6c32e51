"""The testbed's PRM: the small policy's backbone plus a value head, trained with
binary cross-entropy on Monte Carlo soft step labels, early-stopped on 10% held-out
questions.

Reproduce the shipped checkpoint (after the labelling stage):
  python -m experiments.train --config configs/arith/prm.py --workdir runs/prm \
      --config.export_dir=checkpoints/arith/prm
Wall time on 2 CPU cores: 7.7 min (2026-11-28; early-stopped at step 800 of 1200, the
exported parameters are step 300's, the best held-out loss), sharing the cores with the
ORM's run and the large policy's.
"""

from configs.arith import common


def get_config():
  return common.reward_config("prm", policy_dir="checkpoints/arith/policy_small",
                              labels_path="runs/mc_labels/labels.jsonl", steps=1200)
