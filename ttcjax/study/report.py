"""`report.md`: the study's tables and figures as Markdown, from `study.analyse`'s dict."""

from __future__ import annotations

from ttcjax.study import plots
from ttcjax.study.optimal import ratio_text


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines + [""]


def _choice(choice: list) -> str:
  return ", ".join("-" if c is None else f"{c['strategy']}@{c['budget']}" for c in choice)


def _variant(summary: dict) -> str:
  """'; quick size' for a run of a config variant, nothing for the default size."""
  variant = summary.get("variant", "default")
  return "" if variant == "default" else f"; {variant} size"


def _wall_time(summary: dict) -> str:
  """The study's wall time over all its invocations (a resumed study ran several)."""
  text = f"wall time {summary['wall_s']:.0f} s"
  invocations = summary.get("invocations", 1)
  if invocations <= 1:
    return text + f" (searches {summary['search_s']:.0f} s)"
  return (text + f" over {invocations} invocations ({summary['killed_invocations']} killed, "
          f"{summary['lost_to_kills_s']:.0f} s of work lost to kills; the last one "
          f"{summary['wall_s_this_invocation']:.0f} s, of which searches "
          f"{summary['search_s']:.0f} s)")


def render(results: dict, summary: dict) -> str:
  """The report; every figure in it is read from `results` (study.json) or `summary`."""
  budgets = results["budgets"]
  k = results["num_bins"]
  out = [
      f"# Compute-optimal test-time search: {summary.get('task_title', 'the arithmetic testbed')}",
      "",
      f"{summary['date']}; {summary['machine']}; {_wall_time(summary)}{_variant(summary)}.",
      "",
      f"{results['questions']} test questions; generation budgets {budgets}; every strategy's "
      f"answer picked by `{results['selection']}`; {k} difficulty bins from "
      f"{results['difficulty_samples']} separate samples per question (estimating them costs "
      f"{results['difficulty_estimate_cost']['flops']:.3g} FLOPs per question). Held-out "
      "figures are two-fold cross-validated over random splits (mean, 2.5-97.5 percentile "
      "interval). Sources: "
      + ", ".join(f"`{stage}/results.jsonl`" for stage in summary.get(
          "search_units", ("sweep", "difficulty", "large_greedy")))
      + " (one line per question, strategy, budget, seed), analysed into `study.json`.", ""]
  skipped = summary.get("skipped_problems") or []
  if skipped:
    out += [f"{len(skipped)} problem(s) were skipped and are not among the questions "
            "(listed in `skipped.json`): "
            + "; ".join(f"{s['uid']}: {s['reason']}" for s in skipped[:5])
            + ("; ..." if len(skipped) > 5 else ""), ""]
  out += [
      "## Accuracy against generation budget", "",
      "Mean accuracy over all questions, FLOPs per question in brackets (policy and PRM, "
      "live context), and the PRM's share of them.", ""]
  rows = []
  for strategy, c in sorted(results["curves"].items()):
    cells = dict(zip(c["budgets"], zip(c["accuracy"], c["mean_flops"],
                                       c["mean_verifier_flops"])))

    def cell(b):
      acc, flops, verifier = cells[b]
      return f"{acc:.3f} ({flops:.2g}, PRM {verifier / flops:.0%})"

    rows.append([strategy] + [cell(b) if b in cells else "-" for b in budgets])
  out += _table(["strategy"] + [str(b) for b in budgets], rows)
  out += ["![accuracy vs budget](accuracy_vs_budget.png)", "",
          "## Per difficulty bin (oracle bins; 1 = easiest)", ""]
  per_bin = results["per_bin"]["oracle"]
  for budget in plots.shown_budgets(budgets):
    out += [f"Budget {budget}:", ""]
    out += _table(["strategy"] + [f"bin {i + 1}" for i in range(k)],
                  [[s] + [f"{a:.3f}" for a in per_bin[s][budget]]
                   for s in sorted(per_bin) if budget in per_bin[s]])
  out += ["![per-bin accuracy](bins_oracle.png)", "",
          "## Compute-optimal against best-of-N weighted", "",
          "Efficiency ratio: the budget best-of-N weighted needs to reach the compute-optimal "
          "accuracy (interpolated in log2 budget), over the compute-optimal budget; '>' marks "
          "a lower bound (best-of-N never gets there), '<=' an upper bound (best-of-N's "
          "smallest budget already does). 'With estimation' adds the difficulty "
          "samples to the compute-optimal budget.", ""]
  bon = dict(zip(results["curves"]["best_of_n"]["budgets"],
                 results["curves"]["best_of_n"]["accuracy"]))
  for kind, points in results["compute_optimal"].items():
    ratios = results["efficiency_ratio"][kind]
    charged = results["efficiency_ratio_with_estimation"][kind]
    rows = []
    for p in points:
      r, c = ratios[p["budget"]], charged[p["budget"]]
      rows.append([p["budget"], f"{p['accuracy']:.3f} [{p['low']:.3f}, {p['high']:.3f}]",
                   f"{bon.get(p['budget'], float('nan')):.3f}",
                   f"{ratio_text(r['ratio'], r['bound'])} [{ratio_text(r['low'], r['low_bound'])}"
                   f", {ratio_text(r['high'], r['high_bound'])}]",
                   ratio_text(c["ratio"], c["bound"]), _choice(p["choice"])])
    out += [f"**{kind.capitalize()} bins.**", ""]
    out += _table(["budget", "compute-optimal (held out)", "best-of-N weighted",
                   "efficiency ratio [interval]", "with estimation", "choice per bin (1..K)"],
                  rows)
  out += ["![compute-optimal](compute_optimal.png)", "",
          "## Allocating the budget across bins", "",
          "Under a mean budget per question, one (strategy, budget) per bin chosen exactly "
          "(multiple-choice knapsack over the bins' Pareto fronts), against every question "
          "getting that budget with the per-bin best strategy; both held out.", ""]
  for kind, alloc in results["allocation"].items():
    fixed = {p["budget"]: p for p in results["compute_optimal"][kind]}
    rows = [[int(a["mean_budget"]), f"{a['accuracy']:.3f} [{a['low']:.3f}, {a['high']:.3f}]",
             f"{a['cost']:.1f}", f"{fixed[int(a['mean_budget'])]['accuracy']:.3f}",
             _choice(a["choice"])] for a in alloc]
    out += [f"**{kind.capitalize()} bins.**", ""]
    out += _table(["mean budget", "allocating solver", "spent (held out)",
                   "fixed budget, compute-optimal", "choice per bin"], rows)
  out += _exchange_section(results, k)
  out += _revisions_section(results, k)
  out += ["## The paper's findings in this study", ""]
  out += _table(["finding", "holds here", "evidence"],
                [[f["claim"], {True: "yes", False: "no", None: "n/a"}[f["holds"]], f["evidence"]]
                 for f in results["findings"]])
  return "\n".join(out)


def _int_keys(table: dict) -> dict:
  """A budget- or length-keyed dict with int keys (study.json's are strings)."""
  return {int(k): v for k, v in table.items()}


def _ratio_cells(ratios: dict, point: dict) -> str:
  r = _int_keys(ratios)[int(point["budget"])]
  return (f"{ratio_text(r['ratio'], r['bound'])} [{ratio_text(r['low'], r['low_bound'])}, "
          f"{ratio_text(r['high'], r['high_bound'])}]")


def _revisions_section(results: dict, k: int) -> list[str]:
  rev = results.get("revisions")
  if not rev:
    return []
  by_ratio = {b: _int_keys(row) for b, row in _int_keys(rev["accuracy_by_ratio"]).items()}
  budgets = sorted(by_ratio)
  lengths = sorted(rev["chain_lengths"].values())
  out = ["## Sequential revisions (section 6)", "",
         "N / L chains of L attempts per question (the ratio L : N / L; L = 1 fully parallel, "
         "L = N fully sequential), each attempt conditioned on its chain's last 4; answers "
         "picked by hierarchical best-of-N weighted (within each chain, then across chains). "
         "Mean accuracy:", ""]
  rows = []
  for b in budgets:
    row = by_ratio[b]
    rows.append([b] + [f"{row[l]:.3f}" if l in row else "-" for l in lengths])
  out += _table(["budget"] + [f"L = {l}" for l in lengths], rows)
  out += ["![revisions](revisions.png)", "",
          "Best chain length per bin (oracle bins, on all questions; 1 = easiest):", ""]
  best = _int_keys(rev["best_ratio_per_bin"])
  out += _table(["budget"] + [f"bin {i + 1}" for i in range(k)],
                [[b] + [f"L = {c['chain_length']} ({c['accuracy']:.2f})" for c in best[b]]
                 for b in sorted(best)])
  t = rev["transitions"]
  rate = lambda r: "n/a" if r is None else f"{r:.1%}"
  if t["right_attempts"] or t["wrong_attempts"]:
    out += [f"Between consecutive attempts of a chain, {rate(t['right_to_wrong'])} of "
            f"{t['right_attempts']} right attempts were followed by a wrong one, and "
            f"{rate(t['wrong_to_right'])} of {t['wrong_attempts']} wrong ones by a right one.",
            ""]
  parallel = dict(zip(results["curves"][rev["parallel"]]["budgets"],
                      results["curves"][rev["parallel"]]["accuracy"]))
  bon = dict(zip(results["curves"]["best_of_n"]["budgets"],
                 results["curves"]["best_of_n"]["accuracy"]))
  out += ["Compute-optimal revisions (the chain length per bin and budget, held out) against "
          f"parallel sampling from the revision model (`{rev['parallel']}`), and the combined "
          "solver (search strategies and revision ratios per bin and budget) against the "
          "study's best-of-N weighted:", ""]
  for kind, points in rev["compute_optimal"].items():
    combined = {p["budget"]: p for p in rev["combined"][kind]}
    rows = []
    for p in points:
      c = combined[p["budget"]]
      rows.append([p["budget"], f"{p['accuracy']:.3f} [{p['low']:.3f}, {p['high']:.3f}]",
                   f"{parallel.get(p['budget'], float('nan')):.3f}",
                   _ratio_cells(rev["efficiency_ratio"][kind], p),
                   f"{c['accuracy']:.3f} [{c['low']:.3f}, {c['high']:.3f}]",
                   f"{bon.get(p['budget'], float('nan')):.3f}",
                   _ratio_cells(rev["combined_efficiency_ratio"][kind], c), _choice(c["choice"])])
    out += [f"**{kind.capitalize()} bins.**", ""]
    out += _table(["budget", "revisions, compute-optimal", "parallel", "ratio [interval]",
                   "combined", "best-of-N", "ratio [interval]", "combined choice per bin"], rows)
  if rev.get("exchange"):
    out += ["FLOPs-matched exchange with compute-optimal revisions as the test-time side (the "
            "revision model charged its revision fine-tuning tokens on top of the policy's):",
            ""]
    out += _table(["R", "X", "budget used"] + [f"bin {i + 1} small / large" for i in range(k)]
                  + ["all"],
                  [[f"{row['R']:g}", f"{row['X']:.1f}", row["budget_used"]]
                   + [f"{b['small']:.2f} / {b['large']:.2f}" for b in row["bins"]]
                   + [f"{row['all']['small']:.3f} / {row['all']['large']:.3f}"]
                   for row in rev["exchange"]])
  return out


def _exchange_section(results: dict, k: int) -> list[str]:
  ex = results["exchange"]
  out = ["## Test-time compute against a larger model (FLOPs-matched)", ""]
  if ex is None:
    return out + ["No larger policy was configured (`large_policy_dir`), so there is no "
                  "exchange.", ""]
  models = results.get("models", {})
  small_d = ex["pretraining_tokens"]
  large_d = ex.get("large_pretraining_tokens", small_d)
  trained = (f"both are taken as trained on D_pretrain = {small_d:.3g} tokens. At "
             "R = D_inference / D_pretrain the small policy may spend X = M + 3 (M - 1) / R "
             if large_d == small_d else
             f"they were trained on {small_d:.3g} and {large_d:.3g} tokens (t = "
             f"{large_d / small_d:.2f}), each charged its own. At R = D_inference / "
             "D_pretrain (the small policy's) it may spend X = M + 3 (M t - 1) / R ")
  out += [f"The larger policy has {ex['params_ratio']:.2f}x the parameters "
          f"({models.get('large_params', '?')} vs {models.get('small_params', '?')}); "
          + trained +
          "greedy-answer equivalents; it gets the largest budget run that does not exceed X "
          f"(compute-optimal, oracle bins, held out). The larger policy decodes greedily "
          f"(accuracy {ex['large_greedy_accuracy']:.3f}).", ""]
  rows = []
  for row in ex["rows"]:
    cells = [f"{b['small']:.2f} / {b['large']:.2f}" for b in row["bins"]]
    rows.append([f"{row['R']:g}", f"{row['X']:.1f}",
                 f"{row['budget_used']}" + (f" ({row['budget_note']})" if row["budget_note"]
                                            else "")] + cells
                + [f"{row['all']['small']:.3f} / {row['all']['large']:.3f}"])
  out += _table(["R", "X", "budget used"] + [f"bin {i + 1} small / large" for i in range(k)]
                + ["all"], rows)
  counted = [row for row in ex["rows"] if "counting_verifier" in row]
  if counted:
    out += ["That unit, like the paper's formula, counts the policy's FLOPs only. Counting "
            "the verifier's too, the small policy may spend X times one sample's policy FLOPs "
            f"({ex['sample_policy_flops']:.3g} per question) on policy and verifier together, "
            "and gets the largest budget whose compute-optimal choice spent no more:", ""]
    rows = []
    for row in counted:
      v = row["counting_verifier"]
      rows.append([f"{row['R']:g}", f"{v['flops_allowed']:.3g}", f"{v['flops_spent']:.3g}",
                   f"{v['budget_used']}" + (f" ({v['budget_note']})" if v["budget_note"]
                                            else "")]
                  + [f"{b['small']:.2f} / {b['large']:.2f}" for b in v["bins"]]
                  + [f"{v['all']['small']:.3f} / {v['all']['large']:.3f}"])
    out += _table(["R", "FLOPs allowed", "FLOPs spent", "budget used"]
                  + [f"bin {i + 1} small / large" for i in range(k)] + ["all"], rows)
  return out + ["![exchange](exchange.png)", ""]
