"""The main job: the compute-optimal scaling study on the shipped testbed, end to end.

  python -m experiments.reproduce --workdir runs/study
  python -m experiments.reproduce --workdir runs/study_quick --config=configs/arith/study.py:quick

The same study on MATH-500 with open checkpoints (see docs/math500.md, the real research run):

  python -m experiments.reproduce --config configs/math500/qwen_math1p5b_prm7b.py \
      --workdir runs/math_study --config.policy_dir=... --config.prm_dir=...

Runs the search sweep, the difficulty samples and the larger policy's greedy answers
(each resumable), then the analysis, and writes WORKDIR/report.md, summary.json,
study.json, the fitted allocations and the figures. See configs/arith/study.py for
the sizes and ttcjax/study/runner.py for the stages.

On several hosts, start one process per host with the same flags and --distributed
(and, outside a cluster environment JAX recognises, --coordinator_address,
--num_processes and --process_id; see experiments/search.py): every stage's search
spans all hosts' devices, and process 0 alone writes the outputs into WORKDIR, which
must be on a filesystem all hosts share.
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from experiments import distributed
from ttcjax import parallel, sweep, tasks

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "arith", "study.py"), "The study config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (resumed if it holds this study).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  distributed.run(run)


def run():
  bars = {}

  def progress(stage, stats):
    if stage not in bars:
      for bar in bars.values():
        bar.close()
      bars[stage] = tqdm(desc=f"search: {stage}", unit="unit", disable=None)
    bar = bars[stage]
    bar.total = stats["units_total"]
    bar.n = stats["units_run"] + stats["units_skipped"]
    bar.set_postfix(sweep.progress_postfix(stats))
    bar.refresh()
    if bar.disable:  # not a terminal (a run in the background): one log line a unit
      postfix = sweep.progress_postfix(stats)
      logging.info("study %s: search units %d/%d, %s tokens/s, %s left", stage, bar.n,
                   bar.total, postfix["tok_s"], postfix["left"])

  summary = tasks.task_of(_CONFIG.value).run_study(_CONFIG.value, _WORKDIR.value, progress)
  for bar in bars.values():
    bar.close()
  if parallel.is_writer():
    print(f"Wrote {os.path.join(_WORKDIR.value, 'report.md')} in {summary['wall_s']:.0f} s.")
  else:
    print(f"Process 0 writes {os.path.join(_WORKDIR.value, 'report.md')}.")
  print("efficiency ratio (best-of-N weighted budget / compute-optimal budget):")
  print(json.dumps(summary["efficiency_ratio"], indent=1))


if __name__ == "__main__":
  app.run(main)
