"""The testbed's ORM baseline: the same backbone and head as the PRM, trained on the
final answer's correctness of whole solutions (the same labelled samples).

Reproduce the shipped checkpoint (after the labelling stage):
  python -m experiments.train --config configs/arith/orm.py --workdir runs/orm \
      --config.export_dir=checkpoints/arith/orm
"""

from configs.arith import common


def get_config():
  return common.reward_config("orm", policy_dir="checkpoints/arith/policy_small",
                              labels_path="runs/mc_labels/labels.jsonl", steps=1200)
