"""The arithmetic testbed: generation, splits, the verifier."""

import collections

import pytest

from ttcjax.tasks.arith import arithmetic


def test_generation_is_deterministic():
  a, b = arithmetic.test_problems(seed=0), arithmetic.test_problems(seed=0)
  assert a == b
  assert arithmetic.test_problems(seed=1) != a
  assert arithmetic.train_batch(7, 32) == arithmetic.train_batch(7, 32)
  assert arithmetic.train_batch(7, 32) != arithmetic.train_batch(8, 32)


def test_test_set_spans_levels_and_is_unique():
  problems = arithmetic.test_problems()
  assert len(problems) == 500
  assert len({p.question for p in problems}) == 500
  assert collections.Counter(p.level for p in problems) == {lvl: 50 for lvl in arithmetic.LEVELS}
  for p in problems:
    assert len(p.ops) == arithmetic.LEVELS[p.level].num_ops
    assert all(abs(v) <= arithmetic.MAX_ABS_VALUE for v in p.values)


def test_splits_are_disjoint():
  test = {p.question for p in arithmetic.test_problems()}
  validation = {p.question for p in arithmetic.validation_problems()}
  train = {p.question for p in arithmetic.make_split("train", 5000)}
  stream = {p.question for step in range(50) for p in arithmetic.train_batch(step, 64)}
  assert not test & validation
  assert not (train | stream) & (test | validation)
  assert len(stream) > 1000  # the stream is not a handful of repeats


def test_reference_solution_grades_correct_with_all_steps_right():
  for p in arithmetic.test_problems()[:60]:
    text = p.solution()
    assert arithmetic.extract_answer(text) == p.answer
    assert arithmetic.is_correct(p, text)
    assert all(arithmetic.step_labels(p, arithmetic.split_steps(text)))
    assert len(arithmetic.split_steps(text)) == len(p.ops) + 1


def test_verifier_on_hand_written_solutions():
  p = arithmetic.Problem(uid="x", level=4, start=37, ops=(("+", 15), ("*", 3), ("-", 28)))
  assert p.question == "37+15*3-28=?" and p.answer == 128
  right = "37+15=52\n\n52*3=156\n\n156-28=128\n\nAnswer: 128"
  assert arithmetic.is_correct(p, right)
  # A wrong middle step: everything from it on is wrong, the answer too.
  wrong = "37+15=52\n\n52*3=155\n\n155-28=127\n\nAnswer: 127"
  assert not arithmetic.is_correct(p, wrong)
  assert arithmetic.step_labels(p, arithmetic.split_steps(wrong)) == [True, False, False, False]
  # The right numbers with the wrong operation are wrong.
  assert arithmetic.step_labels(p, ["37-15=52"]) == [False]
  # A lucky final answer after a wrong step: the answer grades correct, the steps do not.
  lucky = "37+15=52\n\n52*3=155\n\n155-28=128\n\nAnswer: 128"
  assert arithmetic.is_correct(p, lucky)
  assert arithmetic.step_labels(p, arithmetic.split_steps(lucky)) == [True, False, False, False]
  # Unparseable or missing answers.
  assert arithmetic.extract_answer("37+15=52\n\n52*3=156") is None
  assert arithmetic.extract_answer("Answer: twelve") is None
  assert arithmetic.extract_answer("") is None
  assert arithmetic.extract_answer("Answer: -7\n\n") == -7
  # Steps after the answer are wrong.
  assert arithmetic.step_labels(p, arithmetic.split_steps(right + "\n\n1+1=2"))[-1] is False


def test_bad_input():
  with pytest.raises(ValueError, match="split"):
    arithmetic.make_split("dev", 10)
  with pytest.raises(ValueError, match="positive"):
    arithmetic.make_split("test", 0)
  with pytest.raises(ValueError, match="level"):
    import numpy as np
    arithmetic.draw_problem(np.random.default_rng(0), 11, "x")
