"""A built wheel carries the shipped models and results, and serves them from a
directory outside the repository (what a `pip install` on Colab relies on)."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a directory that holds no checkpoints/ or results/: the installed package must
# find its own, through the configs' relative paths, and search with them.
_SCRIPT = r"""
import os, sys
import ttcjax
site = sys.argv[1]
assert ttcjax.__file__.startswith(site), ("not the installed copy", ttcjax.__file__)
assert not os.path.exists("checkpoints") and not os.path.exists("results")
from configs.arith import study, sweep as sweep_config
from ttcjax.sweep import archive
from ttcjax.tasks.arith import task as arith_task, testbed
for name in testbed.SHIPPED_MODELS:
  assert testbed.shipped_checkpoint(name).startswith(site), name
config = study.get_config()
for key in ("policy_dir", "large_policy_dir", "revision_dir"):
  testbed.load_policy(config[key])
testbed.load_reward_model(config.prm_dir)
summaries = archive.read("results/arith_sweep_v2")
assert summaries, "the archived sweep did not travel"
config = sweep_config.get_config()
config.problems_per_level = 1
config.budgets = (2,)
config.strategies = [dict(name="best_of_n")]
stats = arith_task.run_search_sweep(config, "sweep")
assert stats["records_written"] == 10, stats
print("ok", len(summaries))
"""


def test_a_wheel_serves_its_shipped_models_outside_the_repo(tmp_path):
  wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
  elsewhere.mkdir()
  # Built from a copy: a build in place would leave build/ in the checkout.
  source = tmp_path / "source"
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
  pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
  subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                        str(source)], check=True, cwd=tmp_path, capture_output=True, timeout=300)
  (wheel,) = wheels.iterdir()
  subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)],
                 check=True, capture_output=True, timeout=300)
  # The installed copy first on the path, ahead of this checkout's editable install.
  env = dict(os.environ, PYTHONPATH=str(site))
  done = subprocess.run([sys.executable, "-c", _SCRIPT, str(site)], cwd=elsewhere, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().startswith("ok")
