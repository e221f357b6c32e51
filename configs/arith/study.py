"""The compute-optimal scaling study on the shipped testbed (the main job).

  python -m experiments.reproduce --workdir runs/study
  python -m experiments.reproduce --workdir runs/study_quick --config=configs/arith/study.py:quick

The default size (30.4 minutes on 2 CPU cores with revisions, 2026-12-02; 6 without):
80 test problems
(8 per level), generation budgets 1..32, four strategy settings (best-of-N, beam
with M = 4 and M = sqrt(N), lookahead k = 1), sequential revisions at every chain
length L of the budgets (N / L chains of L attempts of the revision model: the
paper's section 6), 16 difficulty samples per problem.
A longer study reuses the same workdir and adds only what is new, e.g. budgets to 64:

  python -m experiments.reproduce --workdir runs/study \
      --config.budgets='(1,2,4,8,16,32,64)'

More problems work the same way (problems_per_level up to 50, the whole test set).
DVTS, REBASE and lookahead k = 3 are in configs/arith/sweep.py; add them here (in a
new workdir: other strategies are refused in an old one) for a wider study.

The `quick` variant (20 problems, budgets 1..4, 4 difficulty samples, revisions at chain
lengths 1 and 2) is a smoke test of every stage; a default run may reuse a quick run's workdir.
"""

import ml_collections

from configs import study_analysis
from configs.arith import sweep


QUICK = dict(problems_per_level=2, problems_per_batch=20, budgets=(1, 2, 4), difficulty_samples=4,
             cv_repeats=10, revision_chain_lengths=(1, 2))


def get_config(variant=None):
  c = ml_collections.ConfigDict()
  c.task = "arith"
  c.policy_dir = "checkpoints/arith/policy_small"
  c.large_policy_dir = "checkpoints/arith/policy_large"
  c.prm_dir = "checkpoints/arith/prm"
  c.revision_dir = "checkpoints/arith/revision"
  c.revision_chain_lengths = (1, 2, 4, 8, 16, 32)
  c.problems_per_level = 8
  c.problems_per_batch = 80
  c.budgets = (1, 2, 4, 8, 16, 32)
  c.seeds = (0,)
  c.temperature = 1.0
  c.top_p = 1.0
  c.caps = sweep.get_config().caps.to_dict()
  c.strategies = [
      dict(name="best_of_n", max_budget_only=True),
      dict(name="beam", beam_width=4, label="beam_m4"),
      dict(name="beam", beam_width="sqrt", label="beam_msqrt"),
      dict(name="lookahead", beam_width="sqrt", lookahead_steps=1, label="lookahead_msqrt_k1"),
  ]
  study_analysis.set_analysis_fields(c)
  study_analysis.set_variant(c, variant, QUICK)
  # Revisions at every sequential:parallel ratio: chain lengths 1 (fully parallel) to the
  # largest budget (fully sequential there), each run at the budgets it divides.
  c.strategies = list(c.strategies) + [
      dict(name="revisions", chain_length=length, label=f"revisions_l{length}")
      for length in c.revision_chain_lengths]
  return c
