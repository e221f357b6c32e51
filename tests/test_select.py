import numpy as np
import pytest

from ttcjax import compute
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig
from ttcjax.sweep import select

SCORES = np.array([[0.9, 0.2, 0.5, 0.0], [0.4, 0.8, 0.0, 0.0]])
MASK = np.array([[True, True, True, False], [True, True, False, False]])


@pytest.mark.parametrize("how,expected", [
    ("last", [0.5, 0.8]), ("min", [0.2, 0.4]), ("prod", [0.09, 0.32]),
    ("mean", [1.6 / 3, 0.6])])
def test_aggregations(how, expected):
  np.testing.assert_allclose(select.aggregate(SCORES, MASK, how), expected)


def test_a_solution_without_steps_scores_zero():
  assert select.aggregate(np.ones((1, 3)), np.zeros((1, 3), bool), "min").tolist() == [0.0]


def test_answer_ids_number_answers_in_order_of_appearance():
  ids, vocab = select.answer_ids([["7", None, "3", "7"], ["1", "1", "2", None]])
  assert ids.tolist() == [[0, -1, 1, 0], [0, 0, 1, -1]]
  assert vocab == [["7", "3"], ["1", "2"]]


def test_selection_rules_on_a_hand_made_table():
  #            answers: A    B    B    C    A    (None)
  ids = np.array([[0, 1, 1, 2, 0, -1]])
  scores = np.array([[0.5, 0.3, 0.3, 0.95, 0.4, 1.0]])
  assert select.select_answers(ids, None, "majority").tolist() == [0]  # A and B tie: A first
  assert select.select_answers(ids, scores, "best").tolist() == [2]     # C has the top score
  assert select.select_answers(ids, scores, "weighted").tolist() == [2]  # C .95 > A .9 > B .6
  scores[0, 4] = 0.5
  assert select.select_answers(ids, scores, "weighted").tolist() == [0]  # A 1.0 > C .95


def test_no_answer_at_all():
  ids = np.array([[-1, -1]])
  for rule in select.RULES:
    assert select.select_answers(ids, np.ones((1, 2)), rule, np.zeros((1, 2), int)).tolist() == [-1]


def test_subsets_of_the_full_set_are_exact_and_small_subsets_average():
  ids = np.array([[0, 1, 1, 1]])
  correct = np.array([0])
  assert select.subset_selection(ids, None, correct, 4, "majority", 10).tolist() == [0.0]
  # One candidate drawn: right a quarter of the time.
  acc = select.subset_selection(ids, None, correct, 1, "majority", 4000, seed=1)
  assert acc[0] == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("call,match", [
    (lambda: select.aggregate(SCORES, MASK, "max"), "Unknown aggregation"),
    (lambda: select.aggregate(SCORES, MASK[:, :2], "last"), "shape"),
    (lambda: select.select_answers(np.zeros((1, 2), int), None, "vote"), "Unknown selection"),
    (lambda: select.select_answers(np.zeros((1, 2), int), np.ones((1, 3)), "best"), "scores"),
    (lambda: select.subset_selection(np.zeros((1, 2), int), None, np.zeros(1), 3, "majority", 1),
     "subset_size"),
])
def test_bad_input(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_flops_count_parameters_and_attention():
  config = TransformerConfig(vocab_size=10, hidden_size=8, num_layers=2, num_heads=2,
                             num_kv_heads=1, intermediate_size=16, tie_word_embeddings=False)
  cost = compute.ModelCost.of_policy(config)
  assert cost.body_flops == 2 * config.num_non_embedding_params
  assert cost.head_flops == 2 * 10 * 8
  assert cost.attention_flops == 4 * 2 * 2 * 4
  flops = compute.policy_flops(cost, generated=3, prefilled=5, context=21)
  assert flops == (cost.body_flops + cost.head_flops) * 3 + cost.body_flops * 5 + cost.attention_flops * 21
  prm = compute.ModelCost.of_prm(PrmConfig(config, head_hidden=4))
  assert prm.head_flops == 0 and prm.body_flops == cost.body_flops + 2 * (8 * 4 + 4 * 1)
  assert compute.generation_budget(16, lookahead_steps=3) == 64
  with pytest.raises(ValueError):
    compute.generation_budget(0)


def test_subset_ties_do_not_peek_at_the_other_samples():
  # Right answer (id 0) in 40% of 10 samples; with two candidates of different
  # answers majority is a tie, which must go to the first of the pair, not to the
  # answer that happens to come first among all ten.
  ids = np.array([[0, 1, 2, 0, 3, 0, 4, 1, 0, 2]] * 200)
  acc = select.subset_selection(ids, None, np.zeros(200, int), 1, "majority", 50, seed=0).mean()
  pair = select.subset_selection(ids, None, np.zeros(200, int), 2, "majority", 50, seed=0).mean()
  assert acc == pytest.approx(0.4, abs=0.03) and pair == pytest.approx(0.4, abs=0.03)


def test_solution_tree_shares_prefixes():
  from ttcjax.sweep import tree
  root = tree.solution_tree(
      [["1+1=2", "2*3=6", "Answer: 6"], ["1+1=2", "2*3=7", "Answer: 7"], ["1+1=3", "Answer: 3"]],
      [[0.9, 0.8, 0.8], [0.9, 0.1, 0.1], [0.2, 0.1]])
  assert root.count == 3 and [c.step for c in root.children] == ["1+1=2", "1+1=3"]
  assert root.children[0].count == 2 and len(root.children[0].children) == 2
  text = tree.format_tree(root)
  assert text.splitlines()[0] == "[0.900] x2  1+1=2"
  with pytest.raises(ValueError, match="score lists"):
    tree.solution_tree([["a"]], [])


def test_exchange_factor_balances_total_flops():
  m, r, n, d_pre = 10.0, 0.79, 1e6, 1e9
  factor = compute.exchange_factor(m, r)
  small_total = 6 * n * d_pre + 2 * n * (r * d_pre) * factor
  large_total = 6 * (m * n) * d_pre + 2 * (m * n) * (r * d_pre)
  assert small_total == pytest.approx(large_total)
  assert compute.exchange_factor(1.0, 0.16) == 1.0
  with pytest.raises(ValueError):
    compute.exchange_factor(0.5, 1.0)
  # Each model charged its own pretraining tokens: the larger one saw t times more.
  t = 2.6
  factor = compute.exchange_factor(m, r, pretraining_ratio=t)
  small_total = 6 * n * d_pre + 2 * n * (r * d_pre) * factor
  large_total = 6 * (m * n) * (t * d_pre) + 2 * (m * n) * (r * d_pre)
  assert small_total == pytest.approx(large_total)
  assert compute.exchange_factor(m, r, pretraining_ratio=1.0) == compute.exchange_factor(m, r)
  with pytest.raises(ValueError, match="pretraining ratio"):
    compute.exchange_factor(m, r, pretraining_ratio=0.0)


def test_hierarchical_selection_on_a_hand_made_table():
  # Problem 0: chain 0 votes A (0.9 beats B's 0.3 + 0.3), chain 1 votes B (0.8), chain 2
  # C (0.5): A wins, where flat weighted picks B (1.4). Problem 1: chain 0 has no answer
  # and chains 1 and 2 tie on 0.6: the answer seen first (id 0, "x") wins.
  ids = np.array([[0, 1, 1, 1, 1, 2], [-1, -1, -1, 0, 1, 1]])
  scores = np.array([[0.9, 0.3, 0.3, 0.4, 0.4, 0.5], [0.9, 0.9, 0.9, 0.6, 0.2, 0.4]])
  chains = np.array([[0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 2]])
  np.testing.assert_array_equal(select.select_answers(ids, scores, "hierarchical", chains), [0, 0])
  np.testing.assert_array_equal(select.select_answers(ids, scores, "weighted"), [1, 1])
  # Every candidate its own chain: hierarchical is flat weighted.
  own = np.broadcast_to(np.arange(6), ids.shape)
  np.testing.assert_array_equal(select.select_answers(ids, scores, "hierarchical", own),
                                select.select_answers(ids, scores, "weighted"))
  with pytest.raises(ValueError, match="needs chains"):
    select.select_answers(ids, scores, "hierarchical")
  assert select.select_answers(np.full((1, 2), -1), np.zeros((1, 2)), "hierarchical",
                               np.zeros((1, 2), int))[0] == select.NO_ANSWER
