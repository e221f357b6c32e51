"""The paper's section 6 from a study's tables: sequential revisions at every
sequential:parallel ratio, per-bin best ratios, compute-optimal revisions and the
combined solver.

A revision setting is one chain length L (`ttcjax.search.revisions`); at budget N it
runs N / L chains of L attempts, the ratio L : N / L (L = 1 fully parallel, L = N fully
sequential). Decisions (see docs/design.md):
* Compute-optimal revisions choose, per difficulty bin and budget, among the revision
  settings only, held out as the search's solver is (`compute_optimal`); their
  reference is parallel sampling from the same revision model (L = 1, best-of-N
  weighted), as in the paper's Figure 8.
* The combined solver chooses among every option of the study, search strategies and
  revision ratios alike; its reference is the study's best-of-N (the base policy).
* Revisions select with hierarchical best-of-N weighted (`outcome_tables`).

Q questions, Y bins, O options (the glossary of `ttcjax.search.base`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ttcjax.search import get_strategy
from ttcjax.study.allocation import ResultTable
from ttcjax.study.optimal import compute_optimal, efficiency_ratios, ratio_text
from ttcjax.study.outcomes import BEST_OF_N, curve


def chain_lengths(records: Sequence[dict]) -> dict[str, int]:
  """{setting label: chain length L} of the records' revision settings."""
  out = {}
  for r in records:
    if get_strategy(r["name"]).revises:
      length = int(r["hyper"]["chain_length"])
      if out.setdefault(r["strategy"], length) != length:
        raise ValueError(f"Revision setting {r['strategy']!r} ran two chain lengths "
                         f"({out[r['strategy']]} and {length}); give each its own label.")
  if len(set(out.values())) != len(out):
    raise ValueError(f"Two revision settings share a chain length ({out}); the section-6 "
                     "tables are per chain length: keep one setting per length.")
  return out


def revision_transitions(records: Sequence[dict]) -> dict:
  """Right->wrong and wrong->right shares between consecutive attempts of a chain, over
  every revision record with chains of two or more attempts."""
  right = right_to_wrong = wrong = wrong_to_right = 0
  for r in records:
    if not get_strategy(r["name"]).revises or int(r["hyper"]["chain_length"]) < 2:
      continue
    correct = np.asarray(r["correct"], bool).reshape(-1, int(r["hyper"]["chain_length"]))
    before, after = correct[:, :-1], correct[:, 1:]
    right += int(before.sum())
    right_to_wrong += int((before & ~after).sum())
    wrong += int((~before).sum())
    wrong_to_right += int((~before & after).sum())
  return {"right_to_wrong": right_to_wrong / right if right else None,
          "wrong_to_right": wrong_to_right / wrong if wrong else None,
          "right_attempts": right, "wrong_attempts": wrong}


def ratio_table(table: ResultTable, lengths: Mapping[str, int]) -> dict[int, dict[int, float]]:
  """{budget N: {chain length L: mean accuracy}}: accuracy against budget per ratio."""
  out: dict = {}
  for i, o in enumerate(table.options):
    if o.strategy in lengths:
      out.setdefault(o.budget, {})[lengths[o.strategy]] = float(table.accuracy[i].mean())
  return {n: dict(sorted(row.items())) for n, row in sorted(out.items())}


def best_ratio_per_bin(table: ResultTable, bins: np.ndarray, num_bins: int,
                       lengths: Mapping[str, int]) -> dict[int, list[dict]]:
  """{budget: [Y] {"chain_length", "accuracy"}}: each bin's best chain length on all of
  its questions (descriptive, not held out; ties to the shorter chain)."""
  out: dict = {}
  for budget in sorted({o.budget for o in table.options if o.strategy in lengths}):
    rows = sorted((lengths[o.strategy], i) for i, o in enumerate(table.options)
                  if o.strategy in lengths and o.budget == budget)
    per_bin = []
    for k in range(num_bins):
      members = bins == k
      accuracy = [float(table.accuracy[i, members].mean()) if members.any() else np.nan
                  for _, i in rows]
      j = int(np.nanargmax(accuracy)) if members.any() else 0
      per_bin.append({"chain_length": rows[j][0], "accuracy": accuracy[j]})
    out[budget] = per_bin
  return out


def analyse_revisions(table: ResultTable, bins: Mapping[str, np.ndarray], num_bins: int,
                      budgets: Sequence[int], lengths: Mapping[str, int], repeats: int,
                      seed: int, records: Sequence[dict]) -> dict:
  """Section 6's numbers (the module docstring), or {} without revision settings.

  Args:
    table: the study's samples table, search strategies and revision settings.
    bins: {bin kind: [Q] bins}.
    lengths: `chain_lengths` of the records.
    records: the sweep's records (for the right->wrong rate).
  """
  if not lengths:
    return {}
  parallel = [label for label, length in lengths.items() if length == 1]
  if not parallel:
    raise ValueError("The revision settings lack chain_length 1 (fully parallel), the "
                     "reference of compute-optimal revisions; add it to the strategies.")
  revisions = table.only(list(lengths))
  reference = curve(table, parallel[0])[:2]
  base_reference = curve(table, BEST_OF_N)[:2]
  optimal, ratios, combined, combined_ratios = {}, {}, {}, {}
  for kind, kind_bins in bins.items():
    optimal[kind] = compute_optimal(revisions, kind_bins, num_bins, budgets, repeats, seed)
    ratios[kind] = efficiency_ratios(optimal[kind], reference)
    combined[kind] = compute_optimal(table, kind_bins, num_bins, budgets, repeats, seed)
    combined_ratios[kind] = efficiency_ratios(combined[kind], base_reference)
  per_bin = best_ratio_per_bin(table, bins["oracle"], num_bins, lengths)
  transitions = revision_transitions(records)
  return {
      "chain_lengths": dict(sorted(lengths.items(), key=lambda kv: kv[1])),
      "parallel": parallel[0],
      "accuracy_by_ratio": ratio_table(table, lengths),
      "best_ratio_per_bin": per_bin,
      "compute_optimal": optimal, "efficiency_ratio": ratios,
      "combined": combined, "combined_efficiency_ratio": combined_ratios,
      "transitions": transitions,
      "findings": revision_findings(per_bin, ratios, transitions, num_bins),
  }


def revision_findings(per_bin: Mapping[int, list[dict]], ratios: Mapping[str, dict],
                      transitions: Mapping, num_bins: int) -> list[dict]:
  """The paper's section-6 findings checked here: {"claim", "holds", "evidence"}
  (`holds` None where the numbers lack what a check needs)."""
  out = []

  def add(claim, holds, evidence):
    out.append({"claim": claim, "holds": holds, "evidence": evidence})

  top = max(per_bin) if per_bin else None
  if top is not None and top > 1:
    easy = per_bin[top][0]
    add("Easy questions prefer fully sequential revisions.", easy["chain_length"] == top,
        f"budget {top}, bin 1: best chain length {easy['chain_length']} of {top} "
        f"(accuracy {easy['accuracy']:.3f})")
    # The second-hardest bin (the hardest where anything helps, in the paper), or the
    # harder one of two.
    hard_bin = num_bins - 2 if num_bins >= 3 else num_bins - 1
    hard = per_bin[top][hard_bin]
    add("Harder questions prefer an intermediate sequential:parallel ratio.",
        1 < hard["chain_length"] < top,
        f"budget {top}, bin {hard_bin + 1}: best chain length "
        f"{hard['chain_length']} of {top} (accuracy {hard['accuracy']:.3f})")
  oracle = ratios.get("oracle", {})
  best = max(oracle.items(), key=lambda kv: (kv[1]["bound"] != "at most", kv[1]["ratio"]),
             default=None)
  add("Compute-optimal revisions (oracle bins) match parallel best-of-N with up to 4x less "
      "compute.",
      None if best is None else best[1]["ratio"] >= 4 and best[1]["bound"] != "at most",
      "no ratios" if best is None else
      f"largest ratio {ratio_text(best[1]['ratio'], best[1]['bound'])} at budget {best[0]}")
  rate = transitions.get("right_to_wrong")
  add("About 38% of right answers are revised into wrong ones (here: within a factor of "
      "two of it), so selection is needed.", None if rate is None else 0.19 <= rate <= 0.76,
      "no chains of two or more attempts" if rate is None else
      f"right->wrong {rate:.1%} of {transitions['right_attempts']} right attempts")
  return out
