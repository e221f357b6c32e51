"""The revision ORM: the shipped ORM's recipe (`configs/arith/orm.py`) trained on the
revision model's own attempts (`configs/arith/revision_outputs.py`), as the paper's
verifier for revisions is trained on its revision model's outputs. Each attempt is
scored as a solution to the question alone, as the search scores it.

  python -m experiments.train --config configs/arith/revision_outputs.py \\
      --workdir runs/revision_outputs
  python -m experiments.train --config configs/arith/revision_orm.py \\
      --workdir runs/revision_orm --config.export_dir=checkpoints/arith/revision_orm
"""

from configs.arith import common


def get_config():
  c = common.verifier_config("orm")
  c.labels_path = "runs/revision_outputs/labels.jsonl"
  return c
