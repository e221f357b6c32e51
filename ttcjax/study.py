"""The compute-optimal scaling study, from search results to the paper's figures' numbers.

Inputs are JSON-lines records of `ttcjax.search.sweep` (one per problem, strategy,
budget and seed): the sweep itself, a separate best-of-N run whose samples estimate
each question's difficulty, and a larger policy's greedy answers. Everything here
is host-side numpy and cheap; `analyse` returns one JSON-serialisable dict that the
figures, `report.md` and `summary.json` are made from.

Decisions (see the README's design section):
* The budget is the paper's generation budget (samples; N x (k+1) for lookahead).
  Options are (strategy, generation budget) pairs; best-of-N contributes every
  budget up to its run's N, read from random subsets of its samples.
* Every strategy's answer is picked by one selection rule (default best-of-N
  weighted over the PRM's last-step score, as in the paper); majority voting over
  best-of-N's samples is an option of its own, so the solver may pick it.
* Compute-optimal curves and the budget-allocating solver are scored on held-out
  questions (two-fold cross-validation, repeated); the best-of-N reference curve
  they are compared against is its plain mean over all questions.
* Estimating difficulty costs S samples per question. Ratios are reported without
  that cost (as the paper does) and with it added to the compute-optimal budget.

P denotes questions, O options, K bins, S difficulty samples.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from ttcjax import allocation, compute, difficulty
from ttcjax.allocation import Option, ResultTable
from ttcjax.search import report, select

MAJORITY = "majority"  # the option label of majority voting over best-of-N's samples
BEST_OF_N = "best_of_n"


# ----------------------------------------------------------------- outcome tables


def _group(records: Sequence[dict]) -> dict[tuple[str, int], dict[int, dict[str, dict]]]:
  """{(strategy label, run budget): {seed: {uid: record}}}."""
  groups: dict = collections.defaultdict(lambda: collections.defaultdict(dict))
  for r in records:
    groups[(r["strategy"], r["budget"])][r["seed"]][r["uid"]] = r
  return groups


def outcome_tables(records: Sequence[dict], uids: Sequence[str], budgets: Sequence[int],
                   policy_cost: compute.ModelCost, prm_cost: compute.ModelCost,
                   selection: str = "weighted_last", num_draws: int = 16
                   ) -> tuple[ResultTable, ResultTable]:
  """Per-question expected correctness of every option, with two costs.

  Args:
    records: a sweep's records; every (strategy, budget) must cover `uids`.
    uids: the P questions, in the order of the tables' columns.
    budgets: the generation budgets compared: best-of-N is read at those up to its
      run's N; other runs at a generation budget outside them are left out.
    policy_cost, prm_cost: for best-of-N's FLOPs at smaller budgets.
    selection: the rule every strategy's answer is picked by (`report.SELECTIONS`).
    num_draws: random subsets averaged for best-of-N below its run's N.

  Returns:
    (samples table, FLOPs table): the same options and accuracy [O, P]; cost is the
    generation budget in the first and the FLOPs spent in the second. Seeds are
    averaged.

  Raises:
    ValueError: a (strategy, budget) run lacks some of the questions.
  """
  options, accuracy, flops = [], [], []

  def add(option: Option, per_seed: list[np.ndarray], per_seed_flops: list[np.ndarray]):
    options.append(option)
    accuracy.append(np.mean(per_seed, axis=0))
    flops.append(np.mean(per_seed_flops, axis=0))

  for (label, run_budget), by_seed in sorted(_group(records).items()):
    for seed, by_uid in by_seed.items():
      missing = [u for u in uids if u not in by_uid]
      if missing:
        raise ValueError(f"{label} at budget {run_budget} (seed {seed}) lacks {len(missing)} of "
                         f"the {len(uids)} questions (e.g. {missing[0]}); finish the sweep first.")
    first = next(iter(by_seed.values()))[uids[0]]
    if first["name"] != BEST_OF_N:
      if first["generation_budget"] not in budgets:
        continue  # e.g. lookahead's N (k + 1) beyond the largest budget compared
      runs = [[by_uid[u] for u in uids] for by_uid in by_seed.values()]
      add(Option(label, first["generation_budget"]),
          [report.problem_accuracy(run, selection) for run in runs],
          [np.array([r["flops"]["total_flops"] for r in run]) for run in runs])
      continue
    for size in [b for b in budgets if b <= run_budget]:
      for option_label, rule in ((label, selection), (MAJORITY, "majority")):
        per_seed, per_seed_flops = [], []
        for seed, by_uid in sorted(by_seed.items()):
          run = [by_uid[u] for u in uids]
          per_seed.append(report.problem_accuracy(run, rule, size, num_draws, seed))
          per_seed_flops.append(np.array([report.subset_flops(r, size / run_budget, policy_cost,
                                                              prm_cost) for r in run]))
        add(Option(option_label, size), per_seed, per_seed_flops)
  if len({(o.strategy, o.budget) for o in options}) != len(options):
    raise ValueError("Two runs give the same (strategy, budget); keep one best-of-N run per label.")
  # Best-of-N first: the solvers break ties by the first option listed, so they leave
  # the reference only for a strategy that did strictly better.
  order = sorted(range(len(options)), key=lambda i: (options[i].strategy != BEST_OF_N,
                                                      options[i].strategy, options[i].budget))
  options = [options[i] for i in order]
  acc = np.array(accuracy)[order]
  samples = np.array([[float(o.budget)] * len(uids) for o in options])
  return (ResultTable(tuple(options), acc, samples, tuple(uids)),
          ResultTable(tuple(options), acc, np.array(flops)[order], tuple(uids)))


def curve(table: ResultTable, strategy: str) -> tuple[list[int], list[float], list[float]]:
  """(budgets, mean accuracy, mean cost) of one strategy over all questions, budgets
  ascending."""
  points = sorted((o.budget, float(table.accuracy[i].mean()), float(table.cost[i].mean()))
                  for i, o in enumerate(table.options) if o.strategy == strategy)
  if not points:
    raise ValueError(f"No runs of {strategy!r}; the table holds {table.strategies()}.")
  return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


# ---------------------------------------------------------------------- difficulty


def difficulty_bins(records: Sequence[dict], uids: Sequence[str], num_bins: int
                    ) -> dict[str, difficulty.DifficultyBins]:
  """Oracle and predicted bins from one best-of-N run of S samples per question.

  The oracle statistic is pass@1 over the S samples; the predicted one is the mean
  of the PRM's final step score over them (0 for a sample with no scored step).
  Each question's cost is the run's FLOPs for it.
  """
  by_uid = {r["uid"]: r for r in records}
  missing = [u for u in uids if u not in by_uid]
  if missing:
    raise ValueError(f"The difficulty samples lack {len(missing)} questions (e.g. {missing[0]}).")
  run = [by_uid[u] for u in uids]
  if {r["name"] for r in run} != {BEST_OF_N} or len({len(r["answers"]) for r in run}) != 1:
    raise ValueError("Difficulty needs one best-of-N run with the same S samples per question.")
  correct = np.array([r["correct"] for r in run], bool)
  scores, mask = report.score_table(run)
  final = select.aggregate(scores, mask, "last")
  cost = np.array([r["flops"]["total_flops"] for r in run])
  return {"oracle": difficulty.oracle_bins(correct, num_bins, cost),
          "predicted": difficulty.predicted_bins(final, num_bins, cost)}


# ------------------------------------------------------------ compute-optimal curves


def compute_optimal(table: ResultTable, bins: np.ndarray, num_bins: int, budgets: Sequence[int],
                    repeats: int, seed: int = 0) -> list[dict]:
  """Per budget: the per-bin best option, scored by two-fold cross-validation.

  Returns:
    one dict per budget with the held-out "accuracy" (mean over repeats), its 2.5-97.5
    percentile interval "low"/"high", "per_question" [P] held-out accuracy averaged
    over repeats, and "choice": the option per bin fitted on all questions (what a
    user would deploy).
  """
  out = []
  everyone = np.ones(len(table.uids), bool)
  for budget in budgets:
    def fit_fn(fit, budget=budget):
      return allocation.per_bin_choice(table, bins, budget, fit, num_bins)

    acc, _ = allocation.cross_validated_outcomes(table, bins, fit_fn, repeats, seed)
    per_repeat = acc.mean(axis=1)
    choice = fit_fn(everyone)
    out.append({"budget": int(budget), "accuracy": float(per_repeat.mean()),
                "low": float(np.percentile(per_repeat, 2.5)),
                "high": float(np.percentile(per_repeat, 97.5)),
                "per_question": acc.mean(axis=0).tolist(),
                "choice": [None if c < 0 else _option_dict(table.options[c]) for c in choice]})
  return out


def _option_dict(option: Option) -> dict:
  return {"strategy": option.strategy, "budget": option.budget}


def efficiency_ratios(points: Sequence[dict], reference: tuple[Sequence[int], Sequence[float]],
                      extra_budget: float = 0.0) -> dict[int, dict]:
  """How many times more budget best-of-N needs to match each compute-optimal point.

  Args:
    points: `compute_optimal`'s output.
    reference: (budgets, accuracy) of best-of-N weighted.
    extra_budget: per-question budget charged on top (difficulty estimation).

  Returns:
    {budget: {"ratio", "bound", "low", "low_bound", "high", "high_bound"}}: the ratio
    at the point's accuracy and at its interval's ends. A bound is "exact", "at least"
    (best-of-N never reaches that accuracy: its largest budget over the spent one) or
    "at most" (best-of-N's smallest budget already does).
  """
  budgets, accuracy = reference
  out = {}
  for p in points:
    spent = p["budget"] + extra_budget
    entry = {}
    for name, key in (("ratio", "accuracy"), ("low", "low"), ("high", "high")):
      value = allocation.efficiency_ratio(spent, p[key], budgets, accuracy)
      bound = "at least" if value < 0 else (
          "at most" if p[key] <= accuracy[int(np.argmin(budgets))] else "exact")
      entry[name] = abs(value)
      entry["bound" if name == "ratio" else f"{name}_bound"] = bound
    out[p["budget"]] = entry
  return out


def ratio_text(value: float, bound: str) -> str:
  """"2.00x", ">2.00x" (at least) or "<=2.00x" (at most)."""
  return {"exact": "", "at least": ">", "at most": "<="}[bound] + f"{value:.2f}x"


# ---------------------------------------------------------------- budget allocation


def allocate(table: ResultTable, bins: np.ndarray, num_bins: int, mean_budget: float,
             fit: np.ndarray) -> np.ndarray:
  """One option per bin maximising accuracy on `fit` under a mean cost per question.

  Returns [K] option indices (-1 for a bin without fitted questions, which then
  spends nothing). Costs are the table's (samples or FLOPs), averaged per bin.
  """
  present = [k for k in range(num_bins) if (fit & (bins == k)).any()]
  values = np.array([table.accuracy[:, fit & (bins == k)].mean(axis=1) for k in present])
  costs = np.array([table.cost[:, fit & (bins == k)].mean(axis=1) for k in present])
  weights = np.array([(fit & (bins == k)).sum() for k in present], np.float64)
  chosen, _, _ = allocation.allocate_budget(values, costs, weights / weights.sum(), mean_budget)
  choice = np.full(num_bins, -1)
  choice[present] = chosen
  return choice


def allocation_curve(table: ResultTable, bins: np.ndarray, num_bins: int,
                     mean_budgets: Sequence[float], repeats: int, seed: int = 0) -> list[dict]:
  """The budget-allocating solver, cross-validated, at each mean budget.

  Returns one dict per mean budget: held-out "accuracy", "low", "high", the held-out
  mean "cost" actually spent, and "choice" fitted on all questions.
  """
  out = []
  everyone = np.ones(len(table.uids), bool)
  for budget in mean_budgets:
    def fit_fn(fit, budget=budget):
      return allocate(table, bins, num_bins, budget, fit)

    try:
      acc, cost = allocation.cross_validated_outcomes(table, bins, fit_fn, repeats, seed)
    except ValueError:  # the cheapest options exceed this mean budget
      continue
    per_repeat = acc.mean(axis=1)
    out.append({"mean_budget": float(budget), "accuracy": float(per_repeat.mean()),
                "low": float(np.percentile(per_repeat, 2.5)),
                "high": float(np.percentile(per_repeat, 97.5)), "cost": float(cost.mean()),
                "choice": [None if c < 0 else _option_dict(table.options[c])
                           for c in fit_fn(everyone)]})
  return out


# --------------------------------------------------------------- FLOPs-matched exchange


def exchange(table: ResultTable, optimal: Sequence[dict], bins: np.ndarray, num_bins: int,
             large_correct: np.ndarray, params_ratio: float, ratios: Sequence[float],
             pretraining_tokens: float) -> list[dict]:
  """Small policy + test-time compute against a larger policy decoding greedily.

  At R = D_inference / D_pretrain the small model may spend
  X = M + 3 (M - 1) / R times the larger model's inference compute (the paper's
  section 7 with pretraining 6ND and inference 2ND). A greedy answer is one sample,
  so the small model gets a generation budget of X: the largest budget run that
  does not exceed X (the smallest one, noted, when X is below every budget).

  Args:
    table: the samples table.
    optimal: `compute_optimal` points (oracle bins) for every run budget.
    bins: [P] oracle bins.
    num_bins: K.
    large_correct: [P] bool, the larger policy's greedy answers.
    params_ratio: M, parameters of the larger policy over the small one's.
    ratios: the R values.
    pretraining_tokens: D_pretrain, for the implied inference tokens.

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
    x = compute.exchange_factor(params_ratio, r)
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


# --------------------------------------------------------------------------- findings


def per_bin_accuracy(table: ResultTable, bins: np.ndarray, num_bins: int) -> dict:
  """{strategy: {budget: [K] mean accuracy per bin}}."""
  out: dict = collections.defaultdict(dict)
  for i, o in enumerate(table.options):
    out[o.strategy][o.budget] = [float(table.accuracy[i, bins == k].mean())
                                 for k in range(num_bins)]
  return dict(out)


def findings(curves: dict, bins_table: dict, ratios: dict,
             exchange_rows: Sequence[dict], beam: str = "beam_m4",
             lookahead_prefix: str = "lookahead") -> list[dict]:
  """The paper's findings, each checked on these results: {"claim", "holds", "evidence"}.

  Args:
    curves: {strategy: {"budgets", "accuracy", ...}}.
    bins_table: `per_bin_accuracy` under oracle bins.
    ratios: {bin kind: `efficiency_ratios`}.
    exchange_rows: `exchange`'s output.
    beam, lookahead_prefix: which strategies stand for beam search and lookahead.

  `holds` is None when the results lack what the check needs.
  """
  out = []
  points = {s: dict(zip(c["budgets"], c["accuracy"])) for s, c in curves.items()}
  bon = points.get(BEST_OF_N, {})

  def add(claim, holds, evidence):
    out.append({"claim": claim, "holds": holds, "evidence": evidence})

  oracle = ratios.get("oracle", {})
  best = max(oracle.items(), key=lambda kv: (kv[1]["bound"] != "at most", kv[1]["ratio"]),
             default=None)
  add("Compute-optimal (oracle bins) matches best-of-N weighted with up to 4x less compute.",
      None if best is None else best[1]["ratio"] >= 4 and best[1]["bound"] != "at most",
      "no ratios" if best is None else
      f"largest ratio {ratio_text(best[1]['ratio'], best[1]['bound'])} at budget {best[0]}")
  pred = ratios.get("predicted", {})
  common = sorted(set(oracle) & set(pred))
  if common:
    top = common[-1]
    add("With predicted bins part of the gain fades at high budgets.",
        pred[top]["ratio"] < oracle[top]["ratio"],
        f"at budget {top}: predicted {ratio_text(pred[top]['ratio'], pred[top]['bound'])}, "
        f"oracle {ratio_text(oracle[top]['ratio'], oracle[top]['bound'])}")
  if beam in curves and bon:
    beam_acc = points[beam]
    shared = sorted(set(beam_acc) & set(bon))
    if shared:
      low, high = shared[0], shared[-1]
      add(f"Beam search ({beam}) beats best-of-N at low budgets.",
          beam_acc[low] > bon[low], f"budget {low}: beam {beam_acc[low]:.3f}, "
          f"best-of-N {bon[low]:.3f}")
      easy_beam = bins_table.get(beam, {}).get(high, [np.nan])[0]
      easy_bon = bins_table.get(BEST_OF_N, {}).get(high, [np.nan])[0]
      add(f"At high budgets beam search ({beam}) falls behind best-of-N on the easiest bin.",
          bool(easy_beam < easy_bon), f"budget {high}, bin 1: beam {easy_beam:.3f}, "
          f"best-of-N {easy_bon:.3f}")
  looks = [s for s in curves if s.startswith(lookahead_prefix)]
  if looks and bon:
    worse, total = 0, 0
    for s in looks:
      for b, a in points[s].items():
        if b in bon:
          total += 1
          worse += a < bon[b]
    add("Lookahead underperforms best-of-N at equal generation budget.",
        None if not total else worse > total / 2, f"{worse} of {total} (strategy, budget) points "
        "below best-of-N")
  if exchange_rows:
    small_r = min(exchange_rows, key=lambda e: e["R"])
    large_r = max(exchange_rows, key=lambda e: e["R"])
    easy = small_r["bins"][0]
    hard = large_r["bins"][-1]
    add("At R << 1 test-time compute beats the larger model on easy questions.",
        easy["small"] > easy["large"], f"R={small_r['R']}, bin 1: small {easy['small']:.3f}, "
        f"large {easy['large']:.3f}")
    add("On the hardest questions at large R, pretraining (the larger model) wins.",
        hard["large"] > hard["small"], f"R={large_r['R']}, last bin: small {hard['small']:.3f}, "
        f"large {hard['large']:.3f}")
  return out


# ---------------------------------------------------------------------- the analysis


def analyse(sweep_records: Sequence[dict], difficulty_records: Sequence[dict],
            large_records: Sequence[dict] | None, budgets: Sequence[int],
            small_policy: compute.ModelCost, prm: compute.ModelCost,
            params_ratio: float | None, pretraining_tokens: float | None,
            exchange_ratios: Sequence[float], num_bins: int = 5,
            selection: str = "weighted_last", repeats: int = 20, num_draws: int = 16,
            seed: int = 0) -> dict:
  """The whole study's numbers (see the module docstring).

  Args:
    sweep_records: the strategy x budget sweep.
    difficulty_records: one best-of-N run of S samples per question (another seed).
    large_records: the larger policy's greedy run (budget 1, one per question); None:
      no larger policy, so no exchange (`"exchange"` is None).
    budgets: the sweep's run budgets (N).
    small_policy, prm: model costs (best-of-N FLOPs at smaller budgets).
    params_ratio: M, the larger policy's parameters over the small one's.
    pretraining_tokens: D_pretrain of the shipped policies.
    exchange_ratios: the R values of the exchange.
    num_bins: K difficulty bins.
    selection: the selection rule for every strategy.
    repeats: cross-validation splits.
    num_draws: best-of-N subsets averaged.
    seed: splits' and subsets' seed.
  """
  uids = sorted({r["uid"] for r in difficulty_records})
  if len(uids) < 2 * num_bins:
    raise ValueError(f"{len(uids)} questions are too few for {num_bins} bins and two folds; "
                     f"use at least {2 * num_bins}.")
  samples_table, flops_table = outcome_tables(sweep_records, uids, budgets, small_policy, prm,
                                              selection, num_draws)
  samples_table.require([BEST_OF_N])
  run_budgets = sorted(budgets)
  curves = {}
  for s in samples_table.strategies():
    budgets_s, accuracy, _ = curve(samples_table, s)
    curves[s] = {"budgets": budgets_s, "accuracy": accuracy,
                 "mean_flops": curve(flops_table, s)[2]}
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
    per_bin[kind] = per_bin_accuracy(samples_table, b.bins, num_bins)
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
    exchange_rows = exchange(samples_table, optimal["oracle"], bins["oracle"].bins, num_bins,
                             large_correct, params_ratio, exchange_ratios, pretraining_tokens)
    exchange_result = {"params_ratio": params_ratio, "pretraining_tokens": pretraining_tokens,
                       "large_greedy_accuracy": float(large_correct.mean()),
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
      "findings": findings(curves, per_bin["oracle"], ratios, exchange_rows),
  }
