"""MATH-style data: problems, final-answer extraction and text normalisation.

Data: `load_math` reads a local JSON-lines file with the fields of the Hugging Face
dataset `HuggingFaceH4/MATH-500` (`problem, solution, answer, subject, level,
unique_id`) into `MathProblem`s; `load_math_hub` reads the dataset itself when
`datasets` is installed.

Answers: `extract_boxed` takes the final answer out of a solution or a generation (the
last `\\boxed{...}` / `\\fbox{...}`; None when there is none or it never closes).
`normalize_text` is a purely textual normal form (spacing, `\\left`/`\\right`,
`\\dfrac`); equivalence of answers (`\\frac12` = `0.5`) is `math_grading`'s job.

This module imports only the standard library: the grading worker process loads it by
file path (see `math_grading`), so it must not import JAX, ttcjax or sympy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Sequence

_FIELDS = ("problem", "solution", "answer", "subject", "level", "unique_id")


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class MathProblem:
  """One MATH problem.

  Attributes:
    problem: the question (LaTeX in Markdown).
    solution: the reference solution; its last `\\boxed{}` holds the answer.
    answer: the reference final answer (LaTeX without `$` or a box).
    subject: e.g. "Algebra", "Precalculus".
    level: difficulty 1..5, None where the source gives none ("Level ?").
    unique_id: e.g. "test/algebra/2584.json"; unique within a file.
  """

  problem: str
  solution: str
  answer: str
  subject: str
  level: int | None
  unique_id: str

  @property
  def uid(self) -> str:
    return self.unique_id


def _parse_level(value: Any, where: str) -> int | None:
  # MATH-500 stores 1..5; the full MATH dataset stores "Level 3" and once "Level ?".
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, str):
    text = value.strip().removeprefix("Level").strip()
    if text.isdigit():
      return int(text)
    if text == "?":
      return None
  raise ValueError(f"{where}: field 'level' is {value!r}; expected an integer or 'Level N'.")


def _problem_from_record(record: Any, where: str) -> MathProblem:
  if not isinstance(record, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
  missing = [f for f in _FIELDS if f not in record]
  if missing:
    raise ValueError(f"{where}: missing field(s) {', '.join(missing)}; each record needs "
                     f"{', '.join(_FIELDS)} (the fields of HuggingFaceH4/MATH-500).")
  for field in ("problem", "solution", "answer", "subject", "unique_id"):
    if not isinstance(record[field], str):
      raise ValueError(f"{where}: field '{field}' is a {type(record[field]).__name__}; "
                       "expected a string.")
  return MathProblem(problem=record["problem"], solution=record["solution"],
                     answer=record["answer"], subject=record["subject"],
                     level=_parse_level(record["level"], where),
                     unique_id=record["unique_id"])


def _check_limit(limit: int | None) -> None:
  if limit is not None and (not isinstance(limit, int) or limit < 1):
    raise ValueError(f"limit={limit!r}: expected a positive integer or None (all problems).")


def _check_unique(problems: Sequence[MathProblem], source: str) -> None:
  seen: set[str] = set()
  for p in problems:
    if p.unique_id in seen:
      raise ValueError(f"{source}: unique_id {p.unique_id!r} occurs twice; results are keyed "
                       "by it, so every problem needs its own.")
    seen.add(p.unique_id)


def _read_rows(path: str, limit: int | None):
  """Yields (name, problem or None, reason) for each non-blank line, up to `limit` good
  ones; name is the row's unique_id when it has one, else "path, line n"."""
  _check_limit(limit)
  if not os.path.isfile(path):
    raise ValueError(f"MATH data file {path!r} does not exist; pass the path of a JSON-lines "
                     "file such as MATH-500 (or use load_math_hub when online).")
  good = 0
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      if limit is not None and good >= limit:
        return
      if not line.strip():
        continue
      where = f"{path}, line {line_number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        yield where, None, f"{where}: not valid JSON ({e.msg}); expected one object per line."
        continue
      try:
        problem = _problem_from_record(record, where)
      except ValueError as err:
        uid = record.get("unique_id") if isinstance(record, dict) else None
        yield uid if isinstance(uid, str) else where, None, str(err)
        continue
      good += 1
      yield problem.unique_id, problem, None


def load_math(path: str, limit: int | None = None) -> list[MathProblem]:
  """Reads MATH problems from a JSON-lines file, in file order.

  Args:
    path: one JSON object per line with the fields `problem, solution, answer,
      subject, level, unique_id` (as HuggingFaceH4/MATH-500). Blank lines are skipped.
    limit: keep only the first `limit` problems (None: all).

  Returns:
    The problems, at most `limit` of them.

  Raises:
    ValueError: the file is missing or holds no problems, a line is not a JSON object,
      a field is missing or mistyped (the message names the line and the field), or
      two problems share a unique_id.
  """
  problems = []
  for _, problem, reason in _read_rows(path, limit):
    if reason is not None:
      raise ValueError(reason)
    problems.append(problem)
  if not problems:
    raise ValueError(f"MATH data file {path!r} holds no problems (it is empty).")
  _check_unique(problems, path)
  return problems


def load_math_skipping(path: str, limit: int | None = None
                       ) -> tuple[list[MathProblem], list[dict]]:
  """Like `load_math`, but a bad row is skipped rather than fatal, so one broken record
  cannot stop a long run: a line that is not JSON, lacks or mistypes a field, has an
  empty answer, or repeats an earlier unique_id.

  Returns:
    (the first `limit` good problems, [{"uid", "reason"}] of the rows skipped before
    the last one kept; uid is the row's unique_id when it has one, else "path, line n").

  Raises:
    ValueError: the file is missing, or no row is usable.
  """
  _check_limit(limit)
  problems, skipped, seen = [], [], set()
  for name, problem, reason in _read_rows(path, None):
    if limit is not None and len(problems) >= limit:
      break
    if problem is not None and not problem.answer.strip():
      reason = "the answer field is empty; there is nothing to grade against."
    elif problem is not None and problem.unique_id in seen:
      reason = f"unique_id {name!r} occurs twice in {path}; the second is dropped."
    if reason is not None:
      skipped.append({"uid": name, "reason": reason})
      continue
    seen.add(problem.unique_id)
    problems.append(problem)
  if not problems:
    raise ValueError(f"MATH data file {path!r} holds no usable problems "
                     f"({len(skipped)} rows skipped, e.g. {skipped[:1]}).")
  return problems, skipped


def load_math_hub(name: str = "HuggingFaceH4/MATH-500", split: str = "test",
                  limit: int | None = None) -> list[MathProblem]:
  """Reads MATH problems from the Hugging Face hub (needs `datasets` and a network).

  Args:
    name: a dataset with the MATH-500 fields.
    split: its split.
    limit: keep only the first `limit` problems (None: all).

  Returns:
    The problems in the dataset's order.

  Raises:
    ValueError: `datasets` is not installed, or a record lacks a field.
  """
  _check_limit(limit)
  try:
    import datasets  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("load_math_hub needs the `datasets` package: `pip install datasets`, or "
                     "download the JSON-lines file and use load_math(path).") from None
  rows = datasets.load_dataset(name, split=split)
  count = len(rows) if limit is None else min(limit, len(rows))
  problems = [_problem_from_record(dict(rows[i]), f"{name}[{split}] row {i}")
              for i in range(count)]
  if not problems:
    raise ValueError(f"{name}[{split}] holds no problems.")
  _check_unique(problems, f"{name}[{split}]")
  return problems


# ------------------------------------------------------------------------ extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced_group(text: str, start: int) -> str | None:
  """The content of the group opening at text[start] == "{", or None if it never closes."""
  depth = 0
  i = start
  while i < len(text):
    char = text[i]
    if char == "\\":  # \{ and \} are literal braces; \\ is a line break
      i += 2
      continue
    if char == "{":
      depth += 1
    elif char == "}":
      depth -= 1
      if depth == 0:
        return text[start + 1:i]
    i += 1
  return None


def extract_boxed(text: str | None) -> str | None:
  """The content of the last `\\boxed{...}` or `\\fbox{...}` in `text`.

  Braces nest; escaped braces (`\\{`, `\\}`) do not count. MATH solutions sometimes
  write `\\boxed 5`; then the answer runs to the next `$` or line break (a trailing
  period dropped).

  Args:
    text: a solution, e.g. "... so the answer is $\\boxed{\\frac{1}{2}}$."

  Returns:
    The stripped content ("\\frac{1}{2}"), or None when there is no box or the last
    box never closes (a truncated generation).
  """
  if not text:
    return None
  matches = list(_BOX_RE.finditer(text))
  if not matches:
    return None
  i = matches[-1].end()
  while i < len(text) and text[i].isspace():
    i += 1
  if i == len(text):
    return None
  if text[i] == "{":
    content = _braced_group(text, i)
    return None if content is None else content.strip()
  end = len(text)
  for stop in ("$", "\n"):
    found = text.find(stop, i)
    if found != -1:
      end = min(end, found)
  content = text[i:end].strip().removesuffix(".").strip()
  return content or None


# "\\" (a line break, as between matrix rows) is matched first so that it is kept
# whole and not mistaken for "\" + the spacing command "\ ".
_SPACING_RE = re.compile(r"(\\\\)|\\[!,;: ]|\s+")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_FRAC_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")


def normalize_text(answer: str) -> str:
  """A purely textual normal form: what `canonical_key` falls back to.

  Drops whitespace, LaTeX spacing (`\\!`, `\\,`), `\\left`/`\\right`, surrounding `$`
  and a trailing period; `\\dfrac`/`\\tfrac` -> `\\frac`. E.g. "\\left( 3, \\dfrac{1}{2}
  \\right)" -> "(3,\\frac{1}{2})".
  """
  text = answer.strip().strip("$")
  text = _LEFT_RIGHT_RE.sub("", text)
  text = _FRAC_RE.sub(r"\\frac", text)
  text = _SPACING_RE.sub(lambda match: match.group(1) or "", text)
  return text.removesuffix(".")
