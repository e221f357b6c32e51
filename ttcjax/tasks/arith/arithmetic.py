"""The synthetic reasoning testbed: multi-step arithmetic with checkable steps.

A problem is a start value and a chain of operations evaluated left to right,
written as a one-line question::

    37+15*3-28=?

Its reference solution has one step per operation, steps separated by the step
delimiter, and a final line with the answer in a fixed form::

    37+15=52

    52*3=156

    156-28=128

    Answer: 128

Difficulty has three knobs (`Level`): the number of operations, the digits of
additive operands, and the share of multiplications (single-digit multipliers, so
values grow and carries multiply). Levels 1..10 span "one single-digit addition" to
"five operations on three-digit numbers". They were calibrated against the shipped
small policy (sampling at temperature 1) so that its per-problem success spans
nearly always (levels 1-3) to nearly never (levels 9-10), with roughly even steps
between: the five difficulty bins of the compute-optimal study need both ends.

Everything is deterministic given a seed, and the splits are disjoint by question
text: the test set (500 problems, 50 per level, the testbed's "MATH-500") and the
validation set are drawn first, and training problems that coincide with either are
skipped.

The verifier extracts the final answer, grades it, and labels every step: a step is
correct when it applies the right operation to the right running value and writes
the right result, and every step before it is correct too (a step after a mistake
cannot lead to the right answer, which is what Monte Carlo step labels estimate).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from typing import Iterator, Sequence

import numpy as np

ALPHABET = "0123456789+-*=?:\n Answer"
ANSWER_PREFIX = "Answer: "
STEP_DELIMITER = "\n\n"
MAX_ABS_VALUE = 9999  # operations that would leave this range are redrawn
SPLITS = ("test", "validation", "train")


@dataclasses.dataclass(frozen=True)
class Level:
  """The difficulty knobs of one level.

  Attributes:
    num_ops: operations in the chain (= reasoning steps before the answer).
    operand_digits: digits of the start value and of + / - operands.
    mul_share: probability that an operation is a multiplication by 2..9.
  """

  num_ops: int
  operand_digits: int
  mul_share: float


LEVELS: dict[int, Level] = {
    1: Level(1, 1, 0.0),
    2: Level(1, 2, 0.0),
    3: Level(2, 1, 0.0),
    4: Level(2, 1, 0.5),
    5: Level(3, 1, 0.25),
    6: Level(2, 2, 0.25),
    7: Level(3, 2, 0.25),
    8: Level(3, 2, 0.5),
    9: Level(4, 2, 0.5),
    10: Level(5, 3, 0.5),
}


@dataclasses.dataclass(frozen=True)
class Problem:
  """One question.

  Attributes:
    uid: "<split>-L<level>-<index>", stable across runs.
    level: the difficulty level it was drawn at.
    start: the start value.
    ops: the operations, each (operator, operand) with operator in "+-*".
  """

  uid: str
  level: int
  start: int
  ops: tuple[tuple[str, int], ...]

  @property
  def question(self) -> str:
    return str(self.start) + "".join(f"{op}{x}" for op, x in self.ops) + "=?"

  @property
  def prompt(self) -> str:
    """The text the policy continues (question and a newline)."""
    return self.question + "\n"

  @property
  def values(self) -> list[int]:
    """Running values: start, then after each operation."""
    values = [self.start]
    for op, x in self.ops:
      values.append(_apply(values[-1], op, x))
    return values

  @property
  def answer(self) -> int:
    return self.values[-1]

  def solution_steps(self) -> list[str]:
    """The reference steps, the answer line last."""
    values = self.values
    steps = [f"{values[i]}{op}{x}={values[i + 1]}" for i, (op, x) in enumerate(self.ops)]
    return steps + [f"{ANSWER_PREFIX}{self.answer}"]

  def solution(self) -> str:
    return STEP_DELIMITER.join(self.solution_steps())


def _apply(value: int, op: str, operand: int) -> int:
  if op == "+":
    return value + operand
  if op == "-":
    return value - operand
  if op == "*":
    return value * operand
  raise ValueError(f"Unknown operator {op!r}.")


def _draw_operand(rng: np.random.Generator, digits: int) -> int:
  low = 1 if digits == 1 else 10 ** (digits - 1)
  return int(rng.integers(low, 10 ** digits))


def draw_problem(rng: np.random.Generator, level: int, uid: str) -> Problem:
  """Draws one problem of `level` from `rng`."""
  if level not in LEVELS:
    raise ValueError(f"Unknown level {level}; levels are {sorted(LEVELS)}.")
  knobs = LEVELS[level]
  value = start = _draw_operand(rng, knobs.operand_digits)
  ops = []
  while len(ops) < knobs.num_ops:
    if rng.random() < knobs.mul_share:
      op, x = "*", int(rng.integers(2, 10))
    else:
      op, x = ("+" if rng.random() < 0.5 else "-"), _draw_operand(rng, knobs.operand_digits)
    new_value = _apply(value, op, x)
    if abs(new_value) <= MAX_ABS_VALUE:
      ops.append((op, x))
      value = new_value
  return Problem(uid=uid, level=level, start=start, ops=tuple(ops))


def _level_stream(split: str, seed: int, level: int) -> Iterator[Problem]:
  """An endless, deterministic stream of one split's problems at one level."""
  rng = np.random.default_rng([seed, SPLITS.index(split), level])
  index = 0
  while True:
    yield draw_problem(rng, level, f"{split}-L{level}-{index}")
    index += 1


def make_split(split: str, num_problems: int, seed: int = 0,
               levels: Sequence[int] = tuple(LEVELS)) -> list[Problem]:
  """A split's problems, levels interleaved, disjoint from the other splits.

  Each level gets num_problems // len(levels) problems (the first levels one more
  for the remainder). Test problems are unique; validation problems are unique and
  not in the test set; training problems are not in the test or validation sets of
  the same seed (they may repeat, as a data stream would).

  Args:
    split: "test", "validation" or "train".
    num_problems: how many to return.
    seed: the dataset seed (all splits of one seed are consistent).
    levels: the levels to draw from.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
  if num_problems <= 0:
    raise ValueError(f"num_problems must be positive, got {num_problems}.")
  excluded: set[str] = set()
  if split in ("validation", "train"):
    excluded = {p.question for p in test_problems(seed)}
  if split == "train":
    excluded |= {p.question for p in validation_problems(seed)}
  per_level = []
  for i, level in enumerate(levels):
    count = num_problems // len(levels) + (i < num_problems % len(levels))
    drawn, seen = [], set()
    for problem in _level_stream(split, seed, level):
      if len(drawn) == count:
        break
      if problem.question in excluded or (split != "train" and problem.question in seen):
        continue
      seen.add(problem.question)
      drawn.append(problem)
    per_level.append(drawn)
  return [p for group in itertools.zip_longest(*per_level) for p in group if p is not None]


def train_batch(step: int, batch_size: int, seed: int = 0,
                levels: Sequence[int] = tuple(LEVELS)) -> list[Problem]:
  """Training batch `step`: a pure function of (seed, step), levels uniform.

  Problems in the test or validation set of `seed` are redrawn, so no evaluation
  question is ever trained on.
  """
  excluded = _held_out_questions(seed)
  rng = np.random.default_rng([seed, SPLITS.index("train"), 1_000_000 + step])
  out = []
  while len(out) < batch_size:
    level = int(rng.choice(levels))
    problem = draw_problem(rng, level, f"train-s{step}-{len(out)}")
    if problem.question not in excluded:
      out.append(problem)
  return out


@functools.lru_cache(maxsize=4)
def _held_out_questions(seed: int) -> frozenset[str]:
  return frozenset(p.question for p in test_problems(seed) + validation_problems(seed))


def test_problems(seed: int = 0) -> list[Problem]:
  """The fixed 500-problem test set: 50 problems at each of the 10 levels."""
  return make_split("test", 500, seed)


def validation_problems(seed: int = 0, num_problems: int = 500) -> list[Problem]:
  return make_split("validation", num_problems, seed)


# ------------------------------------------------------------------ the verifier

_STEP = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")
_ANSWER = re.compile(r"^" + re.escape(ANSWER_PREFIX) + r"(-?\d+)$")


def split_steps(solution: str, delimiter: str = STEP_DELIMITER) -> list[str]:
  """The steps of a solution text (empty trailing pieces dropped)."""
  steps = solution.split(delimiter)
  while steps and not steps[-1].strip():
    steps.pop()
  return steps


def extract_answer(solution: str) -> int | None:
  """The integer on the final "Answer: N" line, or None when there is none."""
  steps = split_steps(solution)
  if not steps:
    return None
  match = _ANSWER.match(steps[-1].strip())
  return int(match.group(1)) if match else None


def canonical_answer(answer: int | None) -> str | None:
  """The key answers are compared and voted by."""
  return None if answer is None else str(int(answer))


def is_correct(problem: Problem, solution: str) -> bool:
  """Whether the solution's final answer equals the problem's answer."""
  return extract_answer(solution) == problem.answer


def step_labels(problem: Problem, steps: Sequence[str]) -> list[bool]:
  """Ground-truth correctness of every step (prefix-correct, see module docstring).

  Args:
    problem: the question.
    steps: the solution's steps (`split_steps`).

  Returns:
    One bool per step. A computation step i is correct when it reads
    "<value_i><op_i><operand_i>=<value_i+1>" with the true values; the answer line
    is correct when it states the true answer after all operations were done.
  """
  values = problem.values
  labels, ok = [], True
  for i, step in enumerate(steps):
    text = step.strip()
    if i < len(problem.ops):
      op, x = problem.ops[i]
      match = _STEP.match(text)
      good = bool(match) and (int(match.group(1)), match.group(2), int(match.group(3)),
                              int(match.group(4))) == (values[i], op, x, values[i + 1])
    elif i == len(problem.ops):
      match = _ANSWER.match(text)
      good = bool(match) and int(match.group(1)) == problem.answer
    else:
      good = False  # anything after the answer line
    ok = ok and good
    labels.append(ok)
  return labels
