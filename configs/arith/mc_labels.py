"""Monte Carlo step labels from the small policy, for PRM and ORM training.

The paper's scale per question: 16 samples per question and 16 rollouts per step
(soft labels in steps of 1/16, and 16 siblings per question for the verifier to tell
apart). At 3.4 s per question on 2 cores (about 4k rollout tokens/s, measured
2026-12-02 on 16 questions), 640 training questions fit in about 36 minutes; the
earlier 4 x 4 labels on 2000 questions (7,992 samples, 20 min) had more questions but
labels in quarters and 4 siblings each.

  python -m experiments.mc_labels --config configs/arith/mc_labels.py --workdir runs/mc_labels

Wall time on 2 CPU cores: 36.8 min (2026-12-02; 10,231 labelled samples of 10,240,
sample accuracy 0.609; 11.1M rollout and sample tokens at 5,031 tokens/s).
"""

import ml_collections

from configs.arith import common


def get_config():
  c = ml_collections.ConfigDict()
  c.stage = "mc_labels"
  c.policy_dir = "checkpoints/arith/policy_small"
  c.data_seed = common.DATA_SEED
  c.num_problems = 640
  c.labels = dict(samples_per_problem=16, rollouts_per_step=16, temperature=1.0, max_steps=12,
                  max_step_tokens=32, max_solution_tokens=160, problems_per_batch=8, seed=0)
  return c
