"""The testbed's ORM baseline: the same backbone and head as the PRM, trained on the
final answer's correctness of whole solutions (the same labelled samples).

Reproduce the shipped checkpoint (after the labelling stage):
  python -m experiments.train --config configs/arith/orm.py --workdir runs/orm \
      --config.export_dir=checkpoints/arith/orm
Wall time on 2 CPU cores: 8.6 min (2026-11-28; early-stopped at step 1000 of 1200, the
exported parameters are step 500's, the best held-out loss), sharing the cores with the
PRM's run and the large policy's.
"""

from configs.arith import common


def get_config():
  return common.reward_config("orm", policy_dir="checkpoints/arith/policy_small",
                              labels_path="runs/mc_labels/labels.jsonl", steps=1200)
