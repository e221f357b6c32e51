"""MATH-style data (ttcjax.tasks.math.data): boxed-answer extraction, text
normalisation, and loading JSON-lines problems (with its error messages)."""

import json
import sys

import pytest

from ttcjax.tasks.math.data import extract_boxed, load_math, load_math_hub, normalize_text


# ------------------------------------------------------------------------ extraction


@pytest.mark.parametrize("text, expected", [
    (r"so $\boxed{5}$.", "5"),
    (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    (r"\boxed{a^{b^{c}}} and \fbox{ 7 }", "7"),  # the last box wins, \fbox counts
    (r"first \boxed{1}, then \boxed{2}.", "2"),
    (r"$\boxed 5$.", "5"),  # MATH's brace-less form
    ("\\boxed 12.\nmore", "12"),
    (r"\boxed {3}", "3"),
    (r"\boxed{}", ""),
    ("no box here", None),
    ("", None),
    (None, None),
    (r"\boxed{\frac{1}{2}", None),  # truncated: unbalanced
    (r"\boxed{1} then \boxed{2", None),  # the last box is unbalanced
    (r"\boxed", None),
    (r"\boxedtext{3}", None),  # another macro
])
def test_extract_boxed(text, expected):
  assert extract_boxed(text) == expected


def test_normalize_text():
  assert normalize_text(r" \left( 3, \dfrac{1}{2} \right). ") == r"(3,\frac{1}{2})"
  assert normalize_text(r"10,\!080") == "10,080"
  assert normalize_text(r"\leftarrow") == r"\leftarrow"
  # A matrix row break survives (not read as "\" + the spacing "\ ").
  assert normalize_text(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}") == (
      r"\begin{pmatrix}1\\2\end{pmatrix}")


# --------------------------------------------------------------------------- loading


def _record(i, **overrides):
  record = {"problem": f"What is {i}+0?", "solution": rf"It is $\boxed{{{i}}}$.",
            "answer": str(i), "subject": "Prealgebra", "level": 1,
            "unique_id": f"test/prealgebra/{i}.json"}
  record.update(overrides)
  return record


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def test_load_math(tmp_path):
  lines = [json.dumps(_record(i)) for i in range(3)]
  path = _write(tmp_path / "m.jsonl", lines[:2] + [""] + lines[2:])
  problems = load_math(path)
  assert [p.uid for p in problems] == [f"test/prealgebra/{i}.json" for i in range(3)]
  assert problems[1].answer == "1" and problems[1].level == 1
  assert extract_boxed(problems[2].solution) == "2"
  assert len(load_math(path, limit=2)) == 2
  full_math = _write(tmp_path / "full.jsonl", [json.dumps(_record(0, level="Level 4"))])
  assert load_math(full_math)[0].level == 4


def test_load_math_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    load_math(str(tmp_path / "absent.jsonl"))
  with pytest.raises(ValueError, match="no problems"):
    load_math(_write(tmp_path / "empty.jsonl", []))
  with pytest.raises(ValueError, match="no problems"):
    load_math(_write(tmp_path / "blank.jsonl", ["", "  "]))
  with pytest.raises(ValueError, match="line 2: not valid JSON"):
    load_math(_write(tmp_path / "bad.jsonl", [json.dumps(_record(0)), "{not json"]))
  record = _record(1)
  del record["answer"]
  with pytest.raises(ValueError, match="line 2: missing field.*answer"):
    load_math(_write(tmp_path / "missing.jsonl", [json.dumps(_record(0)), json.dumps(record)]))
  with pytest.raises(ValueError, match="line 1: field 'answer' is a int"):
    load_math(_write(tmp_path / "type.jsonl", [json.dumps(_record(0, answer=3))]))
  with pytest.raises(ValueError, match="line 1: field 'level'"):
    load_math(_write(tmp_path / "level.jsonl", [json.dumps(_record(0, level="hard"))]))
  with pytest.raises(ValueError, match="line 1: expected a JSON object"):
    load_math(_write(tmp_path / "list.jsonl", ["[1, 2]"]))
  with pytest.raises(ValueError, match="occurs twice"):
    load_math(_write(tmp_path / "dup.jsonl", [json.dumps(_record(0))] * 2))
  with pytest.raises(ValueError, match="limit"):
    load_math(_write(tmp_path / "ok.jsonl", [json.dumps(_record(0))]), limit=0)


def test_load_math_hub_without_datasets(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
  with pytest.raises(ValueError, match="pip install datasets"):
    load_math_hub()
