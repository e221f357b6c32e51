"""Monte Carlo step labels from the small policy, for PRM and ORM training.

The paper uses 16 samples per question and 16 rollouts per step on real models;
the testbed uses 4 and 4 on 2000 training questions, which its tiny models learn from.

  python -m experiments.mc_labels --config configs/arith/mc_labels.py --workdir runs/mc_labels

Wall time on 2 CPU cores: 19.8 min (2026-11-28; 7992 labelled samples, 2.46M rollout
and sample tokens at 2071 tokens/s), sharing the cores with the large policy's run.
"""

import ml_collections

from configs.arith import common


def get_config():
  c = ml_collections.ConfigDict()
  c.stage = "mc_labels"
  c.policy_dir = "checkpoints/arith/policy_small"
  c.data_seed = common.DATA_SEED
  c.num_problems = 2000
  c.labels = dict(samples_per_problem=4, rollouts_per_step=4, temperature=1.0, max_steps=12,
                  max_step_tokens=32, max_solution_tokens=160, problems_per_batch=32, seed=0)
  return c
