"""Searches at published model shapes without a checkpoint: random weights, steps cut
by a token-id rule, batches of empty caches.

`build_search` makes one search call exactly as the runner would run it (the
strategy's function, the transformer's `DecodeFn`, the PRM's `PrmFn` behind a
published PRM's adapter layout) together with its arguments as shapes;
`memory_check` lowers it from those shapes without allocating, `bench_scale` fills
them (`materialise`) and runs it.

Random weights never emit a real delimiter, so steps are cut by a rule on token ids
(`every_kth_token_delimiter`): a token whose id is a multiple of k ends a step. A
randomly initialised model samples close to uniformly over its vocabulary, so steps
last about k tokens (geometrically distributed); callers report the lengths the
search actually produced. End of solution is never sampled (the EOS id is one the
rule does not touch and a random model almost never picks), so rows end at the
step or token caps, the longest search the caps allow.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.cache import KVCache, SharedPrefixCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params, transformer_prm_fn
from ttcjax.models.prm_adapters import QwenMathPrmAdapter
from ttcjax.models.transformer import init_params
from ttcjax.sampling import Sampler, StepDelimiter, transformer_decode_fn
from ttcjax.search import get_strategy
from ttcjax.search.base import SearchBatch, SearchModels, SearchSettings, prm_cache_capacity

BEAM_WIDTH = 4  # the MATH configs' beam width (M of beam, lookahead, DVTS)


def every_kth_token_delimiter(vocab: int, k: int) -> StepDelimiter:
  """A one-state delimiter: token ids 0, k, 2k, ... complete a step (k >= 1)."""
  if k < 1:
    raise ValueError(f"A step must last at least one token on average; got k = {k}.")
  completes = (np.arange(vocab) % k == 0)[None]
  return StepDelimiter(next_state=jnp.zeros((1, vocab), jnp.int32), completes=jnp.asarray(completes))


def shapes_adapter(vocab: int, suffix_length: int) -> QwenMathPrmAdapter:
  """A PRM adapter of a family's suffix length over a vocabulary, for shapes and
  synthetic runs (trivial token tables: no token is dropped or stripped)."""
  return QwenMathPrmAdapter(path="(synthetic)", tokenizer=None, suffix_ids=(1,) * suffix_length,
                            drop_table=np.zeros(vocab, bool),
                            rstrip_table=np.arange(vocab, dtype=np.int32))


@dataclasses.dataclass(frozen=True)
class SyntheticSearch:
  """One search call and its arguments as shapes.

  Attributes:
    call: (policy_params, prm_params, batch, rng, sampler, settings) -> SearchOutput.
    args: `jax.ShapeDtypeStruct` trees of those six arguments (settings as a tree of
      its arrays; its static fields ride along).
    settings: the concrete `SearchSettings` (the delimiter table filled).
    policy, prm: the models' configs.
    strategy, budget, problems: what the call searches.
  """

  call: Callable[..., Any]
  args: tuple
  settings: SearchSettings
  policy: TransformerConfig
  prm: PrmConfig
  strategy: str
  budget: int
  problems: int


def build_search(policy: TransformerConfig, prm: PrmConfig, suffix_length: int, strategy: str,
                 budget: int, problems: int, caps: dict, shared: bool,
                 step_tokens: int = 0, page_size: int = 0) -> SyntheticSearch:
  """One search call over random-weight models of the given shapes.

  Args:
    policy, prm: the configs (`TransformerConfig`, `PrmConfig`).
    suffix_length: a published PRM layout's suffix tokens per step (0: the PRM reads
      the policy's tokens as they are, as on the testbed).
    strategy, budget, problems: the call; beam widths are `BEAM_WIDTH`.
    caps: max_prompt_tokens, max_prm_prompt_tokens, max_step_tokens,
      max_solution_tokens, max_steps, max_rounds, prm_rows_per_pass.
    shared: `SharedPrefixCache` (True) or dense caches.
    step_tokens: k of `every_kth_token_delimiter` (0: a delimiter that never fires,
      which only shapes need).
    page_size: with `shared`, rows kept in pages of this many slots (0: dense rows);
      `SearchRunner`'s `kv_page_size`.
  """
  record = get_strategy(strategy)
  hyper = {"beam_width": BEAM_WIDTH} if "beam_width" in record.hyperparameters else {}
  record.validate(budget, hyper)
  vocab = policy.vocab_size
  delimiter = (every_kth_token_delimiter(vocab, step_tokens) if step_tokens else
               StepDelimiter(next_state=jnp.zeros((2, vocab), jnp.int32),
                             completes=jnp.zeros((2, vocab), bool)))
  settings = SearchSettings(
      eos_id=vocab - 1 if (vocab - 1) % max(step_tokens, 1) else vocab - 2, pad_id=0,
      delimiter=delimiter, max_step_tokens=caps["max_step_tokens"],
      max_solution_tokens=caps["max_solution_tokens"], max_steps=caps["max_steps"],
      max_rounds=caps["max_rounds"], prm_rows_per_pass=caps["prm_rows_per_pass"]).check()
  prompt, prm_prompt = caps["max_prompt_tokens"], caps["max_prm_prompt_tokens"]
  policy_capacity = record.policy_cache_capacity(prompt, settings, hyper)
  suffixes = record.prm_suffixes_per_row(settings, hyper)
  prm_capacity = prm_cache_capacity(prm_prompt, settings, suffix_length, suffixes)

  def empty(config, capacity, width):
    if shared:
      return SharedPrefixCache.init(config, problems, width, capacity - width,
                                    page_size=page_size)
    return KVCache.init(config, problems, capacity)

  score = transformer_prm_fn(prm)
  if suffix_length:  # a published PRM's layout
    score = shapes_adapter(prm.backbone.vocab_size, suffix_length).wrap_prm_fn(
        score, max_steps_per_chunk=record.prm_chunk_steps(settings, hyper))
  decode = transformer_decode_fn(policy)

  def call(policy_params, prm_params, batch, rng, sampler, settings):
    models = SearchModels(decode, policy_params, score, prm_params)
    return record.fn(models, batch, rng, sampler, settings, budget=budget, **hyper)

  as_struct = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  batch = SearchBatch(
      prompts=ints(problems, prompt), prompt_lengths=ints(problems), problem_ids=ints(problems),
      policy_cache=jax.eval_shape(lambda: empty(policy, policy_capacity, prompt)),
      prm_cache=jax.eval_shape(lambda: empty(prm.backbone, prm_capacity, prm_prompt)),
      prm_prompts=ints(problems, prm_prompt) if suffix_length else None,
      prm_prompt_lengths=ints(problems) if suffix_length else None)
  key = jax.random.PRNGKey(0)
  args = (jax.eval_shape(lambda: init_params(policy, key)),
          jax.eval_shape(lambda: init_prm_params(prm, key)), batch,
          jax.ShapeDtypeStruct((2,), jnp.uint32),
          Sampler(temperature=jax.ShapeDtypeStruct((), jnp.float32),
                  top_p=jax.ShapeDtypeStruct((), jnp.float32)),
          as_struct(settings))
  return SyntheticSearch(call, args, settings, policy, prm, strategy, budget, problems)


def random_params(search: SyntheticSearch, seed: int = 0) -> tuple[Any, Any]:
  """(policy params, PRM params): random weights of the search's shapes, made on the
  default device inside jit (a 7B model never passes through the host)."""
  policy_key, prm_key = jax.random.split(jax.random.PRNGKey(seed))
  policy = jax.jit(lambda k: init_params(search.policy, k))(policy_key)
  prm = jax.jit(lambda k: init_prm_params(search.prm, k))(prm_key)
  return policy, prm


def materialise(search: SyntheticSearch, policy_params, prm_params, seed: int = 0) -> tuple:
  """The six arguments of `search.call`: the given params, full-length random prompts
  (ids in [1, vocab)), empty caches, a PRNG key, temperature 1 and top-p 1."""
  _, _, batch, _, _, _ = search.args
  rng = np.random.default_rng(seed)
  problems, width = batch.prompts.shape

  def prompts(shape, vocab):
    return jnp.asarray(rng.integers(1, vocab, shape), jnp.int32)

  def empty(struct):  # zeros of every array leaf; static fields ride in the treedef
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), struct)

  filled = SearchBatch(
      prompts=prompts((problems, width), search.policy.vocab_size),
      prompt_lengths=jnp.full((problems,), width, jnp.int32),
      problem_ids=jnp.arange(problems, dtype=jnp.int32),
      policy_cache=empty(batch.policy_cache), prm_cache=empty(batch.prm_cache),
      prm_prompts=(None if batch.prm_prompts is None else
                   prompts(batch.prm_prompts.shape, search.prm.backbone.vocab_size)),
      prm_prompt_lengths=(None if batch.prm_prompt_lengths is None else
                          jnp.full((problems,), batch.prm_prompts.shape[1], jnp.int32)))
  sampler = Sampler(temperature=jnp.float32(1.0), top_p=jnp.float32(1.0))
  return (policy_params, prm_params, filled, jax.random.PRNGKey(seed), sampler, search.settings)
