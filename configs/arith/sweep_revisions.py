"""Sequential revisions on the testbed's 500 test problems: every sequential:parallel
ratio (chain lengths L = 1, 2, 4, ..., 256) at budgets 1..256, the revision model's
chains selected by the shipped PRM (the paper's section 6).

  python -m experiments.search --config configs/arith/sweep_revisions.py \
      --workdir runs/sweep_revisions --config.max_rows_per_batch=4096
  python -m experiments.search_report --workdir runs/sweep_revisions \
      --archive results/arith_sweep_revisions --update_archive   # archive finished groups

Later sessions continue from the archive (`--archive results/arith_sweep_revisions` on
the search command skips its groups) once its first groups are written.

A sweep of its own (its own workdir and archive) beside configs/arith/sweep.py, so the
search sweep's archive keeps its identity. About 2.0M attempts in all (500 problems x
4,097 attempts over the settings and budgets); resumable and archivable like every sweep.
"""

from configs.arith import sweep


def get_config():
  c = sweep.get_config()
  c.revision_dir = "checkpoints/arith/revision"
  c.strategies = [dict(name="revisions", chain_length=length, label=f"revisions_l{length}")
                  for length in c.budgets]
  return c
