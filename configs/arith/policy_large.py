"""The testbed's larger policy (2.56x the small one's parameters) for the FLOPs-matched
exchange, trained as a larger model must be: its own learning rate, and about as many
tokens per parameter as the small policy (17.2 against its 16.9).

Reproduce the shipped checkpoint:
  python -m experiments.train --config configs/arith/policy_large.py \
      --workdir runs/policy_large --config.export_dir=checkpoints/arith/policy_large
The same data stream as the small policy (its first 2500 steps are the small one's
batches), 6500 steps of 64 problems.
Wall time on 2 CPU cores: 75.4 min (2026-12-02; 6500 steps, 21.95M tokens, 1,279,840
parameters; held-out loss 0.0067 against the small policy's 0.047), beside light
other work on the machine.

Learning-rate sweep (500-step runs of this model and data, 50 warmup steps, cosine to
10%, held-out loss at step 500; each on one core beside other work, about 9 min):
  lr 3e-3: 0.970   1.5e-3: 0.529   7.5e-4: 0.494 (chosen)   3.75e-4: 0.606
  python -m experiments.train --config configs/arith/policy_large.py --workdir runs/lr_X \
      --config.train.steps=500 --config.optimizer.warmup_steps=50 \
      --config.optimizer.learning_rate=X
A first candidate of 1.77M parameters (hidden 192) was dropped after one sweep run
(2.7k tokens/s on one core: 20 tokens per parameter would take 3.6 hours here).
The previous larger policy (5.1M parameters, 1.6 tokens per parameter) was weaker than
the small one (greedy pass@1 0.582 against 0.656) and is replaced by this one.
"""

from configs.arith import common

MODEL = dict(hidden_size=160, num_layers=4, num_heads=5, num_kv_heads=5,
             intermediate_size=448, max_position_embeddings=256)


def get_config():
  return common.sft_config(MODEL, steps=6500, learning_rate=7.5e-4)
