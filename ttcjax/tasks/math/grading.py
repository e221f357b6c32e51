"""MATH-style grading: answer equivalence with math-verify, in an isolated process.

`grade` decides whether a candidate answer equals the reference with `math-verify`
(sympy underneath), so `\\frac12`, `0.5` and `\\dfrac{1}{2}` are one answer;
`canonical_key` and `group_answers` give the equivalence classes that majority voting
counts; `reference_agreement` checks extraction (`math_data.extract_boxed`) and
grading on reference solutions. `math_data.normalize_text` is the textual shortcut.

Isolation. Parsing and comparing arbitrary model output with sympy can take unbounded
time or memory (`9^{9^{9^{9}}}`, a thousand nested brackets), so all of it runs in one
long-lived worker process per `MathGrader` (started lazily) that the caller kills at a
hard per-answer deadline and restarts on the next call; a timeout or any failure
grades as "not equal" and never raises. math-verify's own timeouts use `signal.alarm`:
it raises ValueError outside the main thread, takes whole seconds, replaces the host's
SIGALRM handler and runs only between bytecodes, so a long C call (a huge integer
product) or a memory blow-up would still stall or kill the caller. In the worker (its
own main thread) a `setitimer` alarm at 80% of the deadline stops slow Python-level
sympy work and keeps the worker; the hard kill (a restart, under a second here) is
for what that alarm cannot stop.

The worker is a plain `python -P -c` subprocess, not a `multiprocessing` child (spawn
re-imports the parent's `__main__`; fork copies a process that may hold JAX's
threads). Its bootstrap loads data.py, then this file, by path and under their
module names, so the `from ttcjax.tasks.math.data import` below finds the data module in
`sys.modules` and the `ttcjax` package (which imports JAX) never runs. Both modules
import only the standard library (this one also math_data) at the top; math-verify
and sympy are imported in the worker only. POSIX only (pipes are waited on with
`select`).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Sequence

# Only this `from` form (not `import ttcjax.tasks.math.data`) skips the package.
from ttcjax.tasks.math.data import MathProblem, extract_boxed, normalize_text

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_COMPARISONS = 256
DEFAULT_PROBLEM_BUDGET_S = 30.0  # grading time per problem in `group_answers`
# Answers past these limits are not judged (math-verify's partial parse of a deeply nested
# answer can come back as a wrong but plausible value). MATH-500's references are at most
# 53 characters and 2 braces deep, so the limits are far from any real answer.
MAX_ANSWER_CHARS = 256
MAX_ANSWER_NESTING = 10  # brackets of any kind, {[( together
_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core machine can take long
_SOFT_SHARE = 0.8  # the worker's own alarm fires at this share of the hard deadline
_WORKER_MEMORY_BYTES = 4 << 30  # address-space cap: a blow-up is a MemoryError there
_HERE = os.path.dirname(os.path.abspath(__file__))
# What the worker's bootstrap loads, in order: module name, file, name, file.
_WORKER_ARGS = ("ttcjax.tasks.math.data", os.path.join(_HERE, "data.py"),
                "ttcjax.tasks.math.grading", os.path.join(_HERE, "grading.py"))


def unjudgeable(answer: str) -> str | None:
  """Why `answer` is not for math-verify to judge, or None if it is.

  Three cases: longer than `MAX_ANSWER_CHARS`, brackets nested deeper than
  `MAX_ANSWER_NESTING` (math-verify parses a prefix of such text, e.g. `1/2` for
  `\\frac{...}{2}` nested 500 deep), or a `\\boxed`/`\\fbox` inside (math-verify
  would grade by that inner box, not by the answer).
  """
  if len(answer) > MAX_ANSWER_CHARS:
    return "too long"
  depth = deepest = 0
  for char in answer:
    if char in "{[(":
      depth += 1
      deepest = max(deepest, depth)
    elif char in "}])":
      depth = max(depth - 1, 0)
  if deepest > MAX_ANSWER_NESTING:
    return "too deeply nested"
  if "\\boxed" in answer or "\\fbox" in answer:
    return "holds a box"
  return None


# ------------------------------------------------------------------- the worker side
# Everything in this section runs in the worker process only.


class _SoftTimeout(BaseException):
  """Raised by the worker's alarm; a BaseException so math-verify's `except Exception`
  handlers let it through to the request loop."""


def _worker_parse(text: str) -> list:
  """math-verify's parse of one answer: [sympy object, its text] (either may be missing)."""
  import sympy  # pylint: disable=import-outside-toplevel
  from math_verify import parse  # pylint: disable=import-outside-toplevel
  # Wrapping in \boxed{} makes math-verify take the whole string as the answer (a bare
  # "\frac{1}{2}" has no delimiters for its LaTeX extraction to find). Its own alarm is
  # off (parsing_timeout=None): the request's alarm covers parsing and comparing.
  parsed = parse("\\boxed{" + text + "}", parsing_timeout=None)
  # math-verify reads "i" as Symbol("i", real=False) where it stands alone ("6 + 9 i")
  # and as Symbol("i", real=True) elsewhere ("6+9i"), and the two never compare equal:
  # make every "i" the latter. (Not sympy.I: words parse as products of letters, and
  # "ellipse" must still equal \text{ellipse}.)
  return [p if isinstance(p, str) else _unify_i(p, sympy) for p in parsed]


def _unify_i(expr, sympy):
  real_i = sympy.Symbol("i", real=True)
  mapping = {s: real_i for s in expr.free_symbols if s.name == "i" and s != real_i}
  return expr.xreplace(mapping) if mapping else expr


def _worker_grade(candidate: str, reference: str) -> bool:
  from math_verify import verify  # pylint: disable=import-outside-toplevel
  gold, target = _worker_parse(reference), _worker_parse(candidate)
  if not gold or not target:
    return False
  return bool(verify(gold, target, timeout_seconds=None))


def _worker_canonical(expr):
  """Simplifies each small expression inside sets, tuples, intervals, equations and
  matrices: simplify merges forms like 2/sqrt(2) and sqrt(2), and x*(-1*2) and -2*x.
  Bounded by size because simplify can be slow; group_answers catches what it misses."""
  import sympy  # pylint: disable=import-outside-toplevel
  if isinstance(expr, sympy.MatrixBase):
    return expr.applyfunc(_worker_canonical)
  if isinstance(expr, sympy.Expr):
    return sympy.simplify(expr) if sympy.count_ops(expr) <= 40 else expr
  if isinstance(expr, sympy.Basic) and expr.args:
    return expr.func(*[_worker_canonical(arg) for arg in expr.args])
  return expr


def _worker_key(answer: str) -> str | None:
  import sympy  # pylint: disable=import-outside-toplevel
  parsed = [p for p in _worker_parse(answer) if not isinstance(p, str)]
  if not parsed:
    return None
  expr = parsed[0]
  # 0.5 and 1/2 must vote together: floats become the rationals they spell.
  floats = expr.atoms(sympy.Float)
  if floats:
    expr = expr.xreplace({f: sympy.Rational(str(f)) for f in floats})
  # "x = 5" and "5", "x \in [1,2]" and "[1,2]" are one answer, as math-verify grades
  # an assignment against a bare value.
  if (isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol)
      and expr.lhs not in expr.rhs.free_symbols):
    expr = expr.rhs
  text = sympy.sstr(_worker_canonical(expr), order="lex")
  return " ".join(text.split())  # matrices print on several lines


def _worker_latex(answer: str) -> str | None:
  """The parsed answer printed back as LaTeX by sympy (None if it does not parse)."""
  import sympy  # pylint: disable=import-outside-toplevel
  parsed = [p for p in _worker_parse(answer) if not isinstance(p, str)]
  return sympy.latex(parsed[0]) if parsed else None


def _worker_stall(seconds: float) -> None:
  """For tests of the hard deadline: a call the alarm cannot interrupt (SIGALRM is
  blocked), as a long C call would be."""
  signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
  time.sleep(seconds)


def _worker_modules() -> list[str]:
  """For tests: the names of the modules the worker has imported (never jax, ttcjax)."""
  return sorted(sys.modules)


_HANDLERS = {"grade": _worker_grade, "key": _worker_key, "latex": _worker_latex,
             "_stall": _worker_stall, "_modules": _worker_modules}


def _serve() -> None:
  """The worker's loop: one JSON request per stdin line, one JSON reply per line."""
  # Replies go to a private copy of stdout; anything a library prints goes to stderr.
  replies = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
  os.dup2(2, 1)
  sys.stdout = sys.stderr
  logging.disable(logging.WARNING)  # math-verify logs every failed parse
  try:
    import resource  # pylint: disable=import-outside-toplevel
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > _WORKER_MEMORY_BYTES:
      resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, hard))
  except (ImportError, ValueError, OSError):
    pass
  _worker_grade("1", "1")  # import and warm up before saying ready

  def on_alarm(signum, frame):
    del signum, frame
    raise _SoftTimeout()

  signal.signal(signal.SIGALRM, on_alarm)
  replies.write(json.dumps({"ready": True}) + "\n")
  for line in sys.stdin:
    request = json.loads(line)
    reply: dict[str, Any] = {"id": request["id"]}
    try:
      try:
        signal.setitimer(signal.ITIMER_REAL, request["soft_s"])
        reply["value"] = _HANDLERS[request["op"]](*request["args"])
      finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _SoftTimeout:
      reply["error"] = "timeout"
    except Exception as e:  # pylint: disable=broad-except  (MemoryError, RecursionError, ...)
      reply["error"] = f"{type(e).__name__}"
    replies.write(json.dumps(reply) + "\n")


_BOOTSTRAP = """
import importlib.util, sys
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
module._serve()
"""


# ------------------------------------------------------------------- the caller side


class _Worker:
  """One worker process and its pipes. Not thread-safe (MathGrader locks)."""

  def __init__(self):
    # -P: the current directory must not shadow modules; a new session: Ctrl-C in a
    # terminal goes to the caller only, and the worker exits when its stdin closes.
    self.process = subprocess.Popen(
        [sys.executable, "-P", "-c", _BOOTSTRAP, *_WORKER_ARGS],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
    self.pid = os.getpid()
    self._buffer = b""
    self._next_id = 0
    ready = self._read_line(_STARTUP_TIMEOUT_S)
    if ready is None or not json.loads(ready).get("ready"):
      self.close()
      raise RuntimeError("The math-verify worker process did not start (see its stderr "
                         "above); check that `python -c 'import math_verify'` works.")

  def _read_line(self, timeout_s: float) -> bytes | None:
    deadline = time.monotonic() + timeout_s
    fd = self.process.stdout.fileno()
    while b"\n" not in self._buffer:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([fd], [], [], left)[0]:
        return None
      chunk = os.read(fd, 1 << 16)
      if not chunk:  # the worker died
        return None
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    return line

  def call(self, op: str, args: list, timeout_s: float) -> tuple[Any, str | None]:
    """Runs one request; (value, None) or (None, error). On "timeout"/"died" the
    worker is dead (killed here) and must be replaced."""
    self._next_id += 1
    request = {"id": self._next_id, "op": op, "args": args, "soft_s": _SOFT_SHARE * timeout_s}
    try:
      self.process.stdin.write((json.dumps(request) + "\n").encode())
    except (BrokenPipeError, OSError):
      self.close()
      return None, "died"
    line = self._read_line(timeout_s)
    if line is None:
      alive = self.process.poll() is None
      self.close()
      return None, "timeout" if alive else "died"
    try:
      reply = json.loads(line)
    except json.JSONDecodeError:
      reply = {}
    if reply.get("id") != self._next_id:  # cannot happen unless the protocol broke
      self.close()
      return None, "died"
    if "error" in reply:
      return None, reply["error"]
    return reply["value"], None

  def alive(self) -> bool:
    return self.pid == os.getpid() and self.process.poll() is None

  def close(self) -> None:
    if self.pid != os.getpid():  # a forked child must not kill its parent's worker
      return
    if self.process.poll() is None:
      self.process.kill()
    self.process.wait()
    for pipe in (self.process.stdin, self.process.stdout):
      try:
        pipe.close()
      except OSError:
        pass


class MathGrader:
  """Answer equivalence with math-verify in an isolated worker process.

  Thread-safe (calls are serialized). The worker starts on the first call and is
  restarted after a timeout; `close()` (or exiting the process) ends it.

  Attributes:
    timeout_s: the default hard limit per answer (parsing plus comparison).
    stats: counts so far of "calls", "timeouts" (of which "kills": the worker had to be
      killed at the hard deadline), "errors", "restarts", "unjudgeable" (answers past
      the size limits, `unjudgeable`) and "budget_stops" (`group_answers` calls that hit
      their per-problem time budget).
  """

  def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
    if not timeout_s > 0:
      raise ValueError(f"timeout_s={timeout_s!r}: expected a positive number of seconds.")
    self.timeout_s = float(timeout_s)
    self.stats = {"calls": 0, "timeouts": 0, "kills": 0, "errors": 0, "restarts": 0,
                  "unjudgeable": 0, "budget_stops": 0}
    self._worker: _Worker | None = None
    self._lock = threading.Lock()

  def _call(self, op: str, args: list, timeout_s: float | None) -> tuple[Any, str | None]:
    timeout_s = self.timeout_s if timeout_s is None else float(timeout_s)
    with self._lock:
      if self._worker is None or not self._worker.alive():
        if importlib.util.find_spec("math_verify") is None:
          raise ValueError("Grading MATH answers needs the `math-verify` package: "
                           "`pip install math-verify`.")
        if self._worker is not None:
          self.stats["restarts"] += 1
        self._worker = _Worker()
      self.stats["calls"] += 1
      value, error = self._worker.call(op, args, timeout_s)
      if error == "timeout":
        self.stats["timeouts"] += 1
        if not self._worker.alive():
          self.stats["kills"] += 1
      elif error is not None:
        self.stats["errors"] += 1
      return value, error

  def grade_with_reason(self, candidate: str | None, reference: str,
                        timeout_s: float | None = None,
                        text_shortcut: bool = True) -> tuple[bool, str]:
    """Like `grade`, with why: "equal", "not equal", "no answer" (candidate None or
    blank), "timeout", the worker's error name, or why the candidate cannot be judged
    (`unjudgeable`: such an answer is not equal). `text_shortcut=False` sends even
    textually equal answers through math-verify (to test math-verify itself)."""
    if not isinstance(reference, str):
      raise ValueError(f"reference={reference!r}: expected the reference answer as a string.")
    if candidate is None or not candidate.strip():
      return False, "no answer"
    if text_shortcut and normalize_text(candidate) == normalize_text(reference):
      return True, "equal"  # the same text: no need to parse
    reason = unjudgeable(candidate)
    if reason is not None:
      self.stats["unjudgeable"] += 1
      return False, reason
    value, error = self._call("grade", [candidate, reference], timeout_s)
    if error is not None:
      return False, error
    return bool(value), "equal" if value else "not equal"

  def grade(self, candidate: str | None, reference: str,
            timeout_s: float | None = None) -> bool:
    """Whether `candidate` is the same answer as `reference`; never raises for any
    input (a timeout or failure is False). See the module-level `grade`."""
    return self.grade_with_reason(candidate, reference, timeout_s)[0]

  def canonical_key_with_flag(self, answer: str | None,
                              timeout_s: float | None = None) -> tuple[str | None, bool]:
    """(canonical_key(answer), whether math-verify parsed it: False for a key that fell
    back to the answer's normalized text, as it does for an answer past the size
    limits, `unjudgeable`)."""
    if answer is None or not answer.strip():
      return None, False
    if unjudgeable(answer) is not None:
      self.stats["unjudgeable"] += 1
      return normalize_text(answer), False
    value, error = self._call("key", [answer], timeout_s)
    if error is None and value is not None:
      return value, True
    return normalize_text(answer), False

  def render_latex(self, answer: str, timeout_s: float | None = None) -> str | None:
    """The answer as math-verify parses it, printed back as LaTeX by sympy; None when
    it does not parse (or on a timeout or error)."""
    return self._call("latex", [answer], timeout_s)[0]

  def canonical_key(self, answer: str | None, timeout_s: float | None = None) -> str | None:
    """See the module-level `canonical_key`."""
    return self.canonical_key_with_flag(answer, timeout_s)[0]

  def group_answers(self, answers: Sequence[str | None], timeout_s: float | None = None,
                    max_comparisons: int = DEFAULT_MAX_COMPARISONS,
                    budget_s: float = DEFAULT_PROBLEM_BUDGET_S) -> list[str | None]:
    """See the module-level `group_answers`."""
    deadline = time.monotonic() + budget_s
    over_budget = lambda: time.monotonic() > deadline
    memo: dict[str, tuple[str | None, bool]] = {}
    keyed = []
    for answer in answers:
      if answer is not None and answer in memo:
        keyed.append(memo[answer])
      elif answer is not None and answer.strip() and over_budget():
        keyed.append((normalize_text(answer), False))  # no time left: its text is its key
        memo[answer] = keyed[-1]
      else:
        keyed.append(self.canonical_key_with_flag(answer, timeout_s))
        if answer is not None:
          memo[answer] = keyed[-1]
    representative: dict[str, str] = {}  # key -> the key of its group's first member
    parsed_reps: list[tuple[str, str]] = []  # (key, answer) of groups that parsed
    comparisons = 0
    for answer, (key, parsed) in zip(answers, keyed):
      if key is None or key in representative:
        continue
      representative[key] = key
      if not parsed:  # math-verify would only compare its text, which the key already is
        continue
      for rep_key, rep_answer in parsed_reps:
        if comparisons >= max_comparisons or over_budget():
          break
        comparisons += 1
        if self.grade(answer, rep_answer, timeout_s):
          representative[key] = rep_key
          break
      if representative[key] == key:
        parsed_reps.append((key, answer))
    if over_budget():
      self.stats["budget_stops"] += 1
    return [None if key is None else representative[key] for key, _ in keyed]

  def close(self) -> None:
    """Ends the worker process (a later call starts a new one)."""
    with self._lock:
      if self._worker is not None:
        self._worker.close()
        self._worker = None

  def __enter__(self) -> "MathGrader":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


_DEFAULT_GRADER: MathGrader | None = None
_DEFAULT_LOCK = threading.Lock()


def default_grader() -> MathGrader:
  """The process-wide grader behind `grade`, `canonical_key` and `group_answers`."""
  global _DEFAULT_GRADER
  with _DEFAULT_LOCK:
    if _DEFAULT_GRADER is None:
      _DEFAULT_GRADER = MathGrader()
      atexit.register(_DEFAULT_GRADER.close)
    return _DEFAULT_GRADER


def grade(candidate: str | None, reference: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """Whether a candidate final answer equals the reference answer (math-verify).

  Equivalent forms are equal: `\\frac12` = `0.5` = `\\dfrac{1}{2}`, `[-2, 7]` =
  `x \\in [-2,7]`, `\\{1,2\\}` = `\\{2,1\\}`, `\\text{(C)}` = `C`; ordered tuples keep
  their order. Never raises and never runs past `timeout_s` (plus a worker start).

  Args:
    candidate: an extracted final answer (e.g. `extract_boxed(generation)`), LaTeX or
      plain text without `$`; None when there was none.
    reference: the reference answer, e.g. `MathProblem.answer`.
    timeout_s: hard limit in seconds for parsing and comparing this pair.

  Returns:
    True when math-verify finds them equal; False when not, when the candidate is
    None/blank, or on a timeout or any error.
  """
  return default_grader().grade(candidate, reference, timeout_s)


def canonical_key(answer: str | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
  """One string per equivalence class of answers, for majority voting.

  The answer is parsed with math-verify, floats become exact rationals, small
  expressions are simplified, and sympy prints the result: `\\frac12`, `0.5`,
  `\\dfrac{1}{2}` and `1/2` all give "1/2". What does not parse (or times out) falls
  back to `normalize_text(answer)`. Keys of some equal answers still differ
  (`x \\in [1,2]` vs `[1,2]`); `group_answers` merges those.

  Args:
    answer: an extracted final answer, or None.
    timeout_s: hard limit in seconds for this answer.

  Returns:
    The key, or None for a None/blank answer.
  """
  return default_grader().canonical_key(answer, timeout_s)


def group_answers(answers: Sequence[str | None], timeout_s: float = DEFAULT_TIMEOUT_S,
                  max_comparisons: int = DEFAULT_MAX_COMPARISONS,
                  budget_s: float = DEFAULT_PROBLEM_BUDGET_S) -> list[str | None]:
  """Group keys for a list of answers: equal answers share one key.

  Answers are first keyed by `canonical_key`; then, in order of first appearance,
  each new key's answer is compared (`grade`, with the earlier one as the reference)
  against the representatives of the groups so far and joins the first it equals,
  else starts a group. Every key maps to a representative that maps to itself, so
  groups never chain (A=B, B=C does not merge A with C unless A=C). Answers whose
  key fell back to text are not compared. After `max_comparisons` comparisons the
  remaining keys stay as they are (bounds the time at max_comparisons * timeout_s).
  After `budget_s` seconds the rest is keyed by its normalized text and no more
  comparisons run (64 pathological answers at about 4 s each would otherwise take
  minutes for one problem; counted in the grader's "budget_stops"). Answers past the
  size limits (`unjudgeable`) are keyed by their text and never compared.

  Args:
    answers: [N] extracted answers (None: no answer).
    timeout_s: hard limit per answer and per comparison.
    max_comparisons: cap on pairwise comparisons.
    budget_s: grading time for the whole list (one problem's candidates).

  Returns:
    [N] group keys (each the canonical key of the group's first answer), None where
    the answer was None/blank.
  """
  return default_grader().group_answers(answers, timeout_s, max_comparisons, budget_s)


def reference_agreement(problems: Iterable[MathProblem], timeout_s: float = DEFAULT_TIMEOUT_S,
                        grader: MathGrader | None = None, roundtrip: bool = True) -> dict:
  """Checks extraction and grading on the references.

  The boxed answer of each reference solution should grade equal to the `answer`
  field. Every pair goes through math-verify, even when the texts match (in MATH-500
  they all do), so this also checks that each reference answer equals itself. With
  `roundtrip`, each answer is also parsed, printed back as LaTeX by sympy (another
  spelling: "x \\in [-2,7]" -> "x = \\left[-2, 7\\right]", "10,\\!080" -> "10080",
  "6 - 5i" -> "\\left(-1\\right) 5 i + 6") and graded against the original, which
  must agree too.

  Returns:
    {"n", "agreement" (share that agreed), "text_identical" (share whose normalized
    texts already match), "misses": [{"unique_id", "extracted", "answer", "reason"}]
    with reason "no box", "timeout", "not equal" or the worker's error name;
    with `roundtrip` also "unparsed_answers": [unique_id] of answers math-verify does
    not parse (grading against them is textual only) and "roundtrip_misses":
    [{"unique_id", "rendered", "answer", "reason"}]}.
  """
  grader = grader or default_grader()
  n, identical, misses, unparsed, roundtrip_misses = 0, 0, [], [], []
  for problem in problems:
    n += 1
    extracted = extract_boxed(problem.solution)
    if extracted is None:
      equal, reason = False, "no box"
    else:
      identical += normalize_text(extracted) == normalize_text(problem.answer)
      equal, reason = grader.grade_with_reason(extracted, problem.answer, timeout_s,
                                               text_shortcut=False)
    if not equal:
      misses.append({"unique_id": problem.unique_id, "extracted": extracted,
                     "answer": problem.answer, "reason": reason})
    if roundtrip:
      rendered = grader.render_latex(problem.answer, timeout_s)
      if rendered is None:  # does not parse, or a timeout
        unparsed.append(problem.unique_id)
        continue
      equal, reason = grader.grade_with_reason(rendered, problem.answer, timeout_s,
                                               text_shortcut=False)
      if not equal:
        roundtrip_misses.append({"unique_id": problem.unique_id, "rendered": rendered,
                                 "answer": problem.answer, "reason": reason})
  if n == 0:
    raise ValueError("reference_agreement got no problems.")
  result = {"n": n, "agreement": (n - len(misses)) / n, "text_identical": identical / n,
            "misses": misses}
  if roundtrip:
    result.update(unparsed_answers=unparsed, roundtrip_misses=roundtrip_misses)
  return result
