"""Searches through `SearchRunner` with a published PRM's layout (`PrmAdapter`).

The step scores a search reads inside jit (PRM prefilled with the adapter's prompt,
each step fed through the adapter's wrapper and the PRM's KV cache, caches forked
by beam search) equal `adapter.score_solutions` of the decoded candidate steps, one
whole-solution pass on the host.

The PRMs are the tiny random checkpoints of `test_prm_adapters`. The tokenizers have
one token per character (no merges), so the random policy's tokens survive the trip
through text that the host path takes. The policy is a tiny ttcjax transformer whose
output head is set to favour newlines and EOS, so that steps end at the "\\n\\n"
delimiter (which the adapters strip), at the step cap and at EOS.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

try:
  from tests import hf_models  # pylint: disable=wrong-import-position
  from tests.test_prm_adapters import CORPUS, FAMILIES, MODEL_VOCAB, PROBLEMS
except ImportError:
  import hf_models  # pylint: disable=wrong-import-position
  from test_prm_adapters import CORPUS, FAMILIES, MODEL_VOCAB, PROBLEMS

from ttcjax.sweep import memory_plan  # pylint: disable=wrong-import-position
from ttcjax.models.config import TransformerConfig  # pylint: disable=wrong-import-position
from ttcjax.models.hf_import import load_hf_tokenizer  # pylint: disable=wrong-import-position
from ttcjax.models.prm_adapters import load_adapted_prm  # pylint: disable=wrong-import-position
from ttcjax.models.transformer import init_params  # pylint: disable=wrong-import-position
from ttcjax.sampling import Sampler  # pylint: disable=wrong-import-position
from ttcjax.sweep.runner import SearchRunner  # pylint: disable=wrong-import-position
from ttcjax.tasks.arith import testbed  # pylint: disable=wrong-import-position

ATOL = 1e-5
BUDGET = 4
# Steps of up to 8 tokens; S = T, so no solution has more steps than score columns.
CAPS = dict(max_prompt_tokens=32, max_prm_prompt_tokens=160, max_step_tokens=8,
            max_solution_tokens=32, max_steps=32, max_rounds=6)


def _policy(tokenizer):
  """A ttcjax transformer over the tokenizer's vocabulary that draws tokens almost
  independently: "\\n" likely (so "\\n\\n" ends steps), EOS now and then.

  Residual dimension 0 is 8 for every token and the rest is tiny (init std 0.02), so
  after the final RMSNorm the hidden state is about (sqrt(H), 0, ...) and the logits
  are sqrt(H) times row 0 of the output head.
  """
  config = TransformerConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=1,
                             num_heads=2, num_kv_heads=1, intermediate_size=32,
                             max_position_embeddings=512)
  params = init_params(config, jax.random.PRNGKey(5))
  logits = np.zeros((config.vocab_size,), np.float32)
  logits[tokenizer.encode("\n")[0]], logits[tokenizer.eos_id] = 3.5, 1.0
  embedding = np.asarray(params["embed_tokens"]["embedding"]).copy()
  embedding[:, 0] = 8.0
  kernel = np.asarray(params["lm_head"]["kernel"]).copy()
  kernel[0] = logits / np.sqrt(config.hidden_size)
  params = {**params, "embed_tokens": {"embedding": embedding}, "lm_head": {"kernel": kernel}}
  return config, jax.tree.map(np.asarray, params)


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
  """family -> (runner kwargs, adapter, prm config, prm params); built on first use."""
  root, built = tmp_path_factory.mktemp("search_adapters"), {}

  def get(family):
    if family not in built:
      path, spec = str(root / family), FAMILIES[family]
      if family == "qwen_math_prm":
        hf_models.save_qwen2_prm(path, seed=11, vocab_size=MODEL_VOCAB)
      else:
        hf_models.save_causal_lm("mistral" if family == "math_shepherd" else "llama", path,
                                 seed=12, vocab_size=MODEL_VOCAB)
      hf_models.save_bpe_tokenizer(path, CORPUS, special_tokens=spec["special"],
                                   added_tokens=spec.get("added", []),
                                   tokenizer_config=spec["config"], bos_token=spec.get("bos"),
                                   characters_only=True)
      adapter, prm_config, prm_params = load_adapted_prm(path, family)
      tokenizer = load_hf_tokenizer(path)
      runner = dict(policy=_policy(tokenizer), prm=(prm_config, prm_params), tokenizer=tokenizer,
                    answer_fn=lambda text: None, prm_adapter=adapter, **CAPS)
      built[family] = (runner, adapter, prm_config, prm_params)
    return built[family]

  return get


def _search(runner, strategy, **hyper):
  return runner.search(strategy, list(PROBLEMS), list(range(len(PROBLEMS))), budget=BUDGET,
                       rng=jax.random.PRNGKey(3), sampler=Sampler(temperature=1.0),
                       problem_texts=list(PROBLEMS), **hyper)


@pytest.mark.parametrize("strategy,hyper", [("best_of_n", {}), ("beam", {"beam_width": 2})])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_search_scores_equal_host_scores(setups, family, strategy, hyper):
  kwargs, adapter, prm_config, prm_params = setups(family)
  runner = SearchRunner(**kwargs)
  result = _search(runner, strategy, **hyper)
  steps = runner.candidate_steps(result)
  # The memory plan sizes the PRM cache as the runner does.
  plan = memory_plan.plan_search_memory(
      kwargs["policy"][0], prm_config, strategy=strategy, budget=BUDGET,
      problems_per_batch=len(PROBLEMS), prm_suffix_length=len(adapter.suffix_ids), **CAPS)
  assert plan.prm_capacity == runner.prm_capacity(strategy)
  errors, all_scores, delimited = [], [], 0
  for p, problem in enumerate(PROBLEMS):
    host = adapter.score_solutions(prm_params, prm_config, [problem] * BUDGET, steps[p])
    for n in range(BUDGET):
      count = int(result.step_mask[p, n].sum())
      assert count == len(host[n]) == len(steps[p][n]) >= 1
      got = result.step_scores[p, n, :count]
      errors.append(np.abs(got - np.asarray(host[n])).max())
      all_scores += list(got)
      delimited += sum(step.endswith("\n\n") for step in steps[p][n])
    if strategy == "best_of_n":
      # The PRM ran its prompt once and each solution's layout (the stripped steps and
      # their suffixes) once: the compute record counts exactly those tokens.
      prompt = len(adapter.prompt_ids(problem))
      want = prompt + sum(len(adapter.layout(problem, s)[0]) - prompt for s in steps[p])
      assert result.compute["prm_scored"][p] == want
  error = max(errors)
  print(f"{family} {strategy}: max |search - host| = {error:.2e} over {len(all_scores)} steps, "
        f"{delimited} ending in a delimiter")
  assert delimited > 0, "no step ended at the delimiter: stripping would go untested"
  assert np.std(all_scores) > 1e-3, "constant scores: the test would be weak"
  assert error <= ATOL, f"{family} {strategy}: max abs diff {error:.2e} > {ATOL}"


def test_best_of_n_beyond_the_score_columns_stays_finite(setups):
  """With fewer score columns than steps, best-of-N tells the adapter only the ends the
  table keeps: the first steps score as on the host, the last column is finite."""
  kwargs, adapter, prm_config, prm_params = setups("qwen_math_prm")
  runner = SearchRunner(**{**kwargs, "max_steps": 2})
  result = _search(runner, "best_of_n")
  steps = runner.candidate_steps(result)
  assert max(len(s) for row in steps for s in row) > 2, "no solution overflows the columns"
  assert np.isfinite(result.step_scores).all()
  for p, problem in enumerate(PROBLEMS):
    host = adapter.score_solutions(prm_params, prm_config, [problem] * BUDGET, steps[p])
    np.testing.assert_allclose(result.step_scores[p, :, 0], [h[0] for h in host], atol=ATOL)


def test_tokenizer_mismatch_is_refused(setups):
  kwargs, *_ = setups("qwen_math_prm")
  with pytest.raises(ValueError, match="must share a tokenizer.*score_solutions"):
    SearchRunner(**{**kwargs, "tokenizer": testbed.tokenizer()})


def test_problem_texts_are_required(setups):
  kwargs, *_ = setups("qwen_math_prm")
  runner = SearchRunner(**kwargs)
  with pytest.raises(ValueError, match="needs problem_texts"):
    runner.search("best_of_n", list(PROBLEMS), [0, 1], budget=BUDGET, rng=jax.random.PRNGKey(0))


@pytest.mark.parametrize("strategy,hyper", [("best_of_n", {}), ("beam", {"beam_width": 2})])
def test_prm_passes_in_row_slices_give_the_same_search(setups, strategy, hyper):
  """8 rows at most 3 per pass: 4 strided slices of 2 rows each, one after another."""
  kwargs, *_ = setups("qwen_math_prm")
  whole = _search(SearchRunner(**kwargs), strategy, **hyper)
  sliced = _search(SearchRunner(**kwargs, prm_rows_per_pass=3), strategy, **hyper)
  np.testing.assert_array_equal(sliced.tokens, whole.tokens)
  np.testing.assert_array_equal(sliced.step_mask, whole.step_mask)
  np.testing.assert_allclose(sliced.step_scores, whole.step_scores, atol=1e-6)
  for field in ("prm_scored", "prm_context", "policy_generated"):
    np.testing.assert_array_equal(sliced.compute[field], whole.compute[field])


def test_row_slices_divide_the_rows(setups):
  from ttcjax.search.frontier import num_prm_slices  # pylint: disable=import-outside-toplevel
  assert num_prm_slices(8, 0) == 1 and num_prm_slices(8, 8) == 1
  assert num_prm_slices(8, 3) == 4 and num_prm_slices(12, 5) == 3 and num_prm_slices(7, 2) == 7
  kwargs, *_ = setups("qwen_math_prm")
  with pytest.raises(ValueError, match="prm_rows_per_pass must be 0"):
    SearchRunner(**kwargs, prm_rows_per_pass=-1)


@pytest.mark.parametrize("strategy,hyper", [("beam", {"beam_width": 2})])
def test_shared_prompts_and_prompt_buckets_search_as_the_dense_runner(setups, strategy, hyper):
  """The real-size configs' layout (prompts cached once, padded to the batch's bucket)
  finds what the dense runner finds, through a published PRM's adapter."""
  kwargs, *_ = setups("qwen_math_prm")
  kwargs = {**kwargs, "max_prompt_tokens": 64, "max_prm_prompt_tokens": 256}  # room to cut
  dense = _search(SearchRunner(**kwargs), strategy, **hyper)
  lean = SearchRunner(**kwargs, share_prompt_cache=True, prompt_buckets=True)
  widths = [len(lean.prm_adapter.prompt_ids(p)) for p in PROBLEMS]  # 113-117 tokens
  assert lean._width(np.asarray(widths), 256) == 128
  result = _search(lean, strategy, **hyper)
  assert result.texts == dense.texts
  np.testing.assert_allclose(result.step_scores, dense.step_scores, atol=1e-4)
  for name, values in dense.compute.items():
    np.testing.assert_allclose(result.compute[name], values)
