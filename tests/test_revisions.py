"""Sequential revisions: chains with an echo fake, L = 1 against best-of-N, the revision
data rule, the context layout shared by training and search, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import search_fakes as fakes
from ttcjax.sampling import Sampler, prefill, sample_steps
from ttcjax.search import best_of_n, get_strategy, sequential_revisions
from ttcjax.search import revisions as rev_search
from ttcjax.search.base import revision_cache_capacity
from ttcjax.models.tokenizer import separator_tokens
from ttcjax.training import revisions as rev_data

TOK = fakes.TOKENIZER
COLON = TOK.encode(":")[0]
NEWLINE = fakes.NEWLINE
SEPARATOR = (COLON, COLON)
DIGIT_OF = np.full(TOK.vocab_size, -1, np.int32)
for _d in range(10):
  DIGIT_OF[TOK.encode(str(_d))[0]] = _d
DIGIT_OF_J = jnp.asarray(DIGIT_OF)
DIGIT_TOKENS = jnp.asarray([TOK.encode(str(d))[0] for d in range(10)])


def echo_policy(params, tokens, cache, num_new):
  """Writes attempts of three digits and EOS, read off its whole context:
  [previous attempts in context, sum of the context's attempt digits mod 10, random].

  Its cache keeps every token, so it sees exactly what the search put in its context.
  """
  del params
  history, lengths = cache["tokens"], cache["lengths"]
  positions = lengths[:, None] + jnp.arange(tokens.shape[1])[None, :]
  valid = jnp.arange(tokens.shape[1])[None, :] < num_new[:, None]
  rows = jnp.arange(tokens.shape[0])[:, None]
  history = history.at[rows, jnp.where(valid, positions, history.shape[1])].set(tokens, mode="drop")
  lengths = lengths + num_new
  slot = jnp.arange(history.shape[1])[None, :]
  filled = slot < lengths[:, None]
  after_prompt = jnp.cumsum((history == NEWLINE) & filled, axis=1) > 0
  after_prompt = after_prompt & (history != NEWLINE)
  colons = (history == COLON) & filled
  last_colon = jnp.max(jnp.where(colons, slot, -1), axis=1)
  prompt_end = jnp.argmax(history == NEWLINE, axis=1)
  attempt_start = jnp.maximum(last_colon, prompt_end) + 1
  in_attempt = filled & (slot >= attempt_start[:, None])
  digits = DIGIT_OF_J[history]
  written = jnp.sum(in_attempt & (digits >= 0), axis=1)
  previous = jnp.sum(colons, axis=1) // 2
  earlier = filled & after_prompt & ~in_attempt & (digits >= 0)
  checksum = jnp.sum(jnp.where(earlier, digits, 0), axis=1) % 10
  force = lambda token: jnp.where(jnp.arange(TOK.vocab_size)[None, :] == token[:, None], 0.0, -1e9)
  uniform = jnp.full((TOK.vocab_size,), -1e9).at[DIGIT_TOKENS].set(0.0)[None, :]
  logits = jnp.where((written == 0)[:, None], force(DIGIT_TOKENS[previous % 10]),
                     jnp.where((written == 1)[:, None], force(DIGIT_TOKENS[checksum]),
                               jnp.where((written == 2)[:, None], uniform,
                                         force(jnp.full_like(written, TOK.eos_id)))))
  return logits, {"tokens": history, "lengths": lengths}


def echo_batch(num_problems, capacity):
  base = fakes.batch(num_problems)
  zeros = jnp.zeros((num_problems,), jnp.int32)
  return base.replace(policy_cache={
      "tokens": jnp.zeros((num_problems, capacity), jnp.int32), "lengths": zeros})


def settings(max_solution_tokens=4):
  return fakes.settings().replace(attempt_separator=SEPARATOR,
                                  max_solution_tokens=max_solution_tokens,
                                  max_step_tokens=max_solution_tokens)


def run_chains(budget, chain_length, max_solution_tokens=4, num_problems=2):
  s = settings(max_solution_tokens)
  capacity = revision_cache_capacity(fakes.batch(1).prompts.shape[1], s, chain_length)
  models = fakes.MODELS.replace(policy_fn=echo_policy)
  fn = jax.jit(sequential_revisions, static_argnames=("budget", "chain_length"))
  return fn(models, echo_batch(num_problems, capacity), jax.random.PRNGKey(0), Sampler(),
            settings=s, budget=budget, chain_length=chain_length)


def attempt_digits(out, problem, candidate):
  row = np.asarray(out.tokens[problem, candidate, :out.lengths[problem, candidate]])
  return [int(DIGIT_OF[t]) for t in row if DIGIT_OF[t] >= 0]


@pytest.mark.parametrize("max_solution_tokens", [4, 3])  # EOS-ended, and capped before EOS
def test_each_attempt_sees_exactly_its_chains_last_four_attempts(max_solution_tokens):
  out = run_chains(budget=14, chain_length=7, max_solution_tokens=max_solution_tokens)
  np.testing.assert_array_equal(out.chain[0], np.arange(14) // 7)
  np.testing.assert_array_equal(out.position[0], np.arange(14) % 7)
  for problem in range(2):
    for chain in range(2):
      attempts = [attempt_digits(out, problem, chain * 7 + t) for t in range(7)]
      for t, digits in enumerate(attempts):
        kept = attempts[max(0, t - 4):t]
        assert digits[0] == len(kept), (t, attempts)
        assert digits[1] == sum(sum(a) for a in kept) % 10, (t, attempts)
  # Chains differ (their keys do), so a chain that read another's attempts would fail above.
  random_digits = lambda chain: [attempt_digits(out, 0, chain * 7 + t)[2] for t in range(7)]
  assert random_digits(0) != random_digits(1)


def test_compute_counts_separators_and_reread_attempts():
  """Attempts 1-4 grow the context by a separator (the pending EOS becomes its first
  token: one token runs); attempts 5 and 6 re-read four attempts of three digits and
  their separators (4 * 5 tokens)."""
  out = run_chains(budget=7, chain_length=7, num_problems=1)
  prompt = int(fakes.batch(1).prompt_lengths[0])
  assert float(out.compute.policy_prefilled[0]) == (prompt - 1) + 4 * 1 + 2 * 20
  assert float(out.compute.policy_generated[0]) == 7 * 4


def test_chain_length_one_is_best_of_n():
  s = fakes.settings().replace(attempt_separator=SEPARATOR)
  batch = fakes.batch(3)
  rng = jax.random.PRNGKey(3)
  chains = jax.jit(sequential_revisions, static_argnames=("budget", "chain_length"))(
      fakes.MODELS, batch, rng, Sampler(), settings=s, budget=5, chain_length=1)
  flat = jax.jit(best_of_n, static_argnames=("budget",))(
      fakes.MODELS, batch, rng, Sampler(), settings=s, budget=5)
  for name in ("tokens", "step_end", "lengths", "step_scores", "step_mask", "finished"):
    np.testing.assert_array_equal(getattr(chains, name), getattr(flat, name), err_msg=name)
  for name in ("policy_generated", "policy_prefilled", "policy_context", "prm_scored",
               "prm_context"):
    np.testing.assert_allclose(getattr(chains.compute, name), getattr(flat.compute, name),
                               err_msg=name)
  np.testing.assert_array_equal(chains.chain, flat.chain)


def test_a_chain_does_not_depend_on_the_other_chains_or_problems():
  big = run_chains(budget=21, chain_length=7, num_problems=2)
  small = run_chains(budget=7, chain_length=7, num_problems=1)
  np.testing.assert_array_equal(big.tokens[0, :7], small.tokens[0])


@pytest.mark.parametrize("budget,chain_length,message", [
    (8, 0, "chain_length must lie"), (4, 8, "chain_length must lie"), (8, 3, "must divide")])
def test_bad_chain_lengths_are_refused(budget, chain_length, message):
  with pytest.raises(ValueError, match=message):
    get_strategy("revisions").validate(budget, {"chain_length": chain_length})


def test_revisions_need_a_separator_and_room_in_the_cache():
  s = fakes.settings()
  with pytest.raises(ValueError, match="attempt_separator"):
    sequential_revisions(fakes.MODELS, fakes.batch(1), jax.random.PRNGKey(0), Sampler(),
                         s, budget=2, chain_length=2)


def test_strategy_facts():
  strategy = get_strategy("revisions")
  s = settings()
  assert strategy.rows_per_problem(16, {"chain_length": 4}) == 4
  assert strategy.generation_budget(16, {"chain_length": 4}) == 16
  assert strategy.policy_cache_capacity(10, s, {"chain_length": 1}) == 10 + 4 + 1
  assert strategy.policy_cache_capacity(10, s, {"chain_length": 16}) == 10 + 4 + 1 + 4 * (4 + 2)


# ------------------------------------------------------------------- revision data


def _record(uid, texts, correct):
  return {"uid": uid, "prompt": "1+1=?\n",
          "samples": [{"text": t, "correct": c} for t, c in zip(texts, correct)]}


def test_revision_examples_follow_the_papers_rule():
  texts = ["1+1=2\n\nAnswer: 2", "1+1=3\n\nAnswer: 3", "1+1=20\n\nAnswer: 20",
           "9+9=9\n\nAnswer: 99", "1+1=2\n\nAnswer: 2", "7\n\nAnswer: 77", "5"]
  correct = [True, False, False, False, True, False, False]
  records = [_record("q", texts, correct), _record("none-right", ["1", "2"], [False, False]),
             _record("all-right", ["1+1=2\n\nAnswer: 2"], [True])]
  examples = rev_data.build_examples(records, np.random.default_rng(0))
  by_uid = {}
  for e in examples:
    by_uid.setdefault(e.uid, []).append(e)
  assert "none-right" not in by_uid  # no target
  assert [e.previous for e in by_uid["all-right"]] == [()]  # no incorrect: k capped at 0
  wrong = [t for t, c in zip(texts, correct) if not c]
  assert len(by_uid["q"]) == 2  # one per correct sample
  for e in by_uid["q"]:
    assert e.target == "1+1=2\n\nAnswer: 2"
    assert len(set(e.previous)) == len(e.previous) and set(e.previous) <= set(wrong)
    if e.previous:  # the closest incorrect sample by edit distance comes last
      assert e.previous[-1] == "1+1=3\n\nAnswer: 3"
  # The counts are uniform on 0..4 before the cap: over many draws each count appears.
  many = rev_data.build_examples([_record("q", texts, correct)] * 200, np.random.default_rng(1))
  counts = np.bincount([len(e.previous) for e in many], minlength=5)
  assert counts.min() > 40 and counts.sum() == 400


def test_revision_examples_refuse_other_data():
  with pytest.raises(ValueError, match="not a revision sample record"):
    rev_data.build_examples([{"uid": "x", "prompt": "p", "samples": [{"steps": []}]}],
                            np.random.default_rng(0))
  with pytest.raises(ValueError, match="max_previous"):
    rev_data.build_examples([], np.random.default_rng(0), max_previous=5)


def _context(state):
  """The tokens a decode state's row 0 continues from: its cache's, then the pending one."""
  n = int(state.lengths[0])
  return [int(t) for t in state.cache["tokens"][0, :n]] + [int(state.pending[0])]


@pytest.mark.parametrize("max_solution_tokens", [4, 3])
def test_training_context_is_the_searchs_context(max_solution_tokens):
  """Token for token, the SFT context (`revision_prompt_tokens`) is what a chain's cache
  holds before an attempt: grown by separators, and re-read after truncation."""
  s = settings(max_solution_tokens)
  batch = echo_batch(1, revision_cache_capacity(fakes.batch(1).prompts.shape[1], s, 8))
  models = fakes.MODELS.replace(policy_fn=echo_policy)
  question, _ = prefill(echo_policy, None, batch.policy_cache, batch.prompts,
                        batch.prompt_lengths, 200)
  question = question.with_keys(jnp.zeros((1, 2), jnp.uint32) + jnp.uint32(7))
  state, texts, tokens, lengths = question, [], [], []
  for position in range(6):
    out = sample_steps(echo_policy, None, state.replace(prompt_lengths=state.lengths + 1),
                       Sampler(), max_new_tokens=max_solution_tokens, eos_id=s.eos_id,
                       max_steps=None, max_solution_tokens=max_solution_tokens, pad_id=s.pad_id)
    row = np.asarray(out.tokens[0, :out.lengths[0]])
    texts.append(TOK.decode(row))
    tokens.append(np.pad(row, (0, max_solution_tokens - len(row))))
    lengths.append(len(row) - int(row[-1] == s.eos_id))
    grown, _ = rev_search._separate(models, out.state, s)
    expected = rev_data.revision_prompt_tokens(TOK, "=?\n", texts, SEPARATOR)
    if position < 4:
      assert _context(grown) == expected, position
    state = grown.replace(finished=jnp.zeros((1,), bool))
  attempts = jnp.asarray(np.stack(tokens))[None]
  reread, ran = rev_search._reread(models, question, attempts, jnp.asarray([lengths]), 6, s)
  expected = rev_data.revision_prompt_tokens(TOK, "=?\n", texts, SEPARATOR)  # the last 4
  assert _context(reread) == expected
  assert int(ran[0]) == sum(lengths[2:]) + 4 * len(SEPARATOR)


def test_separator_must_be_expressible():
  with pytest.raises(ValueError, match="cannot express"):
    separator_tokens(TOK, "<sep>")
  with pytest.raises(ValueError, match="empty"):
    separator_tokens(TOK, "")
  assert separator_tokens(TOK, "\n\n\n") == [NEWLINE] * 3


# ------------------------------------------------------------------------ the study


def _synthetic_table():
  """Two bins of 10 questions; accuracy is the same for every question of a bin, so the
  held-out choice is the fitted one. At budget 4: bin 1 is best served by L = 4, bin 2 by
  beam; among revisions alone bin 2 takes L = 2."""
  from ttcjax.study.allocation import Option, ResultTable
  per_bin = {  # option -> (bin 1, bin 2)
      ("best_of_n", 1): (0.5, 0.1), ("best_of_n", 2): (0.6, 0.15), ("best_of_n", 4): (0.7, 0.2),
      ("revisions_l1", 1): (0.5, 0.1), ("revisions_l1", 2): (0.6, 0.15),
      ("revisions_l1", 4): (0.7, 0.2), ("revisions_l2", 2): (0.7, 0.2),
      ("revisions_l2", 4): (0.8, 0.3), ("revisions_l4", 4): (0.95, 0.25),
      ("beam_m2", 2): (0.55, 0.3), ("beam_m2", 4): (0.6, 0.5)}
  bins = np.array([0] * 10 + [1] * 10)
  options = tuple(Option(s, b) for s, b in per_bin)
  accuracy = np.array([[per_bin[(o.strategy, o.budget)][k] for k in bins] for o in options])
  cost = np.array([[float(o.budget)] * 20 for o in options])
  return ResultTable(options, accuracy, cost, tuple(f"q{i}" for i in range(20))), bins


def test_compute_optimal_revisions_and_the_combined_solver_find_the_known_optimum():
  from ttcjax.study.revisions import analyse_revisions
  table, bins = _synthetic_table()
  lengths = {"revisions_l1": 1, "revisions_l2": 2, "revisions_l4": 4}
  records = [{"name": "revisions", "strategy": "revisions_l2", "hyper": {"chain_length": 2},
              "correct": [True, False, False, True]}]
  out = analyse_revisions(table, {"oracle": bins}, 2, [1, 2, 4], lengths, repeats=4, seed=0,
                          records=records)
  at4 = {p["budget"]: p for p in out["compute_optimal"]["oracle"]}[4]
  assert [c["strategy"] for c in at4["choice"]] == ["revisions_l4", "revisions_l2"]
  assert at4["accuracy"] == pytest.approx((0.95 + 0.3) / 2)
  combined4 = {p["budget"]: p for p in out["combined"]["oracle"]}[4]
  assert [c["strategy"] for c in combined4["choice"]] == ["revisions_l4", "beam_m2"]
  assert combined4["accuracy"] == pytest.approx((0.95 + 0.5) / 2)
  assert out["best_ratio_per_bin"][4] == [
      {"chain_length": 4, "accuracy": pytest.approx(0.95)},
      {"chain_length": 2, "accuracy": pytest.approx(0.3)}]
  assert out["accuracy_by_ratio"][4] == {1: pytest.approx(0.45), 2: pytest.approx(0.55),
                                         4: pytest.approx(0.6)}
  assert out["transitions"]["right_to_wrong"] == 1.0 and out["transitions"]["wrong_to_right"] == 1.0
  # Parallel (L = 1) needs more than 4x the budget to reach 0.625 at budget 4 (it tops out
  # at 0.45): a lower bound.
  assert out["efficiency_ratio"]["oracle"][4]["bound"] == "at least"
  claims = {f["claim"].split(" (")[0]: f["holds"] for f in out["findings"]}
  assert claims["Easy questions prefer fully sequential revisions."] is True
  assert claims["Harder questions prefer an intermediate sequential:parallel ratio."] is True


def test_revision_analysis_needs_the_parallel_setting():
  from ttcjax.study.revisions import analyse_revisions
  table, bins = _synthetic_table()
  with pytest.raises(ValueError, match="chain_length 1"):
    analyse_revisions(table, {"oracle": bins}, 2, [2, 4], {"revisions_l2": 2}, 2, 0, [])
