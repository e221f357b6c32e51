"""The paper's findings checked against a study's numbers, each with its evidence."""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from ttcjax.study.allocation import ResultTable
from ttcjax.study.optimal import ratio_text
from ttcjax.study.outcomes import BEST_OF_N


def per_bin_accuracy(table: ResultTable, bins: np.ndarray, num_bins: int) -> dict:
  """{strategy: {budget: [Y] mean accuracy per bin}}."""
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
        f"large {easy['large']:.3f}" + _counted_bin(small_r, 0))
    add("On the hardest questions at large R, pretraining (the larger model) wins.",
        hard["large"] > hard["small"], f"R={large_r['R']}, last bin: small {hard['small']:.3f}, "
        f"large {hard['large']:.3f}" + _counted_bin(large_r, -1))
  return out


def _counted_bin(row: dict, index: int) -> str:
  """The exchange's small-model accuracy in one bin when the verifier's FLOPs count too."""
  if "counting_verifier" not in row:
    return ""
  return (f" (counting the verifier's FLOPs too: small "
          f"{row['counting_verifier']['bins'][index]['small']:.3f})")
