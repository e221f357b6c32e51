"""The study's figures, styled after the paper's: matplotlib PNGs from `study.analyse`.

Budgets are the generation budget on a log2 axis; bins run from 1 (easiest) to Y
(hardest), as the paper numbers them. Legends sit below their panels (they never
cover a curve), shaded intervals are named in them, and a panel that shows the same
numbers as another says so in its title.
"""

from __future__ import annotations

import os

import numpy as np
# Figures without pyplot: files only, and importing ttcjax never changes the backend
# a notebook plots with.
from matplotlib.figure import Figure

from ttcjax.study.optimal import ratio_text

PAPER_BUDGETS = (4, 16, 64, 256)
LEGEND_SIZE = 9
INTERVAL = "95% interval over CV splits"  # of held-out accuracy over cross-validation splits


def _legend_below(ax, ncol: int = 2) -> None:
  ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol,
            frameon=False)


def _save(fig, path: str) -> None:
  # bbox "tight" takes in the legends below the axes.
  fig.savefig(path, dpi=120, bbox_inches="tight")


def _same_as(value, earlier: dict) -> str:
  """' (same as NAME)' when `value` equals an earlier panel's, else ''."""
  for name, other in earlier.items():
    if other == value:
      return f" (same as {name})"
  return ""


def _log2_axis(ax, budgets):
  ax.set_xscale("log", base=2)
  ax.set_xticks(budgets)
  ax.set_xticklabels([str(b) for b in budgets])
  ax.set_xlabel("generation budget")
  ax.grid(alpha=0.3)


def accuracy_vs_budget(results: dict, path: str) -> None:
  """Every strategy's accuracy against its generation budget."""
  fig = Figure(figsize=(6.5, 4.2))
  ax = fig.subplots()
  for strategy, c in sorted(results["curves"].items()):
    style = "--" if strategy == "majority" else "-"
    ax.plot(c["budgets"], c["accuracy"], style, marker="o", ms=3, label=strategy)
  _log2_axis(ax, results["budgets"])
  ax.set_ylabel("accuracy")
  ax.set_title(f"Search strategies ({results['selection']} selection, "
               f"{results['questions']} questions)")
  _legend_below(ax, ncol=3)
  _save(fig, path)


def shown_budgets(budgets) -> list[int]:
  """The paper's 4/16/64/256 where run, else the largest four budgets run."""
  shown = [b for b in PAPER_BUDGETS if b in budgets]
  return shown or sorted(budgets)[-4:]


def bins_bars(results: dict, path: str, kind: str = "oracle") -> None:
  """Per difficulty bin, each strategy's accuracy at the paper's budgets."""
  per_bin = results["per_bin"][kind]
  budgets = shown_budgets(results["budgets"])
  k = results["num_bins"]
  fig = Figure(figsize=(3.6 * len(budgets), 3.6))
  axes = fig.subplots(1, len(budgets), sharey=True, squeeze=False)
  shown = {}
  for ax, budget in zip(axes[0], budgets):
    strategies = sorted(s for s in per_bin if budget in per_bin[s])
    panel = {s: list(per_bin[s][budget]) for s in strategies}
    width = 0.8 / max(1, len(strategies))
    for i, s in enumerate(strategies):
      ax.bar(np.arange(k) + i * width - 0.4 + width / 2, per_bin[s][budget], width, label=s)
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels([str(b + 1) for b in range(k)])
    ax.set_xlabel(f"{kind} difficulty bin")
    ax.set_title(f"budget {budget}{_same_as(panel, shown)}")
    shown[f"budget {budget}"] = panel
    ax.grid(axis="y", alpha=0.3)
  axes[0][0].set_ylabel("accuracy")
  handles, labels = axes[0][-1].get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=LEGEND_SIZE, loc="upper center", frameon=False,
             bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 5))
  fig.tight_layout()
  _save(fig, path)


def compute_optimal_curves(results: dict, path: str) -> None:
  """Compute-optimal (oracle and predicted bins, held-out) against best-of-N weighted,
  with the efficiency ratio written at each budget."""
  kinds = list(results["compute_optimal"])
  fig = Figure(figsize=(6 * len(kinds), 4.2))
  axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)
  curves = results["curves"]
  shown = {}
  for ax, kind in zip(axes[0], kinds):
    for strategy, style in (("best_of_n", "-"), ("majority", "--"), ("beam_m4", ":")):
      if strategy in curves:
        ax.plot(curves[strategy]["budgets"], curves[strategy]["accuracy"], style, marker="o",
                ms=3, label=f"{strategy} (all questions)")
    points = results["compute_optimal"][kind]
    b = [p["budget"] for p in points]
    ax.plot(b, [p["accuracy"] for p in points], "-", color="black", marker="s", ms=4,
            label="compute-optimal (held out)")
    ax.fill_between(b, [p["low"] for p in points], [p["high"] for p in points], color="black",
                    alpha=0.12, label=f"compute-optimal, {INTERVAL}")
    alloc = results["allocation"][kind]
    if alloc:
      ax.plot([a["cost"] for a in alloc], [a["accuracy"] for a in alloc], "-", color="tab:red",
              marker="^", ms=4, label="budget-allocating solver (held out, mean budget)")
    # The efficiency ratios in a row along the top edge, clear of the curves.
    for p in points:
      r = results["efficiency_ratio"][kind][p["budget"]]
      ax.annotate(ratio_text(r["ratio"], r["bound"]), (p["budget"], 1.0),
                  xycoords=("data", "axes fraction"), textcoords="offset points",
                  xytext=(0, 3), ha="center", va="bottom", fontsize=8)
    _log2_axis(ax, results["budgets"])
    panel = [(p["budget"], p["accuracy"]) for p in points]
    ax.set_title(f"{kind} bins: compute-optimal vs best-of-N weighted{_same_as(panel, shown)}\n"
                 "(efficiency ratio above each budget)", pad=16, fontsize=10)
    shown[f"{kind} bins"] = panel
    _legend_below(ax)
  axes[0][0].set_ylabel("accuracy")
  fig.tight_layout()
  _save(fig, path)


def exchange_bars(results: dict, path: str) -> None:
  """Per R and bin: the small policy with its FLOPs-matched test-time compute against the
  larger policy decoding greedily."""
  rows = results["exchange"]["rows"]
  fig = Figure(figsize=(4 * len(rows), 3.6))
  axes = fig.subplots(1, len(rows), sharey=True, squeeze=False)
  shown = {}
  for ax, row in zip(axes[0], rows):
    k = len(row["bins"])
    x = np.arange(k)
    ax.bar(x - 0.2, [b["small"] for b in row["bins"]], 0.4,
           label=f"small + compute-optimal (budget {row['budget_used']})")
    ax.bar(x + 0.2, [b["large"] for b in row["bins"]], 0.4, label="larger model, greedy")
    ax.set_xticks(x)
    ax.set_xticklabels([str(i + 1) for i in range(k)])
    ax.set_xlabel("oracle difficulty bin")
    panel = (row["budget_used"], [(b["small"], b["large"]) for b in row["bins"]])
    ax.set_title(f"R = {row['R']:g} (X = {row['X']:.1f}){_same_as(panel, shown)}")
    shown[f"R = {row['R']:g}"] = panel
    ax.grid(axis="y", alpha=0.3)
    _legend_below(ax, ncol=1)
  axes[0][0].set_ylabel("accuracy")
  fig.tight_layout()
  _save(fig, path)


def revisions(results: dict, path: str) -> None:
  """Left: accuracy against budget per chain length L, with the fully sequential curve
  (L = N); right: compute-optimal revisions (oracle and predicted bins, held out) against
  parallel sampling (the paper's Figures 6 and 8)."""
  rev = results["revisions"]
  table = {int(b): {int(l): a for l, a in row.items()}
           for b, row in rev["accuracy_by_ratio"].items()}
  budgets = sorted(table)
  fig = Figure(figsize=(10, 4))
  left, right = fig.subplots(1, 2)
  for length in sorted({l for row in table.values() for l in row}):
    points = [(b, table[b][length]) for b in budgets if length in table[b]]
    left.plot(*zip(*points), marker="o", ms=3, label=f"L = {length}")
  sequential = [(b, table[b][b]) for b in budgets if b in table[b]]
  left.plot(*zip(*sequential), "k--", lw=1.5, label="fully sequential (L = N)")
  _log2_axis(left, budgets)
  left.set_ylabel("accuracy")
  left.set_title("Revisions: N / L chains of L attempts")
  _legend_below(left, ncol=3)
  parallel = results["curves"][rev["parallel"]]
  right.plot(parallel["budgets"], parallel["accuracy"], "k-", marker="o", ms=3,
             label="parallel (L = 1)")
  shown = {}
  for kind, points in rev["compute_optimal"].items():
    b = [p["budget"] for p in points]
    panel = [(p["budget"], p["accuracy"]) for p in points]
    right.plot(b, [p["accuracy"] for p in points], marker="s", ms=3,
               label=f"compute-optimal revisions ({kind}){_same_as(panel, shown)}")
    shown[f"{kind}"] = panel
    right.fill_between(b, [p["low"] for p in points], [p["high"] for p in points], alpha=0.15,
                       label=f"{kind}: {INTERVAL}")
  _log2_axis(right, budgets)
  right.set_title("Compute-optimal revisions (held out)")
  _legend_below(right, ncol=1)
  fig.tight_layout()
  _save(fig, path)


FIGURES = (
    ("accuracy_vs_budget.png", accuracy_vs_budget),
    ("bins_oracle.png", lambda r, p: bins_bars(r, p, "oracle")),
    ("compute_optimal.png", compute_optimal_curves),
    ("exchange.png", exchange_bars),
    ("revisions.png", revisions),
)


def study_figures(results: dict, workdir: str) -> list[str]:
  """Writes every figure into `workdir` (the exchange's only when the study has one);
  returns their file names."""
  drawn = []
  for name, draw in FIGURES:
    if name == "exchange.png" and results["exchange"] is None:
      continue
    if name == "revisions.png" and not results.get("revisions"):
      continue
    draw(results, os.path.join(workdir, name))
    drawn.append(name)
  return drawn
