"""The testbed's small policy: SFT on the arithmetic task.

Reproduce the shipped checkpoint:
  python -m experiments.train --config configs/arith/policy_small.py \
      --workdir runs/policy_small --config.export_dir=checkpoints/arith/policy_small
Wall time on 2 CPU cores: 15.5 min (2500 steps, 8.44M tokens, 2026-11-28), sharing
the cores with the large policy's run the whole time.
"""

from configs.arith import common

MODEL = dict(hidden_size=128, num_layers=3, num_heads=4, num_kv_heads=4,
             intermediate_size=256, max_position_embeddings=256)


def get_config():
  return common.sft_config(MODEL, steps=2500, learning_rate=3e-3)
