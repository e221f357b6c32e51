"""The testbed's ORM: the PRM's recipe (`configs/arith/prm.py`: the larger policy's
backbone, the multi-task loss, the step-likelihood head) trained on the final
answer's correctness of the same labelled solutions, read at the final step only, so
PRM against ORM compares the labels alone.

Reproduce the shipped checkpoint (after the labelling stage):
  python -m experiments.train --config configs/arith/orm.py --workdir runs/orm \\
      --config.export_dir=checkpoints/arith/orm
Wall time on 2 CPU cores: 12.9 min (2026-12-02; early-stopped at step 700 of 1000, the
exported parameters are step 200's, held-out BCE 0.3868), sharing the cores with both
PRM runs.
"""

from configs.arith import common


def get_config():
  return common.verifier_config("orm")
