"""The search sweep on the testbed: every strategy x budget x seed over the test set.

  python -m experiments.search --config configs/arith/sweep.py --workdir runs/sweep

Smaller runs for a look: --config.problems_per_level=5 --config.budgets='(4,16)'.
Best-of-N runs once at the largest budget; its smaller budgets are read from those
samples. Sampling at temperature 1.0, the temperature the testbed's difficulty was
calibrated at.
"""

import ml_collections

BUDGETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "arith"
  c.policy_dir = "checkpoints/arith/policy_small"
  c.prm_dir = "checkpoints/arith/prm"
  c.problems_per_level = 50
  c.problems_per_batch = 50
  # Problems x rows each (N, 2N for lookahead) per search call: 50 problems up to N = 128
  # (64 with lookahead), 25 at N = 256, so the caches fit in 24 GiB.
  c.max_rows_per_batch = 6400
  c.budgets = BUDGETS
  c.seeds = (0,)
  c.temperature = 1.0
  c.top_p = 1.0
  c.caps = dict(max_prompt_tokens=48, max_step_tokens=32, max_solution_tokens=160,
                max_steps=12, max_rounds=40)
  c.strategies = [
      dict(name="best_of_n", max_budget_only=True),
      dict(name="beam", beam_width=4, label="beam_m4"),
      dict(name="beam", beam_width="sqrt", label="beam_msqrt"),
      dict(name="lookahead", beam_width=4, lookahead_steps=3, label="lookahead_m4_k3"),
      dict(name="lookahead", beam_width="sqrt", lookahead_steps=3, label="lookahead_msqrt_k3"),
      dict(name="lookahead", beam_width="sqrt", lookahead_steps=1, label="lookahead_msqrt_k1"),
      dict(name="dvts", beam_width=4, label="dvts_m4"),
      dict(name="rebase", temperature=0.1, label="rebase_t0.1"),
  ]
  return c
