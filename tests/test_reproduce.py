"""The main job at its quick size: every stage runs on the shipped checkpoints, the
outputs are written, a second run reuses everything, and bad configs are refused."""

import json
import os
import subprocess
import sys

import pytest

from configs.arith import study as study_config
from ttcjax import rundir
from ttcjax.study import allocation
from ttcjax.tasks.arith import arithmetic, task as arith_task, testbed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_config(**changes):
  """The quick study config; `changes` apply on top of its quick sizes."""
  config = study_config.get_config("quick")
  for key, value in changes.items():
    setattr(config, key, value)
  return config


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("study"))
  return workdir, arith_task.TASK.run_study(quick_config(), workdir)


def test_quick_study_writes_every_output(quick_study):
  workdir, summary = quick_study
  for name in ["report.md", "summary.json", "study.json", "allocation_oracle.json",
               "allocation_predicted.json"] + summary["figures"]:
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "summary.json")) as f:
    written = json.load(f)
  assert written["questions"] == 20 and written["budgets"] == [1, 2, 4]
  assert written["variant"] == "quick"
  for kind in ("oracle", "predicted"):
    for budget in ("1", "2", "4"):
      ratio = written["efficiency_ratio"][kind][budget]
      assert ratio["ratio"] > 0 and ratio["bound"] in ("exact", "at least", "at most")
      assert written["efficiency_ratio_with_estimation"][kind][budget]["ratio"] <= ratio["ratio"]
  assert written["wall_s"] > 0 and len(written["exchange"]) == 3
  assert {f["holds"] for f in written["findings"]} <= {True, False, None}
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  for figure in summary["figures"]:
    assert f"({figure})" in report


def test_fitted_allocation_applies_to_a_new_question(quick_study):
  workdir, _ = quick_study
  fitted = allocation.load_allocation(os.path.join(workdir, "allocation_oracle.json"), "arith")
  assert len(fitted["bin_edges"]) == 4 and set(fitted["choices"]) == {1, 2, 4}
  # A question every sample solves is in the easiest bin; one none solves, the hardest.
  assert allocation.bin_of(1.0, fitted["bin_edges"]) == 0
  assert allocation.bin_of(-1.0, fitted["bin_edges"]) == 4
  option = fitted["choices"][4][allocation.bin_of(1.0, fitted["bin_edges"])]
  assert option.budget == 4
  with pytest.raises(ValueError, match="task"):
    allocation.load_allocation(os.path.join(workdir, "allocation_oracle.json"), "math500")


def test_a_fitted_allocation_solves_new_problems(quick_study):
  workdir, _ = quick_study
  path = os.path.join(workdir, "allocation_predicted.json")
  seen = {p.uid for p in testbed.evaluation_problems(2)}
  new = [p for p in testbed.evaluation_problems(3) if p.uid not in seen][:4]
  solved = arith_task.apply_allocation(quick_config(), path, new, budget=2)
  fitted = allocation.load_allocation(path, "arith")
  assert [s["uid"] for s in solved] == [p.uid for p in new]
  for s, problem in zip(solved, new):
    assert fitted["choices"][2][s["bin"]] == allocation.Option(s["strategy"], s["budget"])
    assert s["correct"] == (s["answer"] == arithmetic.canonical_answer(problem.answer))
  with pytest.raises(ValueError, match="no choice at budget 64"):
    arith_task.apply_allocation(quick_config(), path, new, budget=64)


def test_second_run_from_the_command_line_reuses_the_searches(quick_study):
  workdir, first = quick_study
  with open(os.path.join(workdir, "study.json")) as f:
    before = json.load(f)
  out = subprocess.run(
      [sys.executable, "-m", "experiments.reproduce", f"--workdir={workdir}",
       "--config=configs/arith/study.py:quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  # Not a terminal: the stages announce themselves as log lines.
  assert "study: stage sweep" in out.stderr and "study: analysing" in out.stderr
  with open(os.path.join(workdir, "summary.json")) as f:
    second = json.load(f)
  assert second["search_units_run_now"] == {name: 0 for name in arith_task.STAGES}
  assert second["search_units"] == first["search_units"]
  with open(os.path.join(workdir, "study.json")) as f:
    after = json.load(f)
  assert after["compute_optimal"] == before["compute_optimal"]
  assert after["exchange"] == before["exchange"]


@pytest.mark.parametrize("changes,match", [
    (dict(difficulty_seed=0), "also a sweep seed"),
    (dict(num_bins=20), "cannot fill 20"),
    (dict(strategies=[dict(name="beam", beam_width=2, label="beam_m2")]), "add a best_of_n"),
    (dict(difficulty_samples=0), "difficulty_samples must be positive"),
])
def test_bad_configs_are_refused_before_any_search(tmp_path, changes, match):
  with pytest.raises(ValueError, match=match):
    arith_task.TASK.run_study(quick_config(**changes), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_a_workdir_of_other_strategies_is_refused_untouched(quick_study):
  workdir, _ = quick_study
  results = os.path.join(workdir, "sweep", "results.jsonl")
  size = os.path.getsize(results)
  other = quick_config(strategies=[dict(name="best_of_n", max_budget_only=True),
                                   dict(name="beam", beam_width=2, label="beam_m2")])
  log = os.path.join(workdir, "invocations.jsonl")
  log_size = os.path.getsize(log)
  with pytest.raises(ValueError, match="another config"):
    arith_task.TASK.run_study(other, workdir)
  assert os.path.getsize(results) == size and os.path.getsize(log) == log_size


def test_a_resumed_study_reports_the_wall_time_of_every_invocation(quick_study, tmp_path):
  import shutil
  workdir = str(tmp_path / "study")
  shutil.copytree(quick_study[0], workdir)
  before = rundir.wall_time(workdir)  # other tests may have rerun the fixture's study
  assert before["invocations"] >= 1 and before["wall_s"] >= quick_study[1]["wall_s"]
  again = arith_task.TASK.run_study(quick_config(), workdir)
  assert again["invocations"] == before["invocations"] + 1
  assert again["killed_invocations"] == 0
  assert again["wall_s"] == pytest.approx(before["wall_s"] + again["wall_s_this_invocation"],
                                          abs=1.0)
  with open(os.path.join(workdir, "report.md")) as f:
    assert f"over {again['invocations']} invocations (0 killed" in f.read()
