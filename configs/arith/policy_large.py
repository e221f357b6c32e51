"""The testbed's large policy (about 10x the small one's parameters) for the
FLOPs-matched comparison: the same data stream, steps and tokens as the small policy.

Reproduce the shipped checkpoint:
  python -m experiments.train --config configs/arith/policy_large.py \
      --workdir runs/policy_large --config.export_dir=checkpoints/arith/policy_large
Exported in bfloat16 to keep the shipped testbed small.
Wall time on 2 CPU cores: 72.3 min (2500 steps, 8.44M tokens, 2026-11-28), sharing the
cores with the small policy's, the labelling and the reward models' runs.
Learning rate: 3e-3 (the small policy's) was tried and stopped at step 1000, held-out
loss 0.585 against 0.349 for 1.5e-3 at the same step.
"""

from configs.arith import common

MODEL = dict(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=8,
             intermediate_size=768, max_position_embeddings=256)


def get_config():
  config = common.sft_config(MODEL, steps=2500, learning_rate=1.5e-3)
  config.export_dtype = "bfloat16"
  return config
