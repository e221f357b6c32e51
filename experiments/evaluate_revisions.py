"""Measures the testbed's revision model: chains of attempts on the 500 test problems.

  python -m experiments.evaluate_revisions --json runs/evaluate_revisions.json

Runs `--chains` chains of `--chain_length` attempts per problem with sequential
revisions (`ttcjax.search.revisions`; the shipped revision model and PRM by default)
and reports:

* pass@1 of attempt t given its t - 1 previous attempts, t = 1..L, overall and per
  level (attempt 1 sees only the question, so it is the revision model as a policy);
* transitions between consecutive attempts of a chain: the share of right attempts
  whose next attempt is wrong (the paper: about 38% of right answers get revised into
  wrong ones) and of wrong ones whose next attempt is right;
* at the chains' full budget: accuracy of flat majority, flat best-of-N weighted and
  hierarchical best-of-N weighted (within each chain, then across chains), with the
  PRM's last-step score, with the ORM's score (`--orm`) and with the revision ORM's
  (`--revision_orm`, trained on the revision model's own attempts), and pass@N.

The JSON is rewritten at the end; the run takes a few minutes on 2 cores.
"""

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from ttcjax.sampling import Sampler
from ttcjax.sweep import select
from ttcjax.tasks.arith import arithmetic, testbed

_JSON = flags.DEFINE_string("json", None, "Where to write the figures (JSON).")
_REVISION = flags.DEFINE_string("revision", testbed.shipped_checkpoint("revision"),
                                "Revision model.")
_POLICY = flags.DEFINE_string("policy", testbed.shipped_checkpoint("policy_small"),
                              "The base policy (the runner's policy; unused by the chains).")
_PRM = flags.DEFINE_string("prm", testbed.shipped_checkpoint("prm"), "PRM.")
_ORM = flags.DEFINE_string("orm", testbed.shipped_checkpoint("orm"), "ORM ('' to skip).")
_REVISION_ORM = flags.DEFINE_string(
    "revision_orm", testbed.shipped_checkpoint("revision_orm"),
    "The ORM trained on the revision model's own attempts ('' to skip).")
_CHAINS = flags.DEFINE_integer("chains", 4, "Chains per problem.")
_LENGTH = flags.DEFINE_integer("chain_length", 8, "Attempts per chain.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_PER_LEVEL = flags.DEFINE_integer("problems_per_level", 50,
                                  "Test problems per level (50 = the whole test set).")
_BATCH = flags.DEFINE_integer("problems_per_batch", 25, "Problems per search call.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def _caps() -> dict:
  return dict(max_prompt_tokens=testbed.MAX_PROMPT_TOKENS, max_step_tokens=32,
              max_solution_tokens=testbed.MAX_SOLUTION_TOKENS, max_steps=testbed.MAX_STEPS)


def transition_rates(correct: np.ndarray) -> dict:
  """Right->wrong and wrong->right shares over consecutive attempts ([Q, chains, L])."""
  before, after = correct[..., :-1], correct[..., 1:]
  right, wrong = before.sum(), (~before).sum()
  return {"right_to_wrong": float((before & ~after).sum() / max(right, 1)),
          "wrong_to_right": float((~before & after).sum() / max(wrong, 1)),
          "right_attempts_followed": int(right), "wrong_attempts_followed": int(wrong)}


def main(argv):
  del argv
  for name, value in (("chains", _CHAINS.value), ("chain_length", _LENGTH.value),
                      ("problems_per_batch", _BATCH.value)):
    if value < 1:
      raise app.UsageError(f"--{name} must be positive, got {value}.")
  sampler = Sampler(temperature=_TEMPERATURE.value).check()
  problems = testbed.evaluation_problems(_PER_LEVEL.value)
  runner = testbed.search_runner(_POLICY.value, _PRM.value, _caps(), revision_dir=_REVISION.value)
  budget = _CHAINS.value * _LENGTH.value
  start = time.perf_counter()
  answers, correct, chains, scores, texts, arrays = [], [], [], [], [], []
  for first in range(0, len(problems), _BATCH.value):
    batch = problems[first:first + _BATCH.value]
    padded = batch + [batch[-1]] * (_BATCH.value - len(batch))
    result = runner.search("revisions", [p.prompt for p in padded],
                           [testbed.problem_id(p) for p in padded], budget=budget,
                           rng=jax.random.PRNGKey(_SEED.value), sampler=sampler,
                           chain_length=_LENGTH.value).take(len(batch))
    answers += result.answers
    texts += result.texts
    correct += [[arithmetic.is_correct(p, t) for t in row] for p, row in zip(batch, result.texts)]
    chains.append(result.chain)
    arrays.append((result.tokens, result.step_end, result.lengths))
    scores.append(select.aggregate(result.step_scores, result.step_mask, "last"))
    print(f"evaluate-revisions {min(first + _BATCH.value, len(problems))}/{len(problems)} "
          f"problems, {time.perf_counter() - start:.0f} s", flush=True)
  search_s = time.perf_counter() - start
  correct = np.asarray(correct, bool)  # [Q, N], candidate n = chain * L + position
  per_attempt = correct.reshape(len(problems), _CHAINS.value, _LENGTH.value)
  levels = np.array([p.level for p in problems])
  results = {
      "problems": len(problems), "chains": _CHAINS.value, "chain_length": _LENGTH.value,
      "temperature": _TEMPERATURE.value, "revision_model": _REVISION.value,
      "pass1_by_attempt": [float(x) for x in per_attempt.mean(axis=(0, 1))],
      "pass1_by_attempt_per_level": {
          int(level): [float(x) for x in per_attempt[levels == level].mean(axis=(0, 1))]
          for level in sorted(set(levels))},
      **transition_rates(per_attempt), "search_s": search_s}

  ids, vocab = select.answer_ids(answers)
  truth = np.array([v.index(arithmetic.canonical_answer(p.answer))
                    if arithmetic.canonical_answer(p.answer) in v else select.NO_ANSWER
                    for p, v in zip(problems, vocab)])
  chain_ids = np.concatenate(chains)
  verifiers = {"prm": np.concatenate(scores)}
  tokens, step_end, lengths = (np.concatenate(x) for x in zip(*arrays))
  samples = testbed.GradedSamples(problems, texts, correct, tokens, step_end, lengths, 0, 0.0)
  for name, path in (("orm", _ORM.value), ("revision_orm", _REVISION_ORM.value)):
    if path:  # each attempt scored as a solution to the question alone
      orm_config, orm_params, _ = testbed.load_reward_model(path)
      orm_scores, orm_mask = testbed.score_samples(orm_config, orm_params, samples)
      verifiers[name] = select.aggregate(orm_scores, orm_mask, "last")
  hit = lambda chosen: float(np.mean((chosen == truth) & (truth != select.NO_ANSWER)))
  selection = {"majority": hit(select.select_answers(ids, None, "majority")),
               "pass_at_n": float(correct.any(axis=1).mean())}
  for name, solution_scores in verifiers.items():
    selection[f"weighted_{name}"] = hit(select.select_answers(ids, solution_scores, "weighted"))
    selection[f"hierarchical_{name}"] = hit(
        select.select_answers(ids, solution_scores, "hierarchical", chain_ids))
  results["selection_at_full_budget"] = selection
  results["wall_s"] = time.perf_counter() - start
  print(json.dumps(results, indent=2))
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2, sort_keys=True)


if __name__ == "__main__":
  app.run(main)
