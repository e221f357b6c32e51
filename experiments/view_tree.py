"""Writes one problem's search as a self-contained HTML page.

  python -m experiments.view_tree --workdir runs/sweep --problem L7-003
  python -m experiments.view_tree --workdir runs/sweep --problem L7-003 \
      --strategy beam_m4 --budget 16 --seed 0 --out beam.html

WORKDIR is a sweep's run directory (`experiments.search`, or a study stage's, e.g.
runs/study/search_small); its `run_config.json` says what to load. The unit
(--strategy label, --budget, --seed) defaults to the first of the config's settings
with a record of the problem, at its largest recorded budget; without records give
all three. The problem is searched again with that unit's seed and hyperparameters
(a problem's search depends only on the seed and its id) with the round trace on,
and the rerun is checked against the record: a difference is printed and shown on
the page. The page: the tree of every step a step-level search sampled (score,
round, row, kept or pruned, the candidate each path became), the final candidates
side by side (chains for sequential revisions), and the answers with their votes.
Written to --out, default WORKDIR/trees/PROBLEM-LABEL-nN-sSEED.html.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from ttcjax import rundir, sweep, tasks
from ttcjax.sweep import view

_WORKDIR = flags.DEFINE_string("workdir", None, "A sweep's run directory.")
_PROBLEM = flags.DEFINE_string("problem", None, "The problem's uid, as in results.jsonl.")
_STRATEGY = flags.DEFINE_string("strategy", None, "A strategy setting's label (default: see above).")
_BUDGET = flags.DEFINE_integer("budget", None, "N (default: the largest recorded).")
_SEED = flags.DEFINE_integer("seed", None, "The seed (default: the first recorded).")
_OUT = flags.DEFINE_string("out", None, "The page's path.")
flags.mark_flags_as_required(["workdir", "problem"])


def _unit(config: dict, records: list[dict]) -> tuple[sweep.StrategySetting, int, int, dict | None]:
  """The (setting, budget, seed) to show and the record of it (None: not recorded)."""
  settings = [sweep.StrategySetting.from_dict(dict(s)) for s in config["strategies"]]
  by_label = {s.label: s for s in settings}
  label = _STRATEGY.value
  if label is not None and label not in by_label:
    raise ValueError(f"This sweep has no strategy setting {label!r}; its settings are "
                     f"{sorted(by_label)}.")
  if label is None:
    recorded = {r["strategy"] for r in records}
    label = next((s.label for s in settings if s.label in recorded), None)
    if label is None:
      raise ValueError(f"The workdir holds no record of problem {_PROBLEM.value!r}: give "
                       f"--strategy (one of {sorted(by_label)}), --budget and --seed.")
  mine = [r for r in records if r["strategy"] == label]
  budget = _BUDGET.value
  if budget is None:
    if not mine:
      raise ValueError(f"No record of {label!r} on {_PROBLEM.value!r}: give --budget and --seed.")
    budget = max(r["budget"] for r in mine)
  seed = _SEED.value
  if seed is None:
    seeds = sorted({r["seed"] for r in mine if r["budget"] == budget})
    seed = seeds[0] if seeds else config["seeds"][0]
  record = next((r for r in mine if r["budget"] == budget and r["seed"] == seed), None)
  return by_label[label], budget, seed, record


def run() -> str:
  workdir, uid = _WORKDIR.value, _PROBLEM.value
  config_path = os.path.join(workdir, rundir.RUN_CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise ValueError(f"{workdir} is not a sweep's run directory (no {rundir.RUN_CONFIG_FILE}); "
                     "point --workdir at one experiments.search wrote.")
  with open(config_path) as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as err:
      raise ValueError(f"{config_path} is damaged ({err}); it cannot say what to load.") from None
  results = os.path.join(workdir, "results.jsonl")
  records = [r for r in sweep.read_results(results, skip_damaged=True) if r["uid"] == uid
             ] if os.path.exists(results) else []
  setting, budget, seed, record = _unit(config, records)
  task = tasks.task_of(config)
  search = task.search_problem(config, uid, setting, budget, seed)
  notes = []
  if record is None:
    notes.append("This unit has no record in the workdir: the page shows a fresh search.")
  else:
    differences = view.differences_from_record(search, record)
    if differences:
      notes.append("The rerun differs from the sweep's record (" + "; ".join(differences) +
                   "): float rounding of another batch size can turn a close choice.")
  for note in notes:
    print("note:", note)
  out = _OUT.value or os.path.join(workdir, "trees", f"{uid}-{setting.label}-n{budget}-s{seed}.html")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(view.render_page(search, notes))
  print(out)
  return out


def main(argv):
  del argv
  try:
    run()
  except ValueError as err:
    raise SystemExit(f"view_tree: {err}") from None


if __name__ == "__main__":
  app.run(main)
