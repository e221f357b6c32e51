"""The revision model's own outputs on training questions, for the revision ORM.

4 chains of 4 attempts per question (each attempt after 0-3 previous ones, as the
ratios the study runs), 640 questions: as many graded samples as the PRM's labels.

  python -m experiments.train --config configs/arith/revision_outputs.py \
      --workdir runs/revision_outputs

Wall time: 8.5 min (2026-12-02, 510 s on one of 2 CPU cores, the other running a sweep;
640 questions, 10,240 graded attempts, attempt accuracy 0.625).
"""

import ml_collections

from configs.arith import common, sweep


def get_config():
  c = ml_collections.ConfigDict()
  c.stage = "revision_outputs"
  c.policy_dir = "checkpoints/arith/policy_small"
  c.prm_dir = "checkpoints/arith/prm"  # the runner's PRM; its scores are not kept
  c.revision_dir = "checkpoints/arith/revision"
  c.data_seed = common.DATA_SEED
  c.num_problems = 640
  c.caps = sweep.get_config().caps.to_dict()
  c.sampling = dict(chains=4, chain_length=4, temperature=1.0, problems_per_batch=16, seed=2)
  return c
