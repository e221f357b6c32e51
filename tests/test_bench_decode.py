"""Smoke test of experiments/bench_decode.py: the --quick run writes a sane JSON."""

import json
import os
import subprocess
import sys



ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_writes_json(tmp_path):
  path = tmp_path / "bench.json"
  subprocess.run(
      [sys.executable, "-m", "experiments.bench_decode", "--quick", "--json", str(path)],
      cwd=ROOT, check=True, timeout=300, capture_output=True)
  result = json.loads(path.read_text())
  for key in ("rows", "params", "matmul_flops_per_s", "copy_bytes_per_s", "platform",
              "device", "date", "hf_cache_implementation"):
    assert key in result, key
  assert result["params"] > 0
  assert result["matmul_flops_per_s"] > 0 and result["copy_bytes_per_s"] > 0
  assert result["logit_max_abs_diff"] < 1e-3
  assert [row["batch"] for row in result["rows"]] == [1, 4]
  for row in result["rows"]:
    for key in ("ttcjax_tokens_per_s", "hf_tokens_per_s", "ratio", "ttcjax_roofline_frac",
                "hf_roofline_frac", "ttcjax_compile_s"):
      assert row[key] > 0, (key, row)
