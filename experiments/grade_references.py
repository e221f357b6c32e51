"""Checks MATH answer extraction and grading against the reference solutions.

  python -m experiments.grade_references --json runs/grade_references.json

For each problem the last `\\boxed{}` of the reference solution is extracted and
graded against the problem's `answer` field; the two should always agree, so every
miss is a bug in extraction or grading (or in the data). With --roundtrip (default)
each answer is also printed back by sympy as LaTeX and graded against itself. Writes
{"n", "agreement", "misses": [{unique_id, extracted, answer, reason}],
"roundtrip_misses", "unparsed_answers", "wall_s", "date", ...} and prints a one-line
summary. --data defaults to MATH-500 in ../shared/data/ beside the repository.
"""

import datetime
import json
import os
import time

from absl import app, flags

from ttcjax.tasks.math import data as math_data, grading as math_grading

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_DATA = os.path.join(_REPO_ROOT, "..", "shared", "data", "math500_test.jsonl")

_DATA = flags.DEFINE_string("data", _DEFAULT_DATA, "MATH JSON-lines file.")
_JSON = flags.DEFINE_string("json", None, "Where to write the results (JSON).")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N problems.")
_TIMEOUT = flags.DEFINE_float("timeout_s", math_grading.DEFAULT_TIMEOUT_S,
                              "Hard limit per answer, in seconds.")
_ROUNDTRIP = flags.DEFINE_bool("roundtrip", True,
                               "Also grade each answer against sympy's LaTeX of it.")


def main(argv):
  del argv
  start = time.perf_counter()
  problems = math_data.load_math(_DATA.value, limit=_LIMIT.value)
  with math_grading.MathGrader(timeout_s=_TIMEOUT.value) as grader:
    results = math_grading.reference_agreement(problems, grader=grader,
                                               roundtrip=_ROUNDTRIP.value)
    results["grader_stats"] = dict(grader.stats)
  results["data"] = os.path.abspath(_DATA.value)
  results["timeout_s"] = _TIMEOUT.value
  results["wall_s"] = time.perf_counter() - start
  results["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2, sort_keys=True)
  print(f"grade_references: {results['n'] - len(results['misses'])}/{results['n']} agree "
        f"({results['agreement']:.2%}), {len(results['misses'])} misses"
        + (f"; round trip: {len(results['roundtrip_misses'])} misses, "
           f"{len(results['unparsed_answers'])} answers unparsed" if _ROUNDTRIP.value else "")
        + f"; {results['wall_s']:.1f} s")


if __name__ == "__main__":
  app.run(main)
