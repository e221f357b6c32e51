"""experiments/bench_scale.py at its shrunk size on CPU: every measurement runs and the
JSON holds sane figures (the real-size run needs a GPU or TPU)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shrunk_run_writes_every_figure(tmp_path):
  path = tmp_path / "bench_scale.json"
  subprocess.run([sys.executable, "-m", "experiments.bench_scale", "--shrink", "--runs=1",
                  "--dtype=float32", f"--json={path}"], cwd=ROOT, check=True, timeout=600,
                 capture_output=True)
  result = json.loads(path.read_text())
  assert sorted((r["strategy"], r["budget"]) for r in result["searches"]) == [("beam", 4),
                                                                               ("best_of_n", 4)]
  plans = [r["plan_bytes"] for r in result["searches"]]
  assert plans == sorted(plans)  # smallest planned memory first
  for r in result["searches"]:
    assert r["problems_per_s"] > 0 and r["plan_bytes"] > 0 and r["policy_tokens"] > 0
    # Steps come from the token-id rule: more than one per solution, none past the cap.
    assert 1 <= r["mean_step_tokens"] <= result["caps"]["max_step_tokens"]
    assert r["steps"] > r["problems"] * r["budget"]
  # Best-of-N's PRM reads each problem's prompt once, every generated token, and one
  # suffix token (the Qwen PRM layout) after every step.
  best_of_n, = [r for r in result["searches"] if r["strategy"] == "best_of_n"]
  assert best_of_n["prm_tokens"] == (best_of_n["policy_tokens"] + best_of_n["steps"]
                                     + 2 * result["caps"]["max_prm_prompt_tokens"])
  decode, = result["decode"]
  assert decode["rows"] == 2 * 4 and 0 < decode["roofline_frac_measured"]
  assert 0 < result["prm"]["matmul_frac_measured"]


def test_an_unknown_strategy_is_refused_before_any_model_is_built(tmp_path):
  run = subprocess.run([sys.executable, "-m", "experiments.bench_scale", "--shrink",
                        "--strategies=best_of_n,bream"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode != 0 and "bream" in run.stderr and "measured" not in run.stdout
