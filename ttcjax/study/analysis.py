"""The compute-optimal scaling study, from search results to the paper's figures' numbers.

Inputs are JSON-lines records of `ttcjax.sweep` (one per problem, strategy,
budget and seed): the sweep itself, a separate best-of-N run whose samples estimate
each question's difficulty, and a larger policy's greedy answers. Everything here
is host-side numpy and cheap; `analyse` returns one JSON-serialisable dict that the
figures, `report.md` and `summary.json` are made from.

Decisions (see docs/design.md):
* The budget is the paper's generation budget (samples; N x (k+1) for lookahead).
  Options are (strategy, generation budget) pairs; best-of-N contributes every
  budget up to its run's N, read from random subsets of its samples.
* Every strategy's answer is picked by one selection rule (default best-of-N
  weighted over the PRM's last-step score, as in the paper); majority voting over
  best-of-N's samples is an option of its own, so the solver may pick it.
* Compute-optimal curves and the budget-allocating solver are scored on held-out
  questions (two-fold cross-validation, repeated); the best-of-N reference curve
  they are compared against is its plain mean over all questions.
* Estimating difficulty costs X samples per question. Ratios are reported without
  that cost (as the paper does) and with it added to the compute-optimal budget.
* Sequential revisions (settings of the "revisions" strategy) get their own section
  (`ttcjax.study.revisions`): the search's solver, allocation and exchange choose
  among search strategies only; compute-optimal revisions among revision ratios only;
  the combined solver among both (`efficiency_ratio` gains "revisions" and
  "combined").

Q denotes questions, O options, Y bins, X difficulty samples per question.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ttcjax import compute
from ttcjax.study.difficulty import difficulty_bins
from ttcjax.study.exchange import exchange
from ttcjax.study.findings import findings, per_bin_accuracy
from ttcjax.study.optimal import allocation_curve, compute_optimal, efficiency_ratios
from ttcjax.study.outcomes import BEST_OF_N, curve, outcome_tables
from ttcjax.study.revisions import analyse_revisions, chain_lengths


def analyse(sweep_records: Sequence[dict], difficulty_records: Sequence[dict],
            large_records: Sequence[dict] | None, budgets: Sequence[int],
            small_policy: compute.ModelCost, prm: compute.ModelCost,
            params_ratio: float | None, pretraining_tokens: float | None,
            exchange_ratios: Sequence[float], num_bins: int = 5,
            selection: str = "weighted_last", repeats: int = 20, num_draws: int = 16,
            seed: int = 0, large_pretraining_tokens: float | None = None,
            revision_pretraining_tokens: float | None = None) -> dict:
  """The whole study's numbers (see the module docstring).

  Args:
    sweep_records: the strategy x budget sweep.
    difficulty_records: one best-of-N run of X samples per question (another seed).
    large_records: the larger policy's greedy run (budget 1, one per question); None:
      no larger policy, so no exchange (`"exchange"` is None).
    budgets: the sweep's run budgets (N).
    small_policy, prm: model costs (best-of-N FLOPs at smaller budgets).
    params_ratio: M, the larger policy's parameters over the small one's.
    pretraining_tokens: D_pretrain of the small policy.
    large_pretraining_tokens: the larger policy's (None: the same as the small one's).
    exchange_ratios: the R values of the exchange.
    num_bins: Y difficulty bins.
    selection: the selection rule for every strategy.
    repeats: cross-validation splits.
    num_draws: best-of-N subsets averaged.
    seed: splits' and subsets' seed.
    revision_pretraining_tokens: the revision model's training tokens (the policy's
      plus its revision SFT), its D_pretrain in the exchange with revisions (None:
      the small policy's).
  """
  uids = sorted({r["uid"] for r in difficulty_records})
  if len(uids) < 2 * num_bins:
    raise ValueError(f"{len(uids)} questions are too few for {num_bins} bins and two folds; "
                     f"use at least {2 * num_bins}.")
  all_samples, all_flops, verifier_table = outcome_tables(
      sweep_records, uids, budgets, small_policy, prm, selection, num_draws)
  all_samples.require([BEST_OF_N])
  lengths = chain_lengths(sweep_records)
  search = [s for s in all_samples.strategies() if s not in lengths]
  samples_table, flops_table = all_samples.only(search), all_flops.only(search)
  run_budgets = sorted(budgets)
  curves = {}
  for s in all_samples.strategies():
    budgets_s, accuracy, _ = curve(all_samples, s)
    curves[s] = {"budgets": budgets_s, "accuracy": accuracy,
                 "mean_flops": curve(all_flops, s)[2],
                 "mean_verifier_flops": curve(verifier_table, s)[2]}
  bins = difficulty_bins(difficulty_records, uids, num_bins)
  num_samples = len(difficulty_records[0]["answers"])
  estimate_cost = {"samples": float(num_samples),
                   "flops": float(np.mean(bins["oracle"].cost))}
  reference = (curves[BEST_OF_N]["budgets"], curves[BEST_OF_N]["accuracy"])
  optimal, ratios, ratios_charged, allocations, per_bin = {}, {}, {}, {}, {}
  for kind, b in bins.items():
    optimal[kind] = compute_optimal(samples_table, b.bins, num_bins, run_budgets, repeats, seed)
    ratios[kind] = efficiency_ratios(optimal[kind], reference)
    ratios_charged[kind] = efficiency_ratios(optimal[kind], reference, estimate_cost["samples"])
    allocations[kind] = allocation_curve(samples_table, b.bins, num_bins, run_budgets, repeats,
                                         seed)
    per_bin[kind] = per_bin_accuracy(all_samples, b.bins, num_bins)
  revisions = analyse_revisions(all_samples, {kind: b.bins for kind, b in bins.items()},
                                num_bins, run_budgets, lengths, repeats, seed, sweep_records)
  if revisions:
    ratios["revisions"] = revisions["efficiency_ratio"]
    ratios["combined"] = revisions["combined_efficiency_ratio"]
  exchange_result, exchange_rows = None, []
  if large_records is not None:
    by_uid = {r["uid"]: r for r in large_records}
    missing = [u for u in uids if u not in by_uid]
    if missing:
      raise ValueError(f"The larger policy's run lacks {len(missing)} questions "
                       f"(e.g. {missing[0]}).")
    if not params_ratio or not pretraining_tokens:
      raise ValueError("The exchange needs params_ratio and pretraining_tokens (D_pretrain).")
    large_correct = np.array([by_uid[u]["correct"][0] for u in uids], bool)
    # One sample's policy FLOPs per question, from the difficulty run's samples: the
    # unit in which the verifier-counting exchange measures X.
    sample_flops = float(np.mean([r["flops"]["policy_flops"] for r in difficulty_records])
                         / num_samples)
    exchange_rows = exchange(samples_table, optimal["oracle"], bins["oracle"].bins, num_bins,
                             large_correct, params_ratio, exchange_ratios, pretraining_tokens,
                             large_pretraining_tokens, flops_table, sample_flops)
    if revisions:  # compute-optimal revisions as the test-time side, charged their SFT
      small_tokens = revision_pretraining_tokens or pretraining_tokens
      revisions["exchange"] = exchange(
          all_samples, revisions["compute_optimal"]["oracle"], bins["oracle"].bins, num_bins,
          large_correct, params_ratio, exchange_ratios, small_tokens,
          large_pretraining_tokens or pretraining_tokens, all_flops, sample_flops)
    exchange_result = {"params_ratio": params_ratio, "pretraining_tokens": pretraining_tokens,
                       "large_pretraining_tokens": large_pretraining_tokens or pretraining_tokens,
                       "large_greedy_accuracy": float(large_correct.mean()),
                       "sample_policy_flops": sample_flops,
                       "rows": exchange_rows}
  return {
      "questions": len(uids), "num_bins": num_bins, "selection": selection,
      "budgets": run_budgets, "difficulty_samples": num_samples,
      "difficulty_estimate_cost": estimate_cost,
      "curves": curves,
      "bins": {kind: {"values": b.values.tolist(), "bins": b.bins.tolist()}
               for kind, b in bins.items()},
      "per_bin": per_bin,
      "compute_optimal": optimal,
      "efficiency_ratio": ratios,
      "efficiency_ratio_with_estimation": ratios_charged,
      "allocation": allocations,
      "exchange": exchange_result,
      # The search's findings, then section 6's (with revision settings).
      "findings": (findings(curves, per_bin["oracle"], ratios, exchange_rows)
                   + (revisions["findings"] if revisions else [])),
      "revisions": revisions or None,
  }
