"""The testbed's PRM: a verifier larger than the policy it checks (as in search-and-learn:
a 1B policy with an 8B PRM). Initialised from the larger policy (1.28M parameters),
trained with binary cross-entropy on the Monte Carlo soft step labels of the small
policy's solutions (`configs/arith/mc_labels.py`: 16 samples x 16 rollouts) plus the
next-token loss on the right solutions, early-stopped on 10% held-out questions'
BCE. Its head reads the step's likelihood features (the least and mean
log-probability its own LM head gives the step's tokens) beside the step-end hidden
state: `ttcjax.models.prm.step_likelihood_features`, and the README's design section
for why.

Variants: `configs/arith/prm.py:hidden_only`, the same without the likelihood
features (the head reads only the hidden state), the ablation of that choice.

Reproduce the shipped checkpoint (after the labelling stage):
  python -m experiments.train --config configs/arith/prm.py --workdir runs/prm \\
      --config.export_dir=checkpoints/arith/prm
Wall time on 2 CPU cores: 14.6 min (2026-12-02; early-stopped at step 900 of 1000, the
exported parameters are step 400's, held-out BCE 0.4133), sharing the cores with the
ORM's run and the ablation's: `:hidden_only` took 13.7 min (stopped at 800, best step
300, held-out BCE 0.4528). The held-out BCE chose the shipped design.
"""

from configs.arith import common

VARIANTS = ("default", "hidden_only")


def get_config(variant=None):
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown config variant {variant!r}; use one of {VARIANTS}.")
  return common.verifier_config("prm", step_likelihood=variant == "default")
