"""The sweep runner: planning, records, and resumption after a kill."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from configs.arith import sweep as sweep_config
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.transformer import init_params
from ttcjax import sweep
from ttcjax.tasks.arith import task as arith_task, testbed
from ttcjax.models import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32,
            max_position_embeddings=128)


def test_plan_skips_settings_that_do_not_fit_and_runs_best_of_n_once():
  settings = [sweep.StrategySetting.from_dict(s) for s in sweep_config.get_config().strategies]
  units = sweep.plan_units(settings, [1, 2, 4, 8], [0], num_problems=10, problems_per_batch=10)
  planned = {(u.setting.label, u.budget) for u in units}
  assert ("best_of_n", 8) in planned and ("best_of_n", 4) not in planned
  assert ("beam_m4", 2) not in planned and ("beam_m4", 4) in planned
  # Lookahead is compared at N (k + 1): with k = 3, N = 4 costs 16 > 8 and is left out.
  assert ("lookahead_m4_k3", 4) not in planned and ("lookahead_msqrt_k1", 4) in planned
  assert ("lookahead_msqrt_k1", 8) not in planned
  # sqrt rounds down to a power of two: N = 8 -> M = 2; N = 2 -> M = 1.
  beam_sqrt = next(s for s in settings if s.label == "beam_msqrt")
  assert beam_sqrt.resolve(8)["beam_width"] == 2 and beam_sqrt.resolve(16)["beam_width"] == 4
  assert beam_sqrt.resolve(2)["beam_width"] == 1


def test_a_row_cap_shrinks_batches_at_large_budgets():
  settings = [sweep.StrategySetting.from_dict(s) for s in sweep_config.get_config().strategies]
  units = sweep.plan_units(settings, [2, 4, 8], [0], num_problems=10, problems_per_batch=5,
                           max_rows_per_batch=16)
  sizes = {(u.setting.label, u.budget): u.batch_size for u in units}
  assert sizes[("beam_msqrt", 2)] == 5  # 5 x 2 rows fit under 16
  assert sizes[("beam_m4", 4)] == 4 and sizes[("beam_m4", 8)] == 2
  assert sizes[("lookahead_msqrt_k1", 4)] == 2  # its rollouts double the rows
  beam_8 = [u for u in units if (u.setting.label, u.budget) == ("beam_m4", 8)]
  assert [u.problem_indices for u in beam_8] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
  one = sweep.plan_units(settings, [8], [0], 3, 3, max_rows_per_batch=1)
  assert {u.batch_size for u in one} == {1}  # never fewer than one problem
  with pytest.raises(ValueError, match="max_rows_per_batch"):
    sweep.plan_units(settings, [8], [0], 3, 3, max_rows_per_batch=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(budgets=[]), "at least one"), (dict(budgets=[0, 4]), "positive"),
    (dict(num_problems=0), "positive problem"),
])
def test_bad_plans_are_refused(kwargs, match):
  args = dict(settings=[sweep.StrategySetting("a", "beam", (("beam_width", 2),))], budgets=[4],
              seeds=[0], num_problems=4, problems_per_batch=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    sweep.plan_units(**args)


def test_duplicate_labels_are_refused():
  s = sweep.StrategySetting("same", "best_of_n")
  with pytest.raises(ValueError, match="unique"):
    sweep.plan_units([s, s], [2], [0], 2, 2)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  config = TransformerConfig(vocab_size=testbed.tokenizer().vocab_size, **TINY)
  export.export_model(str(root / "policy"), init_params(config, jax.random.PRNGKey(0)), config)
  prm = PrmConfig(config, head_hidden=8)
  export.export_model(str(root / "prm"), init_prm_params(prm, jax.random.PRNGKey(1)), prm)
  return root


def tiny_sweep_config(models):
  c = sweep_config.get_config()
  c.policy_dir, c.prm_dir = str(models / "policy"), str(models / "prm")
  c.problems_per_level = 1
  c.problems_per_batch = 5
  c.budgets = (2, 4)
  c.caps = dict(max_prompt_tokens=32, max_step_tokens=8, max_solution_tokens=24, max_steps=4,
                max_rounds=3)
  c.strategies = [dict(name="best_of_n", max_budget_only=True),
                  dict(name="beam", beam_width=2, label="beam_m2")]
  return c


def read(path):
  """Records by key, without their unit's wall time (the one field a rerun changes)."""
  return {r["key"]: {k: v for k, v in r.items() if k != "unit_wall_s"}
          for r in sweep.read_results(str(path))}


@pytest.fixture(scope="module")
def full_sweep(tiny_models, tmp_path_factory):
  """(workdir, totals) of the tiny sweep run whole once (tests only read it)."""
  workdir = tmp_path_factory.mktemp("full")
  return workdir, arith_task.run_search_sweep(tiny_sweep_config(tiny_models), str(workdir))


def test_a_killed_sweep_resumes_without_losing_or_duplicating(tiny_models, full_sweep,
                                                              tmp_path):
  config = tiny_sweep_config(tiny_models)
  full_dir, full = full_sweep
  assert full["units_run"] == full["units_total"] == 6
  expected = read(full_dir / "results.jsonl")
  assert len(expected) == 30  # 10 problems x (beam at 2 and 4, best-of-N at 4)
  record = expected["beam_m2|4|0|test-L3-0"]
  assert len(record["answers"]) == 4 and record["generation_budget"] == 4
  assert record["flops"]["total_flops"] > record["flops"]["policy_flops"] > 0

  part = tmp_path / "part"
  first = arith_task.run_search_sweep(config, str(part), stop_after_units=2)
  # Work in samples: beam at 2 (10 problems x 2) ran; beam at 4 and best-of-N at 4 remain.
  assert (first["samples_run"], first["samples_left"]) == (20, 80)
  with open(part / "results.jsonl", "a") as f:
    f.write('{"key": "beam_m2|4|0|test-L1-0", "uid": ')  # the kill cut a line
  seen = []
  resumed = arith_task.run_search_sweep(config, str(part), progress=seen.append)
  assert resumed["units_run"] == 4 and resumed["units_skipped"] == 2
  assert (resumed["samples_run"], resumed["samples_left"]) == (80, 0)
  assert seen[0]["eta_s"] > 0 and seen[-1]["eta_s"] == 0
  assert sweep.progress_postfix(seen[-1])["left"] == "0h00m"
  lines = (part / "results.jsonl").read_text().splitlines()
  assert len(lines) == 30 and len({json.loads(line)["key"] for line in lines}) == 30
  assert read(part / "results.jsonl") == expected


def test_a_finished_sweep_resumes_without_opening_its_results_for_writing(
    tiny_models, full_sweep, tmp_path, monkeypatch):
  """A finished sweep in a read-only workdir (e.g. a shared archive) resumes and reports;
  its invocations are logged with their wall times."""
  import shutil
  from ttcjax import rundir
  from ttcjax.sweep import run as sweep_run
  workdir = tmp_path / "copy"
  shutil.copytree(full_sweep[0], workdir)

  def refuse(path):
    raise AssertionError(f"{path} was opened for writing with nothing left to run")

  monkeypatch.setattr(sweep_run, "_open_results", refuse)
  again = arith_task.run_search_sweep(tiny_sweep_config(tiny_models), str(workdir))
  assert again["units_run"] == 0 and again["units_skipped"] == 6
  wall = rundir.wall_time(str(workdir))
  assert wall["invocations"] == 2 and wall["killed"] == 0 and wall["wall_s"] > 0


def test_a_sweep_workdir_refuses_other_models(tiny_models, tmp_path):
  config = tiny_sweep_config(tiny_models)
  config.budgets = (2,)
  config.strategies = [dict(name="beam", beam_width=2, label="beam_m2")]
  arith_task.run_search_sweep(config, str(tmp_path), stop_after_units=0)
  config.temperature = 0.5
  with pytest.raises(ValueError, match="another config"):
    arith_task.run_search_sweep(config, str(tmp_path))


def test_a_sweep_workdir_refuses_retrained_weights_at_the_same_path(tiny_models, tmp_path):
  import shutil
  models = tmp_path / "models"
  shutil.copytree(tiny_models, models)
  config = tiny_sweep_config(models)
  config.budgets = (2,)
  config.strategies = [dict(name="beam", beam_width=2, label="beam_m2")]
  arith_task.run_search_sweep(config, str(tmp_path / "run"), stop_after_units=0)
  prm_config, _, _ = export.load_exported(str(models / "prm"))
  export.export_model(str(models / "prm"), init_prm_params(prm_config, jax.random.PRNGKey(7)),
                      prm_config)  # "retrained": same path, other weights
  with pytest.raises(ValueError, match=r"another config \(keys that differ: \['weights'\]"):
    arith_task.run_search_sweep(config, str(tmp_path / "run"))


def test_report_reads_best_of_n_at_every_budget(tiny_models, full_sweep):
  from ttcjax import compute
  from ttcjax.sweep import report
  config = tiny_sweep_config(tiny_models)
  records = sweep.read_results(str(full_sweep[0] / "results.jsonl"))
  policy = compute.ModelCost.of_policy(testbed.load_policy(config.policy_dir)[0])
  prm = compute.ModelCost.of_prm(testbed.load_reward_model(config.prm_dir)[0])
  rows = report.budget_table(records, [1, 2, 4], policy, prm)
  got = {(r["strategy"], r["budget"]) for r in rows}
  assert got == {("best_of_n", 1), ("best_of_n", 2), ("best_of_n", 4), ("beam_m2", 2),
                 ("beam_m2", 4)}
  bon = {r["budget"]: r for r in rows if r["strategy"] == "best_of_n"}
  assert bon[1]["mean_flops"] < bon[2]["mean_flops"] < bon[4]["mean_flops"]
  for r in rows:
    assert 0.0 <= r["weighted_last"] <= 1.0 and r["problems"] == 10
  assert "best_of_n" in report.format_table(rows)
  table = report.format_markdown(rows, ["majority", "weighted_min"]).splitlines()
  assert table[0] == "| strategy | selection | 1 | 2 | 4 |"
  assert len(table) == 2 + 2 * 2  # header, rule, 2 strategies x 2 rules
  assert table[3].startswith("| beam_m2 | weighted_min | - | ")  # beam does not run at 1
  with pytest.raises(ValueError, match="Unknown"):
    report.format_markdown(rows, ["weighted_max"])
  times = report.wall_times(records, config.problems_per_batch)
  assert sum(t["units"] for t in times) == 6  # 2 units each: beam at 2 and 4, best-of-N at 4
  assert all(t["wall_s"] > 0 and t["problems"] == 10 for t in times)


def test_wall_times_count_each_unit_once():
  from ttcjax.sweep import report

  def unit(label, budget, wall, n):
    return [dict(strategy=label, budget=budget, seed=0, unit_wall_s=wall)] * n

  records = (unit("beam", 4, 2.0, 3) + unit("beam", 4, 2.0, 3)  # two units, equal times
             + unit("beam", 4, 5.0, 1)  # a resumed unit's remaining problem
             + unit("bon", 4, 1.5, 3) + [dict(strategy="bon", budget=4, seed=0)])
  times = {t["strategy"]: t for t in report.wall_times(records, problems_per_batch=3)}
  assert times["beam"]["units"] == 3 and times["beam"]["wall_s"] == 9.0
  assert times["beam"]["median_unit_s"] == 2.0
  assert times["beam"]["problems"] == 7
  assert times["bon"]["units"] == 1 and times["bon"]["wall_s"] == 1.5
  assert times["bon"]["untimed_problems"] == 1
  with pytest.raises(ValueError, match="positive"):
    report.wall_times(records, 0)
  # Records name their unit's size, so a sweep resumed with larger batches is not split.
  larger = [dict(r, unit_problems=6) for r in unit("beam", 8, 4.0, 6)]
  times = report.wall_times(larger, problems_per_batch=3)
  assert times[0]["units"] == 1 and times[0]["wall_s"] == 4.0


def test_an_archive_summarises_complete_groups_and_a_sweep_continues_from_it(
    tiny_models, full_sweep, tmp_path):
  from ttcjax import compute
  from ttcjax.sweep import archive, report
  config = tiny_sweep_config(tiny_models)
  full_dir = full_sweep[0]
  records = sweep.read_results(str(full_dir / "results.jsonl"))
  policy = compute.ModelCost.of_policy(testbed.load_policy(config.policy_dir)[0])
  prm = compute.ModelCost.of_prm(testbed.load_reward_model(config.prm_dir)[0])
  uids = [p.uid for p in testbed.evaluation_problems(config.problems_per_level)]
  identity = arith_task.sweep_identity(arith_task.recorded_config(config))
  store = str(tmp_path / "archive")

  def update(expected=uids):
    return archive.write_complete_groups(records, store, expected, [1, 2, 4], policy, prm,
                                         config.problems_per_batch, identity)

  assert update(uids + ["test-L9-99"]) == []  # no group covers that problem yet
  assert sorted(os.path.basename(p) for p in update()) == [
      "beam_m2-n2-s0.json.gz", "beam_m2-n4-s0.json.gz", "best_of_n-n4-s0.json.gz"]
  assert update() == []  # an archived group is never rewritten
  summaries = archive.read(store)
  # The archive reports what the records report.
  assert [row for s in summaries for row in s["rows"]] == report.budget_table(
      records, [1, 2, 4], policy, prm)
  assert archive.not_archived(records, summaries) == []
  bon = next(s for s in summaries if s["strategy"] == "best_of_n")
  assert [row["budget"] for row in bon["rows"]] == [1, 2, 4]
  assert bon["wall_time"]["units"] == 2 and bon["wall_time"]["problems"] == 10
  for row in bon["rows"]:  # each problem's outcome averages to the row's accuracy
    for rule in ("majority", "weighted_min", "oracle"):
      outcomes = [p["outcomes"][str(row["budget"])][rule] for p in bon["problems"]]
      assert np.mean(outcomes) == pytest.approx(row[rule], abs=1e-4)
    flops = [p["flops"][str(row["budget"])] for p in bon["problems"]]
    assert np.mean(flops) == pytest.approx(row["mean_flops"])
  # Summaries are reproducible byte for byte.
  path = os.path.join(store, "beam_m2-n4-s0.json.gz")
  with open(path, "rb") as f:
    before = f.read()
  os.remove(path)
  update()
  with open(path, "rb") as f:
    assert f.read() == before

  # The launcher: archive a workdir, then report from the archive alone, as a fresh
  # clone would (no workdir).
  def search_report(*flags):
    out = subprocess.run([sys.executable, "-m", "experiments.search_report", *flags],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return out, json.loads((tmp_path / "report.json").read_text())

  fresh = str(tmp_path / "fresh")
  text, with_records = search_report(f"--workdir={full_dir}", f"--archive={fresh}",
                                     "--update_archive", f"--json={tmp_path / 'report.json'}")
  assert text.count("archived ") == 3
  text, alone = search_report(f"--archive={fresh}", "--markdown=majority,oracle",
                              f"--json={tmp_path / 'report.json'}")
  assert alone == with_records and "| beam_m2 | oracle |" in text and "over 6 units" in text

  # A sweep in a new workdir skips the archived groups and runs the rest.
  os.remove(path)
  resumed = arith_task.run_search_sweep(config, str(tmp_path / "elsewhere"), archive_dir=store)
  assert (resumed["units_run"], resumed["units_skipped"]) == (2, 4)
  expected = {k: v for k, v in read(full_dir / "results.jsonl").items()
              if k.startswith("beam_m2|4|")}
  assert read(tmp_path / "elsewhere" / "results.jsonl") == expected
  config.temperature = 0.5
  with pytest.raises(ValueError, match="another config"):
    arith_task.run_search_sweep(config, str(tmp_path / "other"), archive_dir=store)


def tied_records(seed, problems=20):
  """Two candidates per problem with equal scores and different answers: every rule
  breaks the tie by its shuffle, which the seed decides."""
  return [dict(key=f"beam|2|{seed}|p{i}", uid=f"p{i}", level=1, strategy="beam", name="beam",
               hyper={}, budget=2, seed=seed, generation_budget=2, answers=["a", "b"],
               correct_answer="a", correct=[True, False], step_scores=[[0.5], [0.5]],
               flops={"total_flops": 1.0}, unit_wall_s=1.0, unit_problems=problems)
          for i in range(problems)]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_summary_breaks_ties_as_the_report_does(seed):
  from ttcjax.sweep import archive
  summary = archive.summarise(tied_records(seed), [2], None, None, 20, {})
  (row,) = summary["rows"]
  assert 0 < row["majority"] < 1  # the ties went both ways
  for rule in ("majority", "weighted_last", "best_last", "oracle"):
    assert np.mean([p["outcomes"]["2"][rule] for p in summary["problems"]]) == row[rule]


def test_an_archive_refuses_a_wrong_path_and_another_problem_set(tmp_path):
  from ttcjax.sweep import archive
  with pytest.raises(ValueError, match="No sweep archive"):
    archive.read(str(tmp_path / "typo"))
  records = tied_records(0)
  uids = [r["uid"] for r in records]
  store = str(tmp_path / "archive")
  assert archive.write_complete_groups(records, store, uids, [2], None, None, 20, {})
  summaries = archive.read(store)
  assert archive.not_archived(records, summaries) == []
  with pytest.raises(ValueError, match="covers 20 problems, this sweep 21"):
    archive.check_problems(summaries, uids + ["p20"])
  stray = tied_records(0, problems=21)[-1:]
  with pytest.raises(ValueError, match="another problem set"):
    archive.not_archived(records + stray, summaries)
  with pytest.raises(ValueError, match="another config"):
    archive.write_complete_groups(records, store, uids, [2], None, None, 20, {"top_p": 0.9})


# ------------------------------------------------------------------ damaged files


def test_a_damaged_results_line_is_named_and_can_be_skipped_or_rerun(tiny_models, full_sweep,
                                                                      tmp_path):
  import shutil
  full_dir, _ = full_sweep
  workdir = tmp_path / "damaged"
  shutil.copytree(full_dir, workdir)
  path = workdir / "results.jsonl"
  lines = path.read_text().splitlines(keepends=True)
  lines[6] = '{"key": "beam_m2|2|0|test-L7-0", "uid": garbled\n'  # mid-file, not a kill
  path.write_text("".join(lines))
  config = tiny_sweep_config(tiny_models)
  with pytest.raises(ValueError, match=r"results.jsonl: 1 line\(s\) are not sweep records "
                                       r"\(line 7\).*sed -i '7d'"):
    arith_task.run_search_sweep(config, str(workdir))
  with pytest.raises(ValueError, match="line 7"):
    sweep.read_results(str(path))
  assert len(sweep.read_results(str(path), skip_damaged=True)) == 29
  assert sweep.damaged_lines(str(path)) == [7]
  # Deleting the line, as the message says: the resume searches that problem again only.
  path.write_text("".join(lines[:6] + lines[7:]))
  resumed = arith_task.run_search_sweep(config, str(workdir))
  assert resumed["records_written"] == 1
  # The same search; only its unit's bookkeeping differs (a unit of one problem now).
  again, before = read(path), read(full_dir / "results.jsonl")
  assert again["beam_m2|2|0|test-L7-0"].pop("unit_problems") == 1
  assert before["beam_m2|2|0|test-L7-0"].pop("unit_problems") == 5
  assert again == before


def test_a_results_path_that_is_a_directory_is_refused(tiny_models, tmp_path):
  config = tiny_sweep_config(tiny_models)
  (tmp_path / "results.jsonl").mkdir()
  with pytest.raises(ValueError, match="is a directory"):
    arith_task.run_search_sweep(config, str(tmp_path))
  with pytest.raises(ValueError, match="No sweep results"):
    sweep.read_results(str(tmp_path / "results.jsonl"))


def test_damaged_exports_name_their_file(tiny_models, tmp_path):
  import shutil
  broken = tmp_path / "prm"
  shutil.copytree(tiny_models / "prm", broken)
  weights = broken / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:100])  # truncated
  with pytest.raises(ValueError, match=r"model.safetensors is damaged"):
    export.load_exported(str(broken))
  (broken / "model.json").write_text('{"kind": "prm", "config": ')
  with pytest.raises(ValueError, match=r"model.json is damaged"):
    export.load_exported(str(broken))


def test_search_report_names_a_workdir_without_a_sweep(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-m", "experiments.search_report", "--workdir",
                        str(tmp_path / "missing")], cwd=root, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode != 0
  assert "holds no sweep" in out.stderr and "FileNotFoundError" not in out.stderr


def test_search_names_a_missing_archive_before_anything_loads(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-m", "experiments.search",
                        "--config=configs/arith/sweep.py", f"--workdir={tmp_path / 'w'}",
                        f"--archive={tmp_path / 'no_archive'}"], cwd=root, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode != 0
  assert "No sweep archive at" in out.stderr and "Traceback" not in out.stderr
  assert not (tmp_path / "w").exists()


def test_a_setting_that_runs_at_no_budget_is_refused_before_anything_is_recorded(
    tiny_models, tmp_path):
  config = tiny_sweep_config(tiny_models)
  config.strategies = [dict(name="beam", beam_width=3, label="beam_m3")]  # divides neither
  with pytest.raises(ValueError, match=r"'beam_m3' runs at none of the budgets \[2, 4\]"):
    arith_task.run_search_sweep(config, str(tmp_path))
  config.strategies = [dict(name="beam", beam_widht=2, label="typo")]
  with pytest.raises(ValueError, match="beam_widht"):
    arith_task.run_search_sweep(config, str(tmp_path))
  config.temperature = -1.0
  config.strategies = [dict(name="beam", beam_width=2, label="beam_m2")]
  with pytest.raises(ValueError, match="temperature"):
    arith_task.run_search_sweep(config, str(tmp_path))
  assert not (tmp_path / "run_config.json").exists()  # the fixed config may run here


def test_a_setting_skipped_at_some_budgets_is_named(caplog):
  settings = [sweep.StrategySetting("beam_m4", "beam", (("beam_width", 4),))]
  with caplog.at_level("WARNING"):
    sweep.check_settings_run(settings, [2, 4, 8])
  assert "'beam_m4' skips budgets [2]" in caplog.text


def test_a_last_line_being_written_is_not_damage(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text('{"key": "a|1|0|p0", "uid": "p0"}\n{"key": "a|1|0|p1", "ui')
  assert [r["uid"] for r in sweep.read_results(str(path))] == ["p0"]
  assert sweep.damaged_lines(str(path)) == []


def _tiny_revision_model(root):
  config = TransformerConfig(vocab_size=testbed.tokenizer().vocab_size, **TINY)
  path = str(root / "revision")
  export.export_model(path, init_params(config, jax.random.PRNGKey(2)), config,
                      extra={"stage": "revision_sft", "attempt_separator": "\n\n\n",
                             "train_tokens": 1000})
  return path


def test_a_sweep_of_revisions_records_chains_and_selects_hierarchically(tiny_models, tmp_path):
  from ttcjax.sweep import report
  config = tiny_sweep_config(tiny_models)
  config.strategies = [dict(name="revisions", chain_length=1, label="revisions_l1"),
                       dict(name="revisions", chain_length=2, label="revisions_l2")]
  with pytest.raises(ValueError, match="revision_dir"):
    arith_task.run_search_sweep(config, str(tmp_path / "none"))
  assert not (tmp_path / "none").exists()  # refused before the workdir records anything
  config.revision_dir = _tiny_revision_model(tmp_path)
  totals = arith_task.run_search_sweep(config, str(tmp_path / "run"))
  assert totals["units_run"] == 8  # L = 1 and 2, at 2 and 4, 10 problems in units of 5
  records = sweep.read_results(str(tmp_path / "run" / "results.jsonl"))
  chained = [r for r in records if r["strategy"] == "revisions_l2" and r["budget"] == 4]
  assert len(chained) == 10 and {r["hyper"]["chain_length"] for r in chained} == {2}
  np.testing.assert_array_equal(report.candidate_chains(chained)[0], [0, 0, 1, 1])
  accuracy = report.problem_accuracy(chained, "hierarchical_last")
  assert accuracy.shape == (10,) and set(np.unique(accuracy)) <= {0.0, 1.0}
  # A chain's second attempt follows a separator: prefill beyond the prompt's, which is
  # all that four independent attempts (L = 1) prefill.
  flat = {r["uid"]: r for r in records if r["strategy"] == "revisions_l1" and r["budget"] == 4}
  for r in chained:
    extra = r["compute"]["policy_prefilled"] - flat[r["uid"]]["compute"]["policy_prefilled"]
    assert 2 * 2 <= extra <= 2 * 3  # per chain: 2 after an EOS (it becomes the first), else 3


def test_a_plain_policy_is_not_a_revision_model(tiny_models):
  with pytest.raises(ValueError, match="not a revision model"):
    testbed.load_revision_model(str(tiny_models / "policy"))
