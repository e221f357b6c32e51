"""Accuracy against budget from a sweep's results, as a table with FLOPs per problem.

  python -m experiments.search_report --workdir runs/sweep [--json runs/sweep/report.json]
"""

import json
import os

from absl import app, flags

from ttcjax import compute
from ttcjax.search import report, sweep
from ttcjax.tasks import testbed

_WORKDIR = flags.DEFINE_string("workdir", None, "A sweep's run directory.")
_JSON = flags.DEFINE_string("json", None, "Where to write the rows (JSON).")
_RULE = flags.DEFINE_enum("rule", "weighted_last", [s[0] for s in report.SELECTIONS],
                          "Selection rule shown in the table.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  with open(os.path.join(_WORKDIR.value, "run_config.json")) as f:
    config = json.load(f)
  policy = compute.ModelCost.of_policy(testbed.load_policy(config["policy_dir"])[0])
  prm = compute.ModelCost.of_prm(testbed.load_reward_model(config["prm_dir"])[0])
  records = sweep.read_results(os.path.join(_WORKDIR.value, "results.jsonl"))
  rows = report.budget_table(records, config["budgets"], policy, prm)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(rows, f, indent=2)
  print(report.format_table(rows, _RULE.value))


if __name__ == "__main__":
  app.run(main)
