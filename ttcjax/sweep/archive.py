"""A sweep's finished groups, summarised to keep beside the code.

A group is one (strategy, budget, seed) over a sweep's whole problem set. Its raw
records (every candidate's answer and step scores) grow to tens of MB at large
budgets; its summary keeps what the report and later analyses need:

* the report's rows (`report.budget_table`: every selection rule and the oracle, with
  mean FLOPs; best-of-N also at each smaller budget, read from its samples),
* the group's recorded wall time (`report.wall_times`),
* each problem's outcome under each rule (expected correctness, averaged over the
  subsets drawn for best-of-N) and its FLOPs, per budget read,
* the sweep config it ran under, less the fields a sweep may widen.

Best-of-N's rows are read at the budgets the sweep had when its group was archived;
a budget added later needs the raw records.

A summary is written once its group is complete, one gzipped JSON file per group,
byte-for-byte reproducible and never rewritten. So an archive can be committed, its
figures regenerated without rerunning the search, and a sweep continued on another
machine: `experiments.search --archive DIR` skips the archived groups' units, and
`experiments.search_report --archive DIR` reports them beside the workdir's records.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
from typing import Any, Mapping, Sequence

from ttcjax import shipped
from ttcjax.sweep import report
from ttcjax.sweep.records import record_key

SUFFIX = ".json.gz"
DECIMALS = 4  # per-problem outcomes: expected correctness over at most 16 draws


def group_of(record: Mapping[str, Any]) -> tuple[str, int, int]:
  """(strategy, budget, seed): the group a record belongs to."""
  return record["strategy"], record["budget"], record["seed"]


def file_name(strategy: str, budget: int, seed: int) -> str:
  return f"{strategy}-n{budget}-s{seed}{SUFFIX}"


def summarise(records: Sequence[dict], budgets: Sequence[int], policy_cost, prm_cost,
              problems_per_batch: int, run_config: Mapping[str, Any],
              num_draws: int = 16) -> dict:
  """The summary of one group's records (in the order the sweep wrote them).

  Args:
    records: every record of one (strategy, budget, seed).
    budgets: the budgets best-of-N is read at (those up to its run budget).
    policy_cost, prm_cost: `compute.ModelCost`s (best-of-N's FLOPs at smaller budgets).
    problems_per_batch: the sweep's batch size (wall times of records without
      `unit_problems`).
    run_config: the sweep's config, less the fields a sweep may widen.
    num_draws: subsets averaged for best-of-N below its run budget.
  """
  groups = {group_of(r) for r in records}
  if len(groups) != 1:
    raise ValueError(f"A summary covers one (strategy, budget, seed); got {sorted(groups)}.")
  strategy, budget, seed = groups.pop()
  ordered = sorted(records, key=lambda r: r["uid"])  # the order budget_table uses
  rows = report.budget_table(ordered, budgets, policy_cost, prm_cost, num_draws)
  per_problem = [{"uid": r["uid"], "level": r["level"], "outcomes": {}, "flops": {}}
                 for r in ordered]
  for row in rows:
    size = row["budget"]
    subset = None if size == budget else size
    # The seeds `report.budget_table` draws with: ties at the run budget are broken by
    # one shuffle of seed 0, subsets by the group's seed.
    draw_seed = 0 if subset is None else seed
    outcome = {label: report.problem_accuracy(ordered, label, subset, num_draws, draw_seed)
               for label, _, _ in report.REPORTED_SELECTIONS}
    outcome["oracle"] = report.problem_pass_at(ordered, size, num_draws, seed)
    for i, (entry, record) in enumerate(zip(per_problem, ordered)):
      entry["outcomes"][str(size)] = {k: round(float(v[i]), DECIMALS)
                                      for k, v in outcome.items()}
      entry["flops"][str(size)] = (
          record["flops"]["total_flops"] if subset is None else
          report.subset_flops(record, size / budget, policy_cost, prm_cost))
  (wall_time,) = report.wall_times(records, problems_per_batch)
  return {"strategy": strategy, "name": ordered[0]["name"], "hyper": ordered[0]["hyper"],
          "budget": budget, "seed": seed,
          "generation_budget": ordered[0]["generation_budget"],
          "run_config": dict(run_config), "rows": rows, "wall_time": wall_time,
          "problems": per_problem}


def write_complete_groups(records: Sequence[dict], archive_dir: str,
                          expected_uids: Sequence[str], budgets: Sequence[int], policy_cost,
                          prm_cost, problems_per_batch: int,
                          run_config: Mapping[str, Any]) -> list[str]:
  """Writes the summary of every group whose records cover exactly `expected_uids` and
  that the archive lacks (creating `archive_dir`); returns the paths written. Groups
  still running are left for later, and an archived group is never rewritten. Raises
  ValueError if the archive holds groups of another config or problem set."""
  summaries = read(archive_dir, must_exist=False)
  check_same_sweep(summaries, run_config)
  check_problems(summaries, expected_uids)
  os.makedirs(archive_dir, exist_ok=True)
  by_group = collections.defaultdict(list)
  for record in records:
    by_group[group_of(record)].append(record)
  expected = sorted(expected_uids)
  written = []
  for (strategy, budget, seed), group in sorted(by_group.items()):
    path = os.path.join(archive_dir, file_name(strategy, budget, seed))
    if sorted(r["uid"] for r in group) != expected or os.path.exists(path):
      continue
    summary = summarise(group, budgets, policy_cost, prm_cost, problems_per_batch, run_config)
    data = gzip.compress(json.dumps(summary, sort_keys=True).encode(), mtime=0)
    with open(path + ".tmp", "wb") as f:  # a kill mid-write leaves no partial summary
      f.write(data)
    os.replace(path + ".tmp", path)
    written.append(path)
  return written


def read(archive_dir: str | None, must_exist: bool = True) -> list[dict]:
  """Every summary in `archive_dir`, sorted by group (none if it is None).

  Raises ValueError if the directory is missing and `must_exist` (a mistyped archive
  would otherwise make a sweep rerun everything), or if its summaries ran under
  different configs.
  """
  if archive_dir is None:
    return []
  named, archive_dir = archive_dir, shipped.locate(archive_dir)
  if not os.path.isdir(archive_dir):
    if must_exist:
      raise ValueError(f"No sweep archive at {named} (looked in {shipped.where_looked(named)}); "
                       "check the path (an archive is started by experiments.search_report "
                       "--update_archive).")
    return []
  summaries = []
  for name in sorted(os.listdir(archive_dir)):
    if name.endswith(SUFFIX):
      with gzip.open(os.path.join(archive_dir, name)) as f:
        summaries.append(json.load(f))
  if summaries:
    check_same_sweep(summaries, summaries[0]["run_config"])
  return sorted(summaries, key=lambda s: (s["strategy"], s["budget"], s["seed"]))


def check_problems(summaries: Sequence[dict], uids: Sequence[str]) -> None:
  """Raises ValueError unless every summary covers exactly the problems `uids`: a
  sweep over another problem set would otherwise rerun part of an archived group and
  report it twice."""
  expected = sorted(uids)
  for summary in summaries:
    got = sorted(p["uid"] for p in summary["problems"])
    if got != expected:
      raise ValueError(
          f"The archive's {summary['strategy']} at N={summary['budget']} covers {len(got)} "
          f"problems, this sweep {len(expected)} (or other ones). Use an archive of the "
          "same problem set (problems_per_level).")


def check_same_sweep(summaries: Sequence[dict], run_config: Mapping[str, Any]) -> None:
  """Raises ValueError unless every summary ran under `run_config` (both less the
  fields a sweep may widen): results of other models or caps must not be mixed."""
  current = json.loads(json.dumps(run_config, sort_keys=True, default=str))
  for summary in summaries:
    if summary["run_config"] != current:
      changed = sorted(k for k in set(current) | set(summary["run_config"])
                       if current.get(k) != summary["run_config"].get(k))
      raise ValueError(
          f"The archive's {summary['strategy']} at N={summary['budget']} ran under another "
          f"config (keys that differ: {changed}). Use an archive of this sweep's config.")


def archived_keys(summaries: Sequence[dict]) -> set[str]:
  """The record keys (`record_key`) the summaries cover: units to skip."""
  return {record_key(s["strategy"], s["budget"], s["seed"], p["uid"])
          for s in summaries for p in s["problems"]}


def not_archived(records: Sequence[dict], summaries: Sequence[dict]) -> list[dict]:
  """The records of groups the summaries do not hold (an archived group's records, if
  still in a workdir, are the same search and would count twice)."""
  covered = {group_of(s): {p["uid"] for p in s["problems"]} for s in summaries}
  stray = [r for r in records if group_of(r) in covered and r["uid"] not in covered[group_of(r)]]
  if stray:
    raise ValueError(f"The workdir holds {len(stray)} records of archived groups for problems "
                     f"the archive lacks (e.g. {stray[0]['key']}): the archive was made over "
                     "another problem set. Report them with another --archive.")
  return [r for r in records if group_of(r) not in covered]
