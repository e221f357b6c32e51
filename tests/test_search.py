"""Search strategies: exact survivors on fakes, contracts on real tiny models, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import search_fakes as fakes
from ttcjax import compute, search
from ttcjax.models.cache import KVCache, SharedPrefixCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params, score_steps
from ttcjax.models.transformer import init_params
from ttcjax.sampling import Sampler, prefill, row_keys, sample_steps, transformer_decode_fn
from ttcjax.search import counts

RNG = jax.random.PRNGKey(7)


@functools.lru_cache(maxsize=None)
def compiled(strategy, hyper):
  """One jitted search per (strategy, hyperparameters), shared by the tests."""
  strategy_fn = search.get_strategy(strategy).fn

  def call(batch, rng, sampler, settings):
    return strategy_fn(fakes.MODELS, batch, rng, sampler, settings, **dict(hyper))

  return jax.jit(call)


def run(strategy, num_problems=1, problem_ids=None, settings=None, **hyper):
  fn = compiled(strategy, tuple(sorted(hyper.items())))
  return fn(fakes.batch(num_problems, problem_ids), RNG, Sampler(), settings or fakes.settings())


def top_rows(values, keep):
  """Indices of the `keep` best values, ties to the lower index."""
  return sorted(sorted(range(len(values)), key=lambda i: (-values[i], i))[:keep])


# ------------------------------------------------------------------ exact survivors


def test_best_of_n_solutions_and_scores():
  out = run("best_of_n", budget=6)
  digits = fakes.step_digits(out)
  assert all(len(d) == 3 for d in digits) and bool(out.finished.all())
  np.testing.assert_allclose(out.step_scores[0, :, :3], np.array(digits) / 10.0, atol=1e-6)
  assert not bool(out.step_mask[0, :, 3:].any())
  # Six solutions of 8 tokens; the 4-token prompt runs once through each model.
  np.testing.assert_allclose(out.compute.policy_generated, [48.0])
  np.testing.assert_allclose(out.compute.policy_prefilled, [3.0])
  np.testing.assert_allclose(out.compute.prm_scored, [4.0 + 48.0])


def test_best_of_n_with_one_sample_is_one_sample():
  out = run("best_of_n", budget=1)
  b = fakes.batch(1)
  s = fakes.settings()
  state, _ = prefill(fakes.policy_fn, None, b.policy_cache, b.prompts, b.prompt_lengths,
                     search.cache_capacity(b.prompts.shape[1], s))
  keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(row_keys(RNG, b.problem_ids, 1))
  single = sample_steps(fakes.policy_fn, None, state.with_keys(keys), Sampler(),
                        max_new_tokens=s.max_solution_tokens, eos_id=s.eos_id,
                        delimiter=s.delimiter, max_steps=None, max_step_tokens=s.max_step_tokens,
                        max_solution_tokens=s.max_solution_tokens)
  np.testing.assert_array_equal(out.tokens[0, 0], single.tokens[0])


def test_beam_keeps_the_best_n_over_m_and_gives_each_m_children():
  first = [d[0] for d in fakes.step_digits(run("best_of_n", budget=8))]
  out = run("beam", budget=8, beam_width=4, settings=fakes.settings(max_rounds=1))
  survivors = top_rows(first, 2)
  got = [d[0] for d in fakes.step_digits(out)]
  assert got == [first[survivors[0]]] * 4 + [first[survivors[1]]] * 4
  # Round 0 of beam search draws the same first steps as best-of-N.
  full = run("beam", budget=8, beam_width=4)
  assert {d[0] for d in fakes.step_digits(full)} <= {first[i] for i in survivors}
  assert bool(full.finished.all())
  digits = np.array(fakes.step_digits(full))
  np.testing.assert_allclose(full.step_scores[0, :, :3], digits / 10.0, atol=1e-6)


def test_dvts_keeps_the_best_of_each_subtree():
  first = [d[0] for d in fakes.step_digits(run("best_of_n", budget=6))]
  out = run("dvts", budget=6, beam_width=3, settings=fakes.settings(max_rounds=1))
  got = [d[0] for d in fakes.step_digits(out)]
  for tree in range(2):
    best = max(first[3 * tree:3 * tree + 3])
    assert got[3 * tree:3 * tree + 3] == [best] * 3


def test_rebase_temperature_moves_from_greedy_to_uniform():
  first = [d[0] for d in fakes.step_digits(run("best_of_n", budget=4))]
  cold = run("rebase", budget=4, temperature=1e-4, settings=fakes.settings(max_rounds=1))
  assert [d[0] for d in fakes.step_digits(cold)] == [first[top_rows(first, 1)[0]]] * 4
  hot = run("rebase", budget=4, temperature=1e4, settings=fakes.settings(max_rounds=1))
  assert [d[0] for d in fakes.step_digits(hot)] == first


def test_lookahead_values_steps_after_a_greedy_rollout():
  # Greedy over uniform digits always picks 1, so every lookahead value is 0.1:
  # ties keep the lower rows, whatever their own first digits were.
  out = run("lookahead", budget=4, beam_width=2, lookahead_steps=1,
            settings=fakes.settings(max_rounds=1))
  first = [d[0] for d in fakes.step_digits(run("best_of_n", budget=4))]
  assert [d[0] for d in fakes.step_digits(out)] == [first[0]] * 2 + [first[1]] * 2
  np.testing.assert_allclose(out.step_scores[0, :, 0], 0.1, atol=1e-6)
  # The rollout's tokens are paid for: 4 first steps (3 tokens) + 4 rollouts (3).
  np.testing.assert_allclose(out.compute.policy_generated, [24.0])


def test_lookahead_with_zero_steps_is_beam_search():
  a = run("lookahead", budget=8, beam_width=2, lookahead_steps=0)
  b = run("beam", budget=8, beam_width=2)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("strategy,hyper", [
    ("best_of_n", {}), ("beam", {"beam_width": 2}), ("dvts", {"beam_width": 2}),
    ("rebase", {"temperature": 0.2}), ("lookahead", {"beam_width": 2, "lookahead_steps": 1})])
def test_rows_of_a_batch_do_not_influence_each_other(strategy, hyper):
  together = run(strategy, num_problems=3, problem_ids=[5, 9, 2], budget=4, **hyper)
  for i, pid in enumerate([5, 9, 2]):
    alone = run(strategy, num_problems=1, problem_ids=[pid], budget=4, **hyper)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x[i], y[0]), together, alone)


# ---------------------------------------------------------------- selection pieces


def test_top_counts_and_parents():
  values = jnp.array([[0.2, 0.9, 0.5, 0.9, 0.1, 0.3]])
  open_rows = jnp.array([[True, True, True, False, True, True]])
  children = counts.top_counts(values, open_rows, children_per_parent=2)
  # Five open slots, M = 2: rows 1 (0.9) and 2 (0.5) get two children, row 5 (0.3) one.
  assert children.tolist() == [[0, 2, 2, 0, 0, 1]]
  parents = counts.assign_parents(children, open_rows)
  assert parents.tolist() == [[1, 1, 2, 3, 2, 5]]


def test_balanced_counts_fill_the_open_slots():
  values = jnp.array([[0.9, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
  open_rows = jnp.array([[True, True, True, True], [False, False, False, False]])
  children = counts.balanced_counts(values, open_rows, temperature=0.2)
  assert children.sum(axis=1).tolist() == [4, 0]
  assert children[0, 0] >= children[0, 2] >= children[0, 1]


# ------------------------------------------------------------ the strategy records


def test_strategy_records_state_what_the_host_side_reads():
  caps = fakes.settings(max_rounds=5)
  bon, beam, look = (search.get_strategy(n) for n in ("best_of_n", "beam", "lookahead"))
  assert (bon.forks, bon.whole_solutions, bon.independent_samples) == (False, True, True)
  assert all(search.get_strategy(n).forks for n in ("beam", "lookahead", "dvts", "rebase"))
  assert bon.prm_chunk_steps(caps, {}) == caps.max_steps == bon.prm_suffixes_per_row(caps, {})
  assert beam.prm_chunk_steps(caps, {"beam_width": 2}) == 1
  assert beam.prm_suffixes_per_row(caps, {"beam_width": 2}) == 5
  k3 = {"beam_width": 2, "lookahead_steps": 3}
  assert look.prm_chunk_steps(caps, k3) == 3 and look.prm_suffixes_per_row(caps, k3) == 8
  assert look.generation_budget(8, k3) == 32 and look.budget_for(32, k3) == 8
  assert look.rows_per_problem(8, k3) == 16 and beam.rows_per_problem(8, {}) == 8
  assert bon.generation_budget(8, {}) == 8


@pytest.mark.parametrize("name,budget,hyper,match", [
    ("beam", 4, {"beam_widht": 2}, "takes no hyperparameter"),
    ("dvts", 4, {}, "needs the hyperparameters"),
    ("best_of_n", 4, {"temperature": 0.5}, "takes none|takes no hyperparameter"),
    ("rebase", 0, {}, "budget"),
    ("beam", 6, {"beam_width": 4}, "divide"),
])
def test_records_validate_before_anything_runs(name, budget, hyper, match):
  with pytest.raises(ValueError, match=match):
    search.get_strategy(name).validate(budget, hyper)


# ------------------------------------------------------------ contracts, real models

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=48,
            max_position_embeddings=128)


@pytest.fixture(scope="module")
def tiny_models():
  config = TransformerConfig(vocab_size=fakes.VOCAB, **TINY)
  prm_config = PrmConfig(config, head_hidden=8)
  return (config, init_params(config, jax.random.PRNGKey(0)), prm_config,
          init_prm_params(prm_config, jax.random.PRNGKey(1)))


@pytest.mark.parametrize("strategy,hyper", [
    ("best_of_n", {}), ("beam", {"beam_width": 2}), ("dvts", {"beam_width": 2}),
    ("rebase", {"temperature": 0.5}), ("lookahead", {"beam_width": 2, "lookahead_steps": 1})])
def test_strategy_contract_on_tiny_transformers(tiny_models, strategy, hyper):
  config, params, prm_config, prm_params = tiny_models
  settings = search.SearchSettings(eos_id=fakes.EOS, pad_id=0, delimiter=fakes.settings().delimiter,
                                   max_step_tokens=6, max_solution_tokens=18, max_steps=6,
                                   max_rounds=3)
  prompts = jnp.asarray([fakes.TOKENIZER.encode("12+3=?\n", add_bos=True),
                         fakes.TOKENIZER.encode("7*8=?\n\n", add_bos=True)[:8]], jnp.int32)
  capacity = search.cache_capacity(prompts.shape[1], settings)
  batch = search.SearchBatch(prompts=prompts, prompt_lengths=jnp.array([8, 7], jnp.int32),
                             problem_ids=jnp.array([0, 1], jnp.int32),
                             policy_cache=KVCache.init(config, 2, capacity),
                             prm_cache=KVCache.init(prm_config.backbone, 2, capacity))
  fn = jax.jit(functools.partial(search.get_strategy(strategy).fn, budget=4, **hyper))
  models = search.SearchModels(transformer_decode_fn(config), params,
                               search.transformer_prm_fn(prm_config), prm_params)
  out = fn(models, batch, RNG, Sampler(), settings)
  assert out.tokens.shape == (2, 4, 18) and out.step_scores.shape == (2, 4, 6)
  assert np.isfinite(np.asarray(out.step_scores)).all()
  assert ((np.asarray(out.step_scores) >= 0) & (np.asarray(out.step_scores) <= 1)).all()
  assert (np.asarray(out.lengths) <= 18).all() and (np.asarray(out.lengths) > 0).all()
  # Every scored step ends inside the solution.
  assert (np.asarray(out.step_mask).sum(-1) == np.asarray(out.step_end).sum(-1)).all()
  if strategy != "lookahead":  # lookahead stores rollout values by design
    # The scores read incrementally through forked PRM caches equal a fresh pass
    # over each final candidate.
    rows, lengths = [], []
    ends = np.zeros((8, prompts.shape[1] + 18), bool)
    tokens = np.zeros((8, prompts.shape[1] + 18), np.int32)
    for b, plen in enumerate([8, 7]):
      for n in range(4):
        r = 4 * b + n
        g = int(out.lengths[b, n])
        tokens[r, :plen] = prompts[b, :plen]
        tokens[r, plen:plen + g] = out.tokens[b, n, :g]
        ends[r, plen:plen + g] = out.step_end[b, n, :g]
        lengths.append(plen + g)
    fresh = score_steps(prm_params, prm_config, jnp.asarray(tokens), jnp.asarray(ends), 6,
                        jnp.asarray(lengths), keep_last=True)
    np.testing.assert_allclose(np.asarray(fresh.scores).reshape(2, 4, 6), out.step_scores,
                               atol=1e-5)
  flops = compute.search_flops(out.compute, compute.ModelCost.of_policy(config),
                               compute.ModelCost.of_prm(prm_config))
  assert (flops["total_flops"] > flops["policy_flops"]).all()


# DVTS and REBASE fork through the same code as beam search (only their child counts
# differ), so beam stands for them; PRM slices with best-of-N and DVTS's groups.
@pytest.mark.parametrize("strategy,hyper,rows_per_pass", [
    ("best_of_n", {}, 2), ("beam", {"beam_width": 2}, 0), ("dvts", {"beam_width": 2}, 2),
    ("lookahead", {"beam_width": 2, "lookahead_steps": 1}, 0),
    ("revisions", {"chain_length": 2}, 0)])
def test_a_shared_prompt_cache_searches_as_the_dense_one(tiny_models, strategy, hyper,
                                                         rows_per_pass):
  """Each problem's prompt stored once (`SharedPrefixCache`) gives the dense cache's
  tokens, scores and compute records (up to float rounding), PRM slices included; so
  do rows kept in pages of 4 slots (forks share pages, writes copy them)."""
  config, params, prm_config, prm_params = tiny_models
  settings = search.SearchSettings(eos_id=fakes.EOS, pad_id=0, delimiter=fakes.settings().delimiter,
                                   max_step_tokens=6, max_solution_tokens=18, max_steps=6,
                                   max_rounds=3, prm_rows_per_pass=rows_per_pass,
                                   attempt_separator=(fakes.EOS,))
  prompts = jnp.asarray([fakes.TOKENIZER.encode("12+3=?\n", add_bos=True),
                         fakes.TOKENIZER.encode("7*8=?\n\n", add_bos=True)[:8]], jnp.int32)
  width = prompts.shape[1]
  record = search.get_strategy(strategy)
  capacity = record.policy_cache_capacity(width, settings, hyper)
  prm_capacity = search.cache_capacity(width, settings)
  models = search.SearchModels(transformer_decode_fn(config), params,
                               search.transformer_prm_fn(prm_config), prm_params)
  fn = jax.jit(functools.partial(record.fn, budget=4, **hyper))
  outs = []
  for page_size in (None, 0, 4):  # dense, shared, shared and paged
    if page_size is not None:
      caches = (SharedPrefixCache.init(config, 2, width, capacity - width, page_size=page_size),
                SharedPrefixCache.init(prm_config.backbone, 2, width, prm_capacity - width,
                                       page_size=page_size))
    else:
      caches = (KVCache.init(config, 2, capacity),
                KVCache.init(prm_config.backbone, 2, prm_capacity))
    batch = search.SearchBatch(prompts=prompts, prompt_lengths=jnp.array([8, 7], jnp.int32),
                               problem_ids=jnp.array([0, 1], jnp.int32),
                               policy_cache=caches[0], prm_cache=caches[1])
    outs.append(jax.device_get(fn(models, batch, RNG, Sampler(), settings)))
  dense = outs[0]
  for shared in outs[1:]:
    np.testing.assert_array_equal(shared.tokens, dense.tokens)
    np.testing.assert_array_equal(shared.lengths, dense.lengths)
    np.testing.assert_allclose(shared.step_scores, dense.step_scores, atol=1e-5)
    for name in ("policy_generated", "policy_prefilled", "policy_context", "prm_scored",
                 "prm_context"):
      np.testing.assert_allclose(getattr(shared.compute, name), getattr(dense.compute, name))
  assert len({tuple(r) for r in dense.tokens.reshape(8, -1)}) > 2  # the rows differ


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize("strategy,hyper,match", [
    ("beam", {"budget": 6, "beam_width": 4}, "divide"),
    ("beam", {"budget": 4, "beam_width": 8}, "beam_width"),
    ("dvts", {"budget": 4, "beam_width": 0}, "beam_width"),
    ("best_of_n", {"budget": 0}, "budget"),
    ("rebase", {"budget": 4, "temperature": 0.0}, "temperature"),
    ("lookahead", {"budget": 4, "beam_width": 2, "lookahead_steps": -1}, "lookahead"),
])
def test_bad_hyperparameters_are_refused(strategy, hyper, match):
  with pytest.raises(ValueError, match=match):
    run(strategy, **hyper)


def test_unknown_strategy_is_refused():
  with pytest.raises(ValueError, match="Unknown search strategy"):
    search.get_strategy("mcts")


def test_sharded_search_equals_unsharded():
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu",  # 8 CPU devices, the suite's compile flags
             XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {os.environ.get('XLA_FLAGS', '')}")
  out = subprocess.run([sys.executable, "-m", "tests.sharding_probe"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600, check=True)
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["devices"] == 8
  for name in ("data8", "data4_model2"):
    assert report[name]["texts_equal"], report
    assert report[name]["max_score_diff"] < 1e-5, report
  # KV heads split over the model axis, rows over data: placed so, and kept so through
  # a write and a fork inside jit.
  expected = str(jax.sharding.PartitionSpec("data", "model"))
  assert report["cache_spec"] == {"placed": expected, "written": expected}, report
