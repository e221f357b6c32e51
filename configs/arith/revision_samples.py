"""The small policy's own samples of training questions, for the revision model.

The paper's scale: 64 samples per question (temperature 1, the study's sampling).

  python -m experiments.train --config configs/arith/revision_samples.py \
      --workdir runs/revision_samples

Wall time on 2 CPU cores: 8.9 min (2026-12-02; 1,024 questions, 65,536 samples, sample
accuracy 0.610; 87 questions without a right sample, 263 without a wrong one; 2.58M
tokens at 4,851 tokens/s).
"""

import ml_collections

from configs.arith import common


def get_config():
  c = ml_collections.ConfigDict()
  c.stage = "revision_samples"
  c.policy_dir = "checkpoints/arith/policy_small"
  c.data_seed = common.DATA_SEED
  c.num_problems = 1024
  c.sampling = dict(samples_per_problem=64, temperature=1.0, max_solution_tokens=160,
                    problems_per_batch=8, seed=1)
  return c
