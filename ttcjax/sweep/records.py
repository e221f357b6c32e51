"""A sweep's records: one JSON line per (strategy setting, budget, seed, problem).

`SweepRecord` names the fields of a line (the JSON on disk is exactly this dict), so
the readers (report, archive, study) read typed fields instead of guessing keys.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Hashable, Sequence, TypedDict

from ttcjax import compute
from ttcjax.sweep.plan import Unit


class SweepRecord(TypedDict):
  """One problem's outcome in one unit of a sweep (a line of `results.jsonl`).

  N denotes the candidates (the budget's rows), S_n the steps of candidate n.
  """

  key: str  # record_key(strategy, budget, seed, uid): what a resumed sweep skips
  uid: str
  level: int | None
  strategy: str  # the setting's label ("beam_m4")
  name: str  # the registered strategy ("beam")
  hyper: dict[str, Any]  # the hyperparameters at this budget (beam_width resolved)
  budget: int  # N
  seed: int
  generation_budget: int  # the paper's unit (N x (k + 1) for lookahead)
  answers: list  # [N] canonical answers (None: unparsable)
  correct_answer: Any
  correct: list[bool]  # [N]
  step_scores: list[list[float]]  # [N][S_n] the PRM's score of each step
  finished: list[bool]  # [N]
  lengths: list[int]  # [N] generated tokens
  compute: dict[str, float]  # the ComputeRecord's fields for this problem
  flops: dict[str, float]  # compute.search_flops of it
  unit_wall_s: float  # the whole unit's wall time (it searched unit_problems at once)
  unit_problems: int


def record_key(label: str, budget: int, seed: int, uid: str) -> str:
  return f"{label}|{budget}|{seed}|{uid}"


def _parse(path: str) -> tuple[list[SweepRecord], list[int]]:
  """(the records of a results file, the numbers of its lines that are not records).

  A last line without its newline is a line being written, or cut by a kill: left out,
  not counted as damage (a resume drops it, `rundir.drop_partial_line`)."""
  records, damaged = [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        if line.endswith("\n"):
          damaged.append(number)
        continue
      if isinstance(record, dict) and "key" in record:
        records.append(record)
      else:
        damaged.append(number)
  return records, damaged


def _damaged(path: str, lines: list[int]) -> ValueError:
  shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
  return ValueError(
      f"{path}: {len(lines)} line(s) are not sweep records (line {shown}); the file was "
      "damaged (a kill only ever cuts the last line, which a resume drops). Delete them "
      f"(e.g. sed -i '{lines[0]}d' {path}): a resumed sweep searches those problems again; "
      "or report without them (experiments.search_report --skip_damaged).")


def damaged_lines(path: str) -> list[int]:
  """The numbers of the lines of a results file that are not sweep records."""
  return _parse(path)[1] if os.path.exists(path) else []


def recorded_keys(path: str) -> set[str]:
  """The keys of the records in `path` (none when it does not exist yet).

  Raises:
    ValueError: a line is not a record (named with its number).
  """
  if not os.path.exists(path):
    return set()
  records, damaged = _parse(path)
  if damaged:
    raise _damaged(path, damaged)
  return {r["key"] for r in records}


def read_results(path: str, skip_damaged: bool = False) -> list[SweepRecord]:
  """The records of a results file.

  Args:
    path: the JSON-lines file.
    skip_damaged: leave out lines that are not records (`damaged_lines` counts them)
      instead of refusing the file.

  Raises:
    ValueError: no file there, or a damaged line and not `skip_damaged`.
  """
  if os.path.isdir(path) or not os.path.exists(path):
    raise ValueError(f"No sweep results at {path}; run experiments.search first.")
  records, damaged = _parse(path)
  if damaged and not skip_damaged:
    raise _damaged(path, damaged)
  return records


def same_answer(answer: Hashable | None, correct_answer: Any, text: str) -> bool:
  """The default judge: a canonical answer is right when it equals the canonical
  correct one (the candidate's text is not needed)."""
  del text
  return answer is not None and answer == correct_answer


def make_records(unit: Unit, hyper: dict, result, problems: Sequence[Any],
                 correct_answers: Sequence, policy_cost: compute.ModelCost,
                 prm_cost: compute.ModelCost, judge: Callable[[Hashable | None, Any, str], bool],
                 unit_wall_s: float) -> list[SweepRecord]:
  """The records of one unit's search `result` (a `SearchResult`), one per problem."""
  flops = compute.search_flops(result.compute, policy_cost, prm_cost)
  out: list[SweepRecord] = []
  for i, problem in enumerate(problems):
    mask = result.step_mask[i]
    out.append({
        "key": record_key(unit.setting.label, unit.budget, unit.seed, problem.uid),
        "uid": problem.uid, "level": getattr(problem, "level", None),
        "strategy": unit.setting.label, "name": unit.setting.name, "hyper": hyper,
        "budget": unit.budget, "seed": unit.seed,
        "generation_budget": unit.setting.strategy.generation_budget(unit.budget, hyper),
        "answers": result.answers[i], "correct_answer": correct_answers[i],
        "correct": [bool(judge(a, correct_answers[i], t))
                    for a, t in zip(result.answers[i], result.texts[i])],
        "step_scores": [[round(float(s), 5) for s in row[m]]
                        for row, m in zip(result.step_scores[i], mask)],
        "finished": result.finished[i].tolist(),
        "lengths": result.lengths[i].tolist(),
        "compute": {k: float(v[i]) for k, v in result.compute.items()},
        "flops": {k: float(v[i]) for k, v in flops.items()},
        "unit_wall_s": round(unit_wall_s, 3),
        "unit_problems": len(problems),
    })
  return out


