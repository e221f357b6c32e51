"""Accuracy against budget from a sweep's results, as a table with FLOPs per problem,
and the sweep's recorded wall time.

  python -m experiments.search_report --workdir runs/sweep [--json runs/sweep/report.json]
  python -m experiments.search_report --workdir runs/sweep \
      --markdown=majority,weighted_last,weighted_min,weighted_prod
  python -m experiments.search_report --archive results/arith_sweep_v2 [--workdir runs/sweep]
  python -m experiments.search_report --workdir runs/sweep --archive results/arith_sweep_v2 \
      --update_archive

The wall time is the sum of the recorded unit times (compilation included), so it
adds up across a sweep resumed over several runs; beside it, the units times the
median unit, which a unit slowed by other work on the machine does not inflate.

--archive reports the groups summarised there (`ttcjax.sweep.archive`) beside the
workdir's other records; --update_archive first summarises into it every group the
workdir holds for the whole problem set.
"""

import json
import os

from absl import app, flags

from ttcjax import rundir, sweep, tasks
from ttcjax.sweep import archive, report
from ttcjax.tasks.arith import task as arith_task, testbed

_WORKDIR = flags.DEFINE_string("workdir", None, "A sweep's run directory.")
_ARCHIVE = flags.DEFINE_string("archive", None, "A directory of archived sweep groups.")
_UPDATE = flags.DEFINE_bool("update_archive", False, "Summarise the workdir's complete "
                            "groups into --archive first (never rewriting one).")
_SKIP_DAMAGED = flags.DEFINE_bool(
    "skip_damaged", False, "Report without the workdir's damaged result lines (counted), "
    "instead of refusing the file.")
_JSON = flags.DEFINE_string("json", None, "Where to write the rows and wall times (JSON).")
_RULE = flags.DEFINE_enum("rule", "weighted_last", list(report.COLUMNS),
                          "Selection rule shown in the table.")
_MARKDOWN = flags.DEFINE_list("markdown", None, "Print a markdown table instead, one line "
                              "per strategy and each of these selection rules.")


def main(argv):
  del argv
  if not (_WORKDIR.value or _ARCHIVE.value):
    raise ValueError("Give --workdir (a sweep's run directory), --archive, or both.")
  if _UPDATE.value and not (_WORKDIR.value and _ARCHIVE.value):
    raise ValueError("--update_archive needs both --workdir and --archive.")
  records = []
  if _WORKDIR.value:
    config_path = os.path.join(_WORKDIR.value, "run_config.json")
    if not os.path.isfile(config_path):
      raise ValueError(f"{_WORKDIR.value} holds no sweep (no {config_path}); give the "
                       "--workdir of an experiments.search run.")
    try:
      with open(config_path) as f:
        config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{config_path} is damaged ({e}); restore it from a copy.") from e
    # Sweeps recorded before configs named their task are testbed sweeps.
    task = tasks.get_task(config.get("task", arith_task.NAME))
    if _ARCHIVE.value and task.name != arith_task.NAME:
      raise ValueError(f"--archive applies to testbed sweeps; {_WORKDIR.value} holds a "
                       f"{task.name} sweep.")
    policy, prm = task.model_costs(config)
    results_path = os.path.join(_WORKDIR.value, "results.jsonl")
    records = sweep.read_results(results_path, skip_damaged=_SKIP_DAMAGED.value)
    damaged = sweep.damaged_lines(results_path) if _SKIP_DAMAGED.value else []
    if damaged:
      print(f"skipped {len(damaged)} damaged line(s) of {results_path} (--skip_damaged): "
            f"line {', '.join(map(str, damaged[:10]))}")
    # A sweep widened in place keeps its first run's config; its records hold the rest.
    budgets = sorted(set(config["budgets"]) | {r["budget"] for r in records})
    if _UPDATE.value:
      uids = [p.uid for p in testbed.evaluation_problems(config["problems_per_level"])]
      for path in archive.write_complete_groups(
          records, _ARCHIVE.value, uids, budgets, policy, prm, config["problems_per_batch"],
          arith_task.sweep_identity(config)):
        print(f"archived {path}")
  summaries = archive.read(_ARCHIVE.value)
  if _WORKDIR.value:  # results of other models or caps must not be mixed
    archive.check_same_sweep(summaries, arith_task.sweep_identity(config))
  rows = [row for s in summaries for row in s["rows"]]
  times = [s["wall_time"] for s in summaries]
  rest = archive.not_archived(records, summaries)
  if rest:
    rows += report.budget_table(rest, budgets, policy, prm)
    times += report.wall_times(rest, config["problems_per_batch"])
  if not rows:
    raise ValueError("No results to report: the workdir and the archive are empty.")
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
  if _WORKDIR.value:
    # The units' times leave out work a kill cut short; the invocations' log has it.
    wall = rundir.wall_time(_WORKDIR.value)
    if wall["invocations"]:
      print(f"  this workdir's invocations: {wall['invocations']} "
            f"({wall['killed']} killed, {wall['running']} still running), "
            f"{wall['wall_s']:.1f} s in all, "
            f"{wall['lost_to_kills_s']:.1f} s of it lost to kills")


if __name__ == "__main__":
  app.run(main)
