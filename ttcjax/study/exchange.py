"""The FLOPs-matched exchange (the paper's section 7): a small policy plus test-time
compute against a larger policy decoding greedily, per difficulty bin."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttcjax import compute
from ttcjax.study.allocation import Option, ResultTable
from ttcjax.study.outcomes import BEST_OF_N, curve


def exchange(table: ResultTable, optimal: Sequence[dict], bins: np.ndarray, num_bins: int,
             large_correct: np.ndarray, params_ratio: float, ratios: Sequence[float],
             pretraining_tokens: float,
             large_pretraining_tokens: float | None = None) -> list[dict]:
  """Small policy + test-time compute against a larger policy decoding greedily.

  At R = D_inference / D_pretrain the small model may spend
  X = M + 3 (M - 1) / R times the larger model's inference compute (the paper's
  section 7 with pretraining 6ND and inference 2ND); when the two were pretrained on
  different token counts, each is charged its own (`compute.exchange_factor`) and R
  is relative to the small model's D_pretrain. A greedy answer is one sample,
  so the small model gets a generation budget of X: the largest budget run that
  does not exceed X (the smallest one, noted, when X is below every budget).

  Args:
    table: the samples table.
    optimal: `compute_optimal` points (oracle bins) for every run budget.
    bins: [Q] oracle bins.
    num_bins: Y.
    large_correct: [Q] bool, the larger policy's greedy answers.
    params_ratio: M, parameters of the larger policy over the small one's.
    ratios: the R values.
    pretraining_tokens: the small model's D_pretrain, for the implied inference tokens.
    large_pretraining_tokens: the larger model's (None: the same as the small one's).

  Returns:
    one dict per R: "R", "X", "budget_used", "budget_note" ("" or why the budget
    used is not X's power of two), "inference_tokens" (R x D_pretrain),
    and "bins": per bin {"small", "large", "best_of_n", "winner"}, plus the same
    over all questions under "all".
  """
  by_budget = {p["budget"]: np.array(p["per_question"]) for p in optimal}
  bon_budgets = curve(table, BEST_OF_N)[0]
  large_correct = np.asarray(large_correct, np.float64)
  out = []
  for r in ratios:
    x = compute.exchange_factor(params_ratio, r, (large_pretraining_tokens or pretraining_tokens)
                                / pretraining_tokens)
    usable = [b for b in by_budget if b <= x]
    budget = max(usable) if usable else min(by_budget)
    small = by_budget[budget]
    bon_budget = max([b for b in bon_budgets if b <= budget] or [min(bon_budgets)])
    bon = table.accuracy[table.options.index(Option(BEST_OF_N, bon_budget))]
    per_bin = []
    for k in list(range(num_bins)) + ["all"]:
      members = np.ones(len(bins), bool) if k == "all" else bins == k
      s, l, b = (float(v[members].mean()) for v in (small, large_correct, bon))
      per_bin.append({"bin": k, "small": s, "large": l, "best_of_n": b,
                      "winner": "test-time compute" if s > l else
                                ("pretraining" if l > s else "tie")})
    note = ("X below the smallest budget" if not usable else
            "X beyond the largest budget" if x > max(by_budget) else "")
    out.append({"R": float(r), "X": float(x), "budget_used": int(budget), "budget_note": note,
                "inference_tokens": float(r * pretraining_tokens),
                "bins": per_bin[:-1], "all": per_bin[-1]})
  return out
