"""Measures the testbed's models on its 500-problem test set.

  python -m experiments.evaluate_testbed --json runs/evaluate_testbed.json

By default it evaluates the shipped checkpoints (checkpoints/arith/); --policy,
--large_policy, --prm and --orm point at others. It reports:

* the small policy's pass@1 (N samples per problem) at each temperature, per level,
  and the shares of problems below 0.1 / above 0.9 (at the first temperature);
* the PRM's and the ORM's AUROC on the small policy's samples at the first
  temperature: every step against the verifier's true label (pooled, and between
  sibling steps after a right prefix: what a search compares), the same sibling
  AUROC on the first errors that are the small policy's own greedy step (where a
  verifier must know better than the policy), and the last step's score against
  final-answer correctness;
* a policy as a verifier: the sibling AUROCs of each step's least likely token's
  log-probability under the small policy and under the large one (the reference a
  trained verifier should reach: the diagnosis in docs/testbed.md);
* the large policy's greedy pass@1 and its sampled pass@1 at the first temperature.

The JSON is rewritten after each part, so a killed run keeps what it finished.
"""

import json
import os
import time

from absl import app, flags

from ttcjax.sampling import Sampler
from ttcjax.tasks.arith import testbed

_JSON = flags.DEFINE_string("json", None, "Where to write the figures (JSON).")
_POLICY = flags.DEFINE_string("policy", testbed.shipped_checkpoint("policy_small"), "Small policy.")
_LARGE = flags.DEFINE_string("large_policy", testbed.shipped_checkpoint("policy_large"),
                             "Large policy ('' to skip).")
_PRM = flags.DEFINE_string("prm", testbed.shipped_checkpoint("prm"), "PRM ('' to skip).")
_ORM = flags.DEFINE_string("orm", testbed.shipped_checkpoint("orm"), "ORM ('' to skip).")
_SAMPLES = flags.DEFINE_integer("num_samples", 8, "Samples per problem for pass@1.")
_LARGE_SAMPLES = flags.DEFINE_integer("large_num_samples", 4,
                                      "Samples per problem for the large policy's sampled pass@1.")
_TEMPERATURES = flags.DEFINE_list("temperatures", ["1.0", "0.8"],
                                  "Sampling temperatures; the first is the headline.")
_PER_LEVEL = flags.DEFINE_integer("problems_per_level", 50,
                                  "Test problems per level (50 = the whole test set).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def _write(path: str | None, results: dict) -> None:
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _print_table(results: dict) -> None:
  rows = [(k, v) for k, v in results.items() if isinstance(v, (int, float))]
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
  levels = sorted(results["policy_pass1_per_level"])
  print("\npass@1 per level  " + " ".join(f"{lv:>6}" for lv in levels))
  for key in sorted(k for k in results if k.endswith("_per_level")):
    print(f"{key[:-10]:<17}  " + " ".join(f"{results[key][lv]:6.3f}" for lv in levels))


def main(argv):
  del argv
  problems = testbed.evaluation_problems(_PER_LEVEL.value)
  temperatures = [float(t) for t in _TEMPERATURES.value]
  results: dict = {"problems": len(problems), "num_samples": _SAMPLES.value}
  start = time.perf_counter()

  config, params, _ = testbed.load_policy(_POLICY.value)
  headline = None
  for i, temperature in enumerate(temperatures):
    samples = testbed.sample_and_grade(config, params, problems, _SAMPLES.value,
                                       Sampler(temperature=temperature), seed=_SEED.value)
    report = testbed.pass_rate_report(problems, samples.correct)
    suffix = "" if i == 0 else f"_t{temperature:g}"
    results[f"policy_pass1{suffix}"] = report["pass1"]
    results[f"policy_pass1{suffix}_per_level"] = report["pass1_per_level"]
    results[f"policy_sampling_tokens_per_s{suffix}"] = samples.tokens_generated / samples.wall_s
    if i == 0:
      headline = samples
      results["temperature"] = temperature
      for key in ("frac_pass1_below_0.1", "frac_pass1_above_0.9"):
        results[key] = report[key]
    _write(_JSON.value, results)

  argmax = None
  if _PRM.value or _ORM.value:
    labels = testbed.true_step_labels(headline)
    argmax = testbed.argmax_errors(config, params, headline, labels)
    results["first_errors"] = int(testbed.first_errors(labels, headline).sum())
    results["first_errors_policy_argmax"] = int(argmax.sum())
  for name, path in (("prm", _PRM.value), ("orm", _ORM.value)):
    if path:
      rm_config, rm_params, _ = testbed.load_reward_model(path)
      report = testbed.reward_model_report(rm_config, rm_params, headline, argmax)
      results[f"{name}_step_auroc"] = report["step_auroc"]
      results[f"{name}_sibling_auroc"] = report["sibling_auroc"]
      results[f"{name}_sibling_auroc_argmax_errors"] = report["sibling_auroc_argmax_errors"]
      results[f"{name}_final_auroc"] = report["final_auroc"]
      results["steps_scored"] = report["steps_scored"]
      _write(_JSON.value, results)

  if argmax is None:
    labels = testbed.true_step_labels(headline)
    argmax = testbed.argmax_errors(config, params, headline, labels)
  policies = [("small", config, params)]
  if _LARGE.value:
    large_config, large_params, _ = testbed.load_policy(_LARGE.value)
    policies.append(("large", large_config, large_params))
  for name, policy_config, policy_params in policies:
    scores, mask = testbed.likelihood_step_scores(policy_config, policy_params, headline)
    report = testbed.step_score_report(scores, mask, headline, argmax)
    results[f"{name}_likelihood_sibling_auroc"] = report["sibling_auroc"]
    results[f"{name}_likelihood_sibling_auroc_argmax_errors"] = (
        report["sibling_auroc_argmax_errors"])
    _write(_JSON.value, results)

  if _LARGE.value:
    greedy = testbed.sample_and_grade(large_config, large_params, problems, 1, Sampler.greedy(),
                                      seed=_SEED.value)
    results["large_policy_greedy_pass1"] = float(greedy.correct.mean())
    sampled = testbed.sample_and_grade(large_config, large_params, problems,
                                       _LARGE_SAMPLES.value, Sampler(temperature=temperatures[0]),
                                       seed=_SEED.value)
    report = testbed.pass_rate_report(problems, sampled.correct)
    results["large_policy_pass1"] = report["pass1"]
    results["large_policy_pass1_per_level"] = report["pass1_per_level"]
    small_greedy = testbed.sample_and_grade(config, params, problems, 1, Sampler.greedy(),
                                            seed=_SEED.value)
    results["policy_greedy_pass1"] = float(small_greedy.correct.mean())
  results["wall_s"] = time.perf_counter() - start
  _write(_JSON.value, results)
  _print_table(results)


if __name__ == "__main__":
  app.run(main)
