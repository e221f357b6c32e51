"""The testbed's PRM: the small policy's backbone plus a value head, trained with
binary cross-entropy on Monte Carlo soft step labels, early-stopped on 10% held-out
questions.

Reproduce the shipped checkpoint (after the labelling stage):
  python -m experiments.train --config configs/arith/prm.py --workdir runs/prm \
      --config.export_dir=checkpoints/arith/prm
"""

from configs.arith import common


def get_config():
  return common.reward_config("prm", policy_dir="checkpoints/arith/policy_small",
                              labels_path="runs/mc_labels/labels.jsonl", steps=1200)
