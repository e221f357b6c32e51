"""Smoke test of experiments/bench_search.py on the shipped models: --quick writes a sane JSON."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_writes_json(tmp_path):
  path = tmp_path / "bench.json"
  subprocess.run([sys.executable, "-m", "experiments.bench_search", "--quick", "--json", str(path)],
                 cwd=ROOT, check=True, timeout=600, capture_output=True)
  result = json.loads(path.read_text())
  assert set(result["problems_per_s"]) == {"best_of_n", "beam", "lookahead", "dvts", "rebase"}
  assert all(v > 0 for v in result["problems_per_s"].values())
  assert result["beam_time_per_token_ratio"] > 0 and result["prm_incremental_speedup"] > 0
  # Both ways of scoring give the same step scores.
  assert result["prm"]["max_score_diff"] < 1e-4
  lookahead, beam = result["strategies"]["lookahead"], result["strategies"]["beam"]
  assert lookahead["policy_tokens"] > beam["policy_tokens"]  # rollouts are paid for
