"""The analysis fields every study config shares (`ttcjax.study.runner` reads them), and
its size variants."""

import ml_collections


def set_analysis_fields(c: ml_collections.ConfigDict) -> None:
  """Difficulty from 16 more best-of-N samples per problem (another seed) in 5 bins;
  every strategy's answer by best-of-N weighted (last step score); 2-fold
  cross-validation over 50 random splits; best-of-N at smaller budgets averaged over
  16 subset draws; the FLOPs-matched exchange at R in {0.16, 0.79, 22}."""
  c.difficulty_samples = 16
  c.difficulty_seed = 1000
  c.num_bins = 5
  c.selection = "weighted_last"
  c.cv_repeats = 50
  c.num_draws = 16
  c.analysis_seed = 0
  c.exchange_ratios = (0.16, 0.79, 22.0)


VARIANTS = ("default", "quick")


def set_variant(c: ml_collections.ConfigDict, variant: str | None, quick: dict) -> None:
  """Applies a size variant the big_vision way (`--config=FILE:quick`).

  Args:
    c: the config, at its default size.
    variant: None or "default" (as is), or "quick" (the `quick` sizes: a smoke test of
      every stage).
    quick: the fields the quick variant changes.
  """
  variant = variant or "default"
  if variant not in VARIANTS:
    raise ValueError(f"Unknown config variant {variant!r}; use one of {VARIANTS} "
                     "(--config=FILE or --config=FILE:quick).")
  c.variant = variant
  if variant == "quick":
    c.update(quick)
