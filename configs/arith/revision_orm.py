"""The revision ORM: the shipped ORM's recipe (`configs/arith/orm.py`) trained on the
revision model's own attempts (`configs/arith/revision_outputs.py`), as the paper's
verifier for revisions is trained on its revision model's outputs. Each attempt is
scored as a solution to the question alone, as the search scores it.

  python -m experiments.train --config configs/arith/revision_outputs.py \\
      --workdir runs/revision_outputs
  python -m experiments.train --config configs/arith/revision_orm.py \\
      --workdir runs/revision_orm --config.export_dir=checkpoints/arith/revision_orm

Wall time: 13.1 min (2026-12-02, 784 s on one of 2 CPU cores, the other running a sweep;
9,216 training and 1,024 held-out attempts; early-stopped at step 700 of 1000, the
exported parameters are step 200's, held-out BCE 0.4260 against the shipped ORM's
0.3868 on the policy's solutions). Shipped as checkpoints/arith/revision_orm (5.2 MB;
the folder 24.8 MB).
"""

from configs.arith import common


def get_config():
  c = common.verifier_config("orm")
  c.labels_path = "runs/revision_outputs/labels.jsonl"
  return c
