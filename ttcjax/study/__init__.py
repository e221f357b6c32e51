"""The compute-optimal scaling study (Snell et al. 2024, sections 3, 5 and 7), on the host.

From sweep records to the paper's numbers, one idea per module:
* `outcomes`: per-question expected correctness and cost of every option.
* `difficulty`: oracle (pass@1) and predicted (PRM score) difficulty bins.
* `allocation`: per-bin choice, the exact budget knapsack, cross-validation.
* `optimal`: compute-optimal curves and efficiency ratios, scored held out.
* `exchange`: the FLOPs-matched exchange against a larger policy.
* `findings`: the paper's findings checked against the numbers.
* `analysis`: all of it from a study's records (`analyse`), one JSON-able dict.
* `report`, `plots`: report.md and the figures; `runner`: a study end to end.
"""

from ttcjax.study.allocation import Option, ResultTable, load_allocation, save_allocation
from ttcjax.study.analysis import analyse
from ttcjax.study.difficulty import DifficultyBins, difficulty_bins, oracle_bins, predicted_bins
from ttcjax.study.exchange import exchange
from ttcjax.study.findings import findings, per_bin_accuracy
from ttcjax.study.optimal import (allocate, allocation_curve, compute_optimal, efficiency_ratios,
                                  ratio_text)
from ttcjax.study.outcomes import BEST_OF_N, MAJORITY, curve, outcome_tables

__all__ = [
    "BEST_OF_N", "DifficultyBins", "MAJORITY", "Option", "ResultTable", "allocate",
    "allocation_curve", "analyse", "compute_optimal", "curve", "difficulty_bins",
    "efficiency_ratios", "exchange", "findings", "load_allocation", "oracle_bins",
    "outcome_tables", "per_bin_accuracy", "predicted_bins", "ratio_text", "save_allocation",
]
