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
             large_pretraining_tokens: float | None = None,
             flops_table: ResultTable | None = None,
             sample_flops: float | None = None) -> list[dict]:
  """Small policy + test-time compute against a larger policy decoding greedily.

  At R = D_inference / D_pretrain the small model may spend
  X = M + 3 (M - 1) / R times the larger model's inference compute (the paper's
  section 7 with pretraining 6ND and inference 2ND); when the two were pretrained on
  different token counts, each is charged its own (`compute.exchange_factor`) and R
  is relative to the small model's D_pretrain. A greedy answer is one sample,
  so the small model gets a generation budget of X: the largest budget run that
  does not exceed X (the smallest one, noted, when X is below every budget).

  That unit counts the policy only, as the paper's formula does. With `flops_table`
  and `sample_flops` each row also says what happens when the verifier's FLOPs count
  too (`"counting_verifier"`): the small model may spend X times one sample's policy
  FLOPs per question, and gets the largest budget whose compute-optimal choice
  (fitted on all questions) spent no more on average, policy and verifier together.

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
    flops_table: the FLOPs table (policy plus verifier per option and question).
    sample_flops: one sample's policy FLOPs per question (the unit X counts in).

  Returns:
    one dict per R: "R", "X", "budget_used", "budget_note" ("" or why the budget
    used is not X's power of two), "inference_tokens" (R x D_pretrain),
    and "bins": per bin {"small", "large", "best_of_n", "winner"}, plus the same
    over all questions under "all"; with the FLOPs, "counting_verifier": the same
    "budget_used", "budget_note", "bins", "all", and "flops_allowed" / "flops_spent"
    per question.
  """
  if (flops_table is None) != (sample_flops is None):
    raise ValueError("Counting the verifier needs both flops_table and sample_flops.")
  spent = ({p["budget"]: _mean_flops(flops_table, p, bins) for p in optimal}
           if flops_table is not None else {})
  by_budget = {p["budget"]: np.array(p["per_question"]) for p in optimal}
  bon_budgets = curve(table, BEST_OF_N)[0]
  large_correct = np.asarray(large_correct, np.float64)
  out = []

  def matched(cost: dict, allowed: float, notes: tuple[str, str]) -> dict:
    usable = [b for b in by_budget if cost[b] <= allowed]
    budget = max(usable) if usable else min(by_budget, key=lambda b: cost[b])
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
    note = (notes[0] if not usable else notes[1] if allowed > max(cost.values()) else "")
    return {"budget_used": int(budget), "budget_note": note, "bins": per_bin[:-1],
            "all": per_bin[-1]}

  for r in ratios:
    x = compute.exchange_factor(params_ratio, r, (large_pretraining_tokens or pretraining_tokens)
                                / pretraining_tokens)
    row = {"R": float(r), "X": float(x), "inference_tokens": float(r * pretraining_tokens),
           **matched({b: float(b) for b in by_budget}, x,
                     ("X below the smallest budget", "X beyond the largest budget"))}
    if spent:
      allowed = x * sample_flops
      row["counting_verifier"] = matched(
          spent, allowed, ("FLOPs allowed below every budget's spend",
                           "FLOPs allowed beyond the largest budget's spend"))
      row["counting_verifier"].update(
          flops_allowed=float(allowed),
          flops_spent=spent[row["counting_verifier"]["budget_used"]])
    out.append(row)
  return out


def _mean_flops(flops_table: ResultTable, point: dict, bins: np.ndarray) -> float:
  """Mean FLOPs per question of a compute-optimal point's per-bin choice."""
  cost = np.zeros(len(bins))
  for k, choice in enumerate(point["choice"]):
    if choice is not None:
      index = flops_table.options.index(Option(choice["strategy"], choice["budget"]))
      cost[bins == k] = flops_table.cost[index, bins == k]
  return float(cost.mean())
