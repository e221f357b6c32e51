"""Accuracy against budget from a sweep's results, as a table with FLOPs per problem,
and the sweep's recorded wall time.

  python -m experiments.search_report --workdir runs/sweep [--json runs/sweep/report.json]
  python -m experiments.search_report --workdir runs/sweep \
      --markdown=majority,weighted_last,weighted_min,weighted_prod

The wall time is the sum of the recorded unit times (compilation included), so it
adds up across a sweep resumed over several runs; beside it, the units times the
median unit, which a unit slowed by other work on the machine does not inflate.
"""

import json
import os

from absl import app, flags

from ttcjax import compute
from ttcjax.search import report, sweep
from ttcjax.tasks import testbed

_WORKDIR = flags.DEFINE_string("workdir", None, "A sweep's run directory.")
_JSON = flags.DEFINE_string("json", None, "Where to write the rows and wall times (JSON).")
_RULE = flags.DEFINE_enum("rule", "weighted_last", [s[0] for s in report.SELECTIONS],
                          "Selection rule shown in the table.")
_MARKDOWN = flags.DEFINE_list("markdown", None, "Print a markdown table instead, one line "
                              "per strategy and each of these selection rules.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  with open(os.path.join(_WORKDIR.value, "run_config.json")) as f:
    config = json.load(f)
  policy = compute.ModelCost.of_policy(testbed.load_policy(config["policy_dir"])[0])
  prm = compute.ModelCost.of_prm(testbed.load_reward_model(config["prm_dir"])[0])
  records = sweep.read_results(os.path.join(_WORKDIR.value, "results.jsonl"))
  # A sweep widened in place keeps its first run's config; its records hold the rest.
  budgets = sorted(set(config["budgets"]) | {r["budget"] for r in records})
  rows = report.budget_table(records, budgets, policy, prm)
  times = report.wall_times(records, config["problems_per_batch"])
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"rows": rows, "wall_times": times}, f, indent=2)
  if _MARKDOWN.value:
    print(report.format_markdown(rows, _MARKDOWN.value))
  else:
    print(report.format_table(rows, _RULE.value))
  print("\nrecorded wall time (s), compilation included; in brackets, units x the median "
        "unit (robust to a unit slowed by other work on the machine):")
  for budget in sorted({t["budget"] for t in times}):
    at = [t for t in times if t["budget"] == budget]
    print(f"  budget {budget:>4}: {sum(t['wall_s'] for t in at):9.1f} "
          f"[{sum(t['units'] * t['median_unit_s'] for t in at):9.1f}]  " + ", ".join(
              f"{t['strategy']} {t['wall_s']:.1f}" for t in at))
  untimed = sum(t["untimed_problems"] for t in times)
  print(f"  total: {sum(t['wall_s'] for t in times):.1f} s "
        f"[{sum(t['units'] * t['median_unit_s'] for t in times):.1f} s] over "
        f"{sum(t['units'] for t in times)} units"
        + (f" ({untimed} records carry no time)" if untimed else ""))

if __name__ == "__main__":
  app.run(main)
