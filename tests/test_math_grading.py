"""MATH-style grading (ttcjax.tasks.math.grading): math-verify grading in its worker
process (equivalent forms, timeouts, a killed worker, threads, what each process
imports), canonical keys and answer groups, and the reference check on MATH-500 (when
../shared/data has it)."""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import pytest

from ttcjax.tasks.math import grading as math_grading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATH500 = os.path.join(ROOT, "..", "shared", "data", "math500_test.jsonl")


@pytest.fixture(scope="module")
def grader():
  with math_grading.MathGrader(timeout_s=5.0) as g:
    yield g


# --------------------------------------------------------------------------- grading


@pytest.mark.parametrize("candidate, reference, expected", [
    ("0.5", r"\frac12", True),
    (r"\dfrac{1}{2}", r"\frac12", True),
    ("1/2", "0.5", True),
    (r"\sqrt{8}", r"2\sqrt2", True),
    ("90", r"90^\circ", True),
    ("36", r"\$36", True),
    ("[-2, 7]", r"x \in [-2,7]", True),
    (r"\left[ -2, 7 \right]", "[-2,7]", True),
    ("(-2, 7)", "[-2,7]", False),  # open and closed intervals differ
    (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty,2)\cup(3,\infty)", True),
    (r"\{2, 1\}", r"\{1,2\}", True),  # sets ignore order
    ("2, 1", "1,2", True),  # so do bare lists
    ("(31,6,-1)", "(6,31,-1)", False),  # tuples keep it
    ("(6, 31, -1)", "(6,31,-1)", True),
    ("C", r"\text{(C)}", True),
    ("(C)", r"\text{(C)}", True),
    (r"\text{(B)}", r"\text{(C)}", False),
    ("Evelyn", r"\text{Evelyn}", True),
    ("6 + 9 i", "6+9i", True),  # math-verify alone reads these two i's differently
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", False),
    ("y=2x+3", "y = 2x + 3", True),
    ("3", "4", False),
    ("4.67", r"\frac{14}{3}", False),
    (None, "1", False),
    ("  ", "1", False),
])
def test_grade_equivalent_forms(grader, candidate, reference, expected):
  assert grader.grade(candidate, reference) is expected


def test_module_level_grade():
  assert math_grading.grade(r"\frac{3}{6}", "0.5")
  assert not math_grading.grade("0.6", "0.5")


@pytest.mark.parametrize("candidate", [
    "9^{9^{9^{9}}}",
    "(" * 3000 + "1" + ")" * 3000,
    "1" + "+1" * 20000,
])
def test_pathological_input_times_out_as_false(grader, candidate):
  start = time.monotonic()
  equal, reason = grader.grade_with_reason(candidate, "2", timeout_s=1.0)
  assert not equal
  assert reason in ("timeout", "not equal", "died", "too deeply nested", "too long") \
      or reason.endswith("Error")
  assert time.monotonic() - start < 3.0
  assert grader.grade("2", "2.0")  # the grader still works


def test_hard_deadline_kills_a_stuck_worker(grader):
  # "_stall" blocks the worker's alarm, as a long C call would; only the kill helps.
  kills = grader.stats["kills"]
  start = time.monotonic()
  assert grader._call("_stall", [60], 0.5) == (None, "timeout")
  assert time.monotonic() - start < 2.0
  assert grader.stats["kills"] == kills + 1
  assert grader.grade("0.25", r"\frac14")  # a new worker takes over


def test_dead_worker_is_restarted(grader):
  assert grader.grade("1", "1.0")
  restarts = grader.stats["restarts"]
  grader._worker.process.kill()
  grader._worker.process.wait()
  assert grader.grade("1", "1.0")
  assert grader.stats["restarts"] == restarts + 1


def test_grade_from_threads(grader):
  # math-verify's own signal.alarm timeout raises ValueError outside the main thread.
  pairs = [("0.5", r"\frac12", True), ("3", "4", False)] * 4
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(lambda p: grader.grade(p[0], p[1]), pairs))
  assert results == [p[2] for p in pairs]


def test_bad_arguments_raise(grader):
  with pytest.raises(ValueError, match="timeout_s"):
    math_grading.MathGrader(timeout_s=0)
  with pytest.raises(ValueError, match="reference"):
    grader.grade("1", None)


def test_caller_never_imports_sympy():
  # All sympy work happens in the worker; the caller stays light (and unharmed).
  code = ("import sys; from ttcjax.tasks.math import grading as m; "
          "assert m.grade('0.5', r'\\frac12'); assert m.canonical_key('1') == '1'; "
          "assert 'sympy' not in sys.modules and 'math_verify' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_worker_never_imports_jax(grader):
  # The worker loads math_data.py and math_grading.py by path; the ttcjax package (and
  # with it JAX) must never run there.
  assert grader.grade("0.5", r"\frac12")
  assert grader.canonical_key("x = 5") == grader.canonical_key("5")
  modules, error = grader._call("_modules", [], 5.0)
  assert error is None
  assert {"ttcjax.tasks.math.data", "ttcjax.tasks.math.grading", "sympy"} <= set(modules)
  assert not [m for m in modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax")]
  assert "ttcjax" not in modules and "ttcjax.tasks" not in modules
  assert "ttcjax.tasks.math" not in modules


# ------------------------------------------------------------------ keys and groups


def test_canonical_keys(grader):
  halves = [r"\frac12", "0.5", r"\dfrac{1}{2}", "1/2", r"\left(\frac{1}{2}\right)"]
  assert len({grader.canonical_key(a) for a in halves}) == 1
  assert grader.canonical_key("x = 5") == grader.canonical_key("5")
  assert grader.canonical_key(r"\{3, 1\}") == grader.canonical_key("1, 3")
  assert grader.canonical_key(r"\frac{2}{\sqrt2}") == grader.canonical_key(r"\sqrt{2}")
  distinct = [r"\frac12", r"\frac13", "(1,3)", "[1,3]", r"\text{(B)}", r"\text{(C)}"]
  assert len({grader.canonical_key(a) for a in distinct}) == len(distinct)
  assert grader.canonical_key(None) is None and grader.canonical_key(" ") is None
  assert math_grading.canonical_key("0.25") == math_grading.canonical_key(r"\frac{1}{4}")


def test_answers_past_the_limits_are_not_judged_and_are_counted(grader):
  nest = lambda depth: r"\frac{" * depth + "1" + "}{2}" * depth
  nested = nest(20)  # 2^-20 in 181 characters
  before = grader.stats["unjudgeable"]
  start = time.monotonic()
  assert grader.grade_with_reason(nested, "0.5") == (False, "too deeply nested")
  # 2^-500, which math-verify's partial parse once read as 1/2.
  assert grader.grade_with_reason(nest(500), "0.5") == (False, "too long")
  assert grader.grade_with_reason(r"7 \boxed{0.5}", "0.5") == (False, "holds a box")
  assert grader.grade_with_reason("1" * 300, "1" * 299) == (False, "too long")
  groups = grader.group_answers([nested, r"\frac12", "0.5"])
  assert groups[1] == groups[2] != groups[0]  # it does not vote with 1/2
  assert time.monotonic() - start < 10  # no parse of it was attempted
  assert grader.stats["unjudgeable"] - before == 5
  assert math_grading.unjudgeable(r"\begin{pmatrix} 16/49 \\ 48/49 \end{pmatrix}") is None


def test_group_answers_stops_grading_at_its_time_budget(grader):
  before = grader.stats["budget_stops"]
  groups = grader.group_answers([r"\frac12", "0.5", "0.5"], budget_s=0.0)
  assert groups[1] == groups[2] != groups[0]  # keyed by text only: no parse, no comparison
  assert grader.stats["budget_stops"] - before == 1


def test_unparseable_key_falls_back_to_text(grader):
  key, parsed = grader.canonical_key_with_flag("9^{9^{9^{9}}}", timeout_s=1.0)
  assert (key, parsed) == ("9^{9^{9^{9}}}", False)


def test_group_answers(grader):
  answers = [r"\frac12", "Evelyn", "0.5", r"\text{Evelyn}", r"\frac13", None, "x=5", "5",
             "0.5"]
  groups = grader.group_answers(answers)
  assert groups[0] == groups[2] == groups[8] == grader.canonical_key(r"\frac12")
  assert groups[1] == groups[3]  # different keys, merged by math-verify
  assert groups[6] == groups[7]
  assert groups[5] is None
  assert len({g for g in groups if g is not None}) == 4
  # Without comparisons, only the keys group.
  capped = grader.group_answers(answers, max_comparisons=0)
  assert capped[0] == capped[2] and capped[1] != capped[3]
  assert math_grading.group_answers(["1/2", "0.5"])[0] == math_grading.group_answers(["0.5"])[0]


# ------------------------------------------------------------- the reference check


def test_grade_references_first_20(tmp_path):
  if not os.path.isfile(MATH500):
    pytest.skip(f"MATH-500 is not at {os.path.normpath(MATH500)} (../shared/data beside "
                "the repository); the reference check needs it.")
  out = tmp_path / "refs.json"
  run = subprocess.run([sys.executable, "-m", "experiments.grade_references", "--data", MATH500,
                        "--limit", "20", "--json", str(out)],
                       cwd=ROOT, check=True, timeout=120, capture_output=True, text=True)
  assert "20/20 agree" in run.stdout
  result = json.loads(out.read_text())
  assert result["n"] == 20 and result["agreement"] == 1.0 and result["misses"] == []
  assert result["unparsed_answers"] == [] and result["wall_s"] > 0 and result["date"]
