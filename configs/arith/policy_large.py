"""The testbed's large policy (about 10x the small one's parameters) for the
FLOPs-matched comparison: the same data stream, steps and tokens as the small policy.

Reproduce the shipped checkpoint:
  python -m experiments.train --config configs/arith/policy_large.py \
      --workdir runs/policy_large --config.export_dir=checkpoints/arith/policy_large
Exported in bfloat16 to keep the shipped testbed small.
"""

from configs.arith import common

MODEL = dict(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=8,
             intermediate_size=768, max_position_embeddings=256)


def get_config():
  config = common.sft_config(MODEL, steps=2500, learning_rate=3e-3)
  config.export_dtype = "bfloat16"
  return config
