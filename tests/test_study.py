"""The study's analysis on hand-made records whose right numbers are known."""

import numpy as np
import pytest

from ttcjax import compute, study
from ttcjax.study.allocation import Option, ResultTable

COST = compute.ModelCost(body_flops=2e3, head_flops=1e2, attention_flops=8.0)


def record(uid, strategy, name, budget, answers, truth, last_scores, seed=0, lookahead=0):
  """A sweep record with one step per candidate scored `last_scores`."""
  work = {"policy_generated": 20.0 * len(answers) * (lookahead + 1), "policy_prefilled": 6.0,
          "policy_context": 400.0 * len(answers), "prm_scored": 30.0 * len(answers),
          "prm_context": 500.0 * len(answers)}
  return {
      "key": f"{strategy}|{budget}|{seed}|{uid}", "uid": uid, "level": 1, "strategy": strategy,
      "name": name, "hyper": {}, "budget": budget, "seed": seed,
      "generation_budget": compute.generation_budget(budget, lookahead),
      "answers": list(answers), "correct_answer": truth,
      "correct": [a == truth for a in answers],
      "step_scores": [[float(s)] for s in last_scores], "finished": [True] * len(answers),
      "lengths": [5] * len(answers),
      "compute": work,
      "flops": {k: float(v) for k, v in compute.search_flops(work, COST, COST).items()},
  }


def test_outcome_tables_read_best_of_n_subsets_majority_and_search_runs():
  # q0: 3 of 4 samples right, the PRM prefers the right ones; q1: the wrong answer is
  # the majority but the PRM prefers the right one.
  records = [
      record("q0", "best_of_n", "best_of_n", 4, ["1", "1", "1", "2"], "1", [.9, .8, .7, .1]),
      record("q1", "best_of_n", "best_of_n", 4, ["5", "6", "6", "6"], "5", [.9, .1, .1, .1]),
      record("q0", "beam_m4", "beam", 4, ["2"] * 4, "1", [.5] * 4),
      record("q1", "beam_m4", "beam", 4, ["5"] * 4, "5", [.5] * 4),
      # lookahead at N = 4, k = 1 costs 8 samples: outside budgets (1, 2, 4), left out.
      record("q0", "look", "lookahead", 4, ["1"] * 4, "1", [.5] * 4, lookahead=1),
      record("q1", "look", "lookahead", 4, ["5"] * 4, "5", [.5] * 4, lookahead=1),
  ]
  samples, flops, verifier = study.outcome_tables(records, ["q0", "q1"], [1, 2, 4], COST, COST)
  labels = [(o.strategy, o.budget) for o in samples.options]
  assert labels[:3] == [("best_of_n", 1), ("best_of_n", 2), ("best_of_n", 4)]  # reference first
  assert ("look", 4) not in labels and ("majority", 4) in labels
  acc = dict(zip(labels, samples.accuracy))
  np.testing.assert_allclose(acc[("best_of_n", 4)], [1, 1])      # weighted: 2.4 vs 0.1; 0.9 vs 0.3
  np.testing.assert_allclose(acc[("majority", 4)], [1, 0])
  np.testing.assert_allclose(acc[("beam_m4", 4)], [0, 1])
  np.testing.assert_allclose(acc[("best_of_n", 1)], [0.75, 0.25], atol=0.2)  # 16 random draws
  np.testing.assert_array_equal(samples.cost[labels.index(("beam_m4", 4))], [4, 4])
  full = records[0]["flops"]["total_flops"]
  np.testing.assert_array_equal(flops.cost[labels.index(("beam_m4", 4))], [full, full])
  prm_part = records[0]["flops"]["prm_flops"]
  assert 0 < prm_part < full
  np.testing.assert_array_equal(verifier.cost[labels.index(("beam_m4", 4))], [prm_part] * 2)
  # Best-of-N's FLOPs at a smaller budget scale its samples' share, not the prompt's.
  small = flops.cost[labels.index(("best_of_n", 1))]
  assert (small > full / 4).all() and (small < full / 2).all()


def test_outcome_tables_refuse_an_unfinished_sweep():
  records = [record("q0", "beam_m4", "beam", 4, ["1"] * 4, "1", [.5] * 4)]
  with pytest.raises(ValueError, match="lacks 1 of the 2 questions"):
    study.outcome_tables(records, ["q0", "q1"], [4], COST, COST)


def test_difficulty_bins_from_pass_rates_and_final_scores():
  records = [record(f"q{i}", "difficulty", "best_of_n", 4, ["1"] * (4 - i) + ["0"] * i, "1",
                    [1 - 0.2 * i] * 4) for i in range(4)]
  bins = study.difficulty_bins(records, [f"q{i}" for i in range(4)], num_bins=2)
  np.testing.assert_array_equal(bins["oracle"].bins, [0, 0, 1, 1])
  np.testing.assert_allclose(bins["oracle"].values, [1, .75, .5, .25])
  np.testing.assert_array_equal(bins["predicted"].bins, [0, 0, 1, 1])
  np.testing.assert_allclose(bins["oracle"].cost, records[0]["flops"]["total_flops"])
  with pytest.raises(ValueError, match="lack 1 questions"):
    study.difficulty_bins(records, ["q0", "q9"], num_bins=2)


def known_table():
  """Bin 0 (q0-q3): best-of-N is right; bin 1 (q4-q7): beam is right. Budgets 4 and 16."""
  options = (Option("best_of_n", 4), Option("beam", 4), Option("best_of_n", 16),
             Option("beam", 16))
  easy, hard = [1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4
  accuracy = np.array([easy, hard, easy, [0.5] * 4 + [1.0] * 4])
  cost = np.array([[4.0] * 8, [4.0] * 8, [16.0] * 8, [16.0] * 8])
  return ResultTable(options, accuracy, cost, tuple(f"q{i}" for i in range(8)))


def test_compute_optimal_picks_per_bin_and_scores_held_out():
  table = known_table()
  bins = np.array([0] * 4 + [1] * 4)
  points = study.compute_optimal(table, bins, 2, [4, 16], repeats=5)
  assert [p["budget"] for p in points] == [4, 16]
  assert points[0]["accuracy"] == pytest.approx(1.0)  # each bin's winner is right everywhere
  assert [c["strategy"] for c in points[0]["choice"]] == ["best_of_n", "beam"]
  assert len(points[0]["per_question"]) == 8


def test_efficiency_ratio_bounds():
  reference = ([4, 16, 64], [0.5, 0.7, 0.8])
  points = [{"budget": 4, "accuracy": 0.7, "low": 0.4, "high": 0.9}]
  r = study.efficiency_ratios(points, reference)[4]
  assert (r["ratio"], r["bound"]) == (pytest.approx(4.0), "exact")  # best-of-N needs 16
  assert (r["low"], r["low_bound"]) == (pytest.approx(1.0), "at most")
  assert (r["high"], r["high_bound"]) == (pytest.approx(16.0), "at least")
  charged = study.efficiency_ratios(points, reference, extra_budget=12)[4]
  assert charged["ratio"] == pytest.approx(1.0)  # 16 / (4 + 12)
  assert study.ratio_text(16.0, "at least") == ">16.00x"


def test_budget_allocation_moves_samples_to_the_bin_that_gains():
  table = known_table()
  bins = np.array([0] * 4 + [1] * 4)
  choice = study.allocate(table, bins, 2, mean_budget=10.0, fit=np.ones(8, bool))
  # Mean 10 allows one bin at 16 and one at 4; nothing gains from 16, so both stay at 4.
  assert [table.options[c] for c in choice] == [Option("best_of_n", 4), Option("beam", 4)]
  curve = study.allocation_curve(table, bins, 2, [2, 4, 16], repeats=3)
  assert [c["mean_budget"] for c in curve] == [4, 16]  # nothing fits a mean budget of 2
  assert curve[0]["accuracy"] == pytest.approx(1.0) and curve[0]["cost"] == pytest.approx(4.0)


def test_exchange_gives_the_small_model_its_flops_matched_budget():
  table = known_table()
  bins = np.array([0] * 4 + [1] * 4)
  optimal = study.compute_optimal(table, bins, 2, [4, 16], repeats=3)
  large = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
  # M = 2: X = 2 + 3 / R. R = 0.25: X = 14 (budget 4); R = 0.1: X = 32, beyond the
  # largest budget; R = 3: X = 3, below every budget.
  rows = study.exchange(table, optimal, bins, 2, large, params_ratio=2.0,
                        ratios=[0.1, 0.25, 3.0], pretraining_tokens=1e6)
  assert [r["X"] for r in rows] == pytest.approx([32.0, 14.0, 3.0])
  assert [r["budget_used"] for r in rows] == [16, 4, 4]
  assert [r["budget_note"] for r in rows] == ["X beyond the largest budget", "",
                                              "X below the smallest budget"]
  assert rows[1]["inference_tokens"] == pytest.approx(2.5e5)
  hard = rows[0]["bins"][1]
  assert (hard["small"], hard["large"], hard["winner"]) == (1.0, 0.5, "test-time compute")


def test_exchange_counting_the_verifier_can_shrink_the_budget():
  table = known_table()
  bins = np.array([0] * 4 + [1] * 4)
  optimal = study.compute_optimal(table, bins, 2, [4, 16], repeats=3)
  assert [[c["strategy"] for c in p["choice"]] for p in optimal] == [["best_of_n", "beam"]] * 2
  # Per question: the policy costs 10 FLOPs a sample; best-of-N's verifier 5 a sample,
  # beam's 20 (it scores every step of every beam).
  per_sample = {"best_of_n": 15.0, "beam": 30.0}
  flops = ResultTable(table.options, table.accuracy,
                      np.array([[per_sample[o.strategy] * o.budget] * 8 for o in table.options]),
                      table.uids)
  rows = study.exchange(table, optimal, bins, 2, np.ones(8, bool), params_ratio=2.0,
                        ratios=[0.1, 0.25], pretraining_tokens=1e6, flops_table=flops,
                        sample_flops=10.0)
  # R = 0.1: X = 32 allows budget 16 by samples, but 320 FLOPs do not pay for budget
  # 16's mean (240 + 480) / 2 = 360: counting the verifier, the budget is 4 (mean 90).
  assert [r["budget_used"] for r in rows] == [16, 4]
  counted = [r["counting_verifier"] for r in rows]
  assert [c["budget_used"] for c in counted] == [4, 4]
  assert [c["flops_allowed"] for c in counted] == pytest.approx([320.0, 140.0])
  assert [c["flops_spent"] for c in counted] == pytest.approx([90.0, 90.0])
  assert counted[0]["all"]["small"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="both flops_table and sample_flops"):
    study.exchange(table, optimal, bins, 2, np.ones(8, bool), 2.0, [1.0], 1e6, flops_table=flops)


def test_analyse_refuses_too_few_questions():
  records = [record(f"q{i}", "difficulty", "best_of_n", 2, ["1", "1"], "1", [1, 1])
             for i in range(3)]
  with pytest.raises(ValueError, match="too few"):
    study.analyse(records, records, records, [1, 2], COST, COST, 2.0, 1e6, [1.0], num_bins=5)


def test_analyse_refuses_results_without_best_of_n():
  uids = [f"q{i}" for i in range(10)]
  difficulty_runs = [record(u, "difficulty", "best_of_n", 2, ["1", "1"], "1", [1, 1]) for u in uids]
  beam_only = [record(u, "beam_m2", "beam", 2, ["1", "1"], "1", [1, 1]) for u in uids]
  with pytest.raises(ValueError, match=r"no runs of \['best_of_n'\]"):
    study.analyse(beam_only, difficulty_runs, difficulty_runs, [2], COST, COST, 2.0, 1e6, [1.0],
                  num_bins=5)


def test_a_panel_showing_another_panels_numbers_says_so():
  from ttcjax.study import plots
  shown = {"oracle bins": [(1, 0.5), (2, 0.6)]}
  assert plots._same_as([(1, 0.5), (2, 0.6)], shown) == " (same as oracle bins)"
  assert plots._same_as([(1, 0.5), (2, 0.7)], shown) == ""
