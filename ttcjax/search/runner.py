"""Running strategies on text prompts with transformer models, optionally on a mesh.

`SearchRunner` owns the host side: tokenising prompts into fixed-shape batches,
allocating caches, compiling each (strategy, hyperparameters, budget) once, placing
the batch on a device mesh (problems sharded over the "data" axis), and decoding
the candidates back into texts and answers.

P denotes the problems of one call, N the budget (rows per problem).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ttcjax import parallel
from ttcjax.models.cache import KVCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig
from ttcjax.models.tokenizer import Tokenizer, pad_batch
from ttcjax.sampling import Sampler, StepDelimiter, transformer_decode_fn
from ttcjax.search import get_strategy
from ttcjax.search.base import SearchBatch, SearchSettings, cache_capacity, transformer_prm_fn

DATA_AXIS = parallel.DATA_AXIS


@dataclasses.dataclass
class SearchResult:
  """One search over P problems, on the host.

  Attributes:
    texts: P lists of N candidate solutions.
    answers: P lists of N canonical answers (None: unparsable).
    step_scores: [P, N, S] float32.
    step_mask: [P, N, S] bool.
    finished: [P, N] bool.
    lengths: [P, N] generated tokens per candidate.
    compute: {field: [P] float} of the `ComputeRecord`.
  """

  texts: list[list[str]]
  answers: list[list[Hashable | None]]
  step_scores: np.ndarray
  step_mask: np.ndarray
  finished: np.ndarray
  lengths: np.ndarray
  compute: dict[str, np.ndarray]

  def take(self, count: int) -> "SearchResult":
    """The first `count` problems (drops a padded batch's filler)."""
    return SearchResult(self.texts[:count], self.answers[:count], self.step_scores[:count],
                        self.step_mask[:count], self.finished[:count], self.lengths[:count],
                        {k: v[:count] for k, v in self.compute.items()})


class SearchRunner:
  """Runs any registered strategy over batches of prompts.

  Args:
    policy: (config, params) of the policy.
    prm: (config, params) of the PRM.
    tokenizer: shared by both models.
    answer_fn: solution text -> canonical answer (None when unparsable).
    max_prompt_tokens: P, prompt buffer (longer prompts raise).
    max_step_tokens, max_solution_tokens, max_steps, max_rounds: see `SearchSettings`.
    step_delimiter: the text that ends a step.
    mesh: optional `Mesh` with a "data" axis (problems are sharded over it) and
      optionally a "model" axis (weights are split over it; see `ttcjax.parallel`).
  """

  def __init__(self, policy: tuple[TransformerConfig, dict], prm: tuple[PrmConfig, dict],
               tokenizer: Tokenizer, answer_fn: Callable[[str], Hashable | None], *,
               max_prompt_tokens: int, max_step_tokens: int, max_solution_tokens: int,
               max_steps: int, max_rounds: int = 40, step_delimiter: str = "\n\n",
               mesh: Mesh | None = None):
    (self.policy_config, policy_params), (self.prm_config, prm_params) = policy, prm
    self.tokenizer, self.answer_fn = tokenizer, answer_fn
    self.max_prompt_tokens = max_prompt_tokens
    self.settings = SearchSettings(
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        delimiter=StepDelimiter.build(tokenizer, step_delimiter, self.policy_config.vocab_size),
        max_step_tokens=max_step_tokens, max_solution_tokens=max_solution_tokens,
        max_steps=max_steps, max_rounds=max_rounds).check()
    self.mesh = mesh
    if mesh is not None and DATA_AXIS not in mesh.axis_names:
      raise ValueError(f"The mesh needs a {DATA_AXIS!r} axis, has {mesh.axis_names}.")
    place = (lambda p: p) if mesh is None else (lambda p: parallel.shard_params(p, mesh))
    self.policy_params = place(policy_params)
    self.prm_params = place(prm_params)
    self._compiled: dict = {}

  @property
  def data_shards(self) -> int:
    return 1 if self.mesh is None else self.mesh.shape[DATA_AXIS]

  def _function(self, strategy: str, budget: int, hyper: tuple):
    key = (strategy, budget, hyper)
    if key not in self._compiled:
      strategy_fn = get_strategy(strategy)
      decode, score = transformer_decode_fn(self.policy_config), transformer_prm_fn(self.prm_config)

      def call(policy_params, prm_params, batch, rng, sampler, settings):
        return strategy_fn(decode, policy_params, score, prm_params, batch, rng, sampler,
                           settings, budget=budget, **dict(hyper))

      self._compiled[key] = jax.jit(call)
    return self._compiled[key]

  def _batch(self, prompts: Sequence[str], problem_ids: Sequence[int]) -> SearchBatch:
    tokens, lengths = pad_batch(self.tokenizer, prompts, width=self.max_prompt_tokens)
    rows = len(prompts)
    capacity = cache_capacity(self.max_prompt_tokens, self.settings)
    batch = SearchBatch(
        prompts=jnp.asarray(tokens), prompt_lengths=jnp.asarray(lengths),
        problem_ids=jnp.asarray(problem_ids, jnp.int32),
        policy_cache=KVCache.init(self.policy_config, rows, capacity),
        prm_cache=KVCache.init(self.prm_config.backbone, rows, capacity))
    return batch if self.mesh is None else parallel.shard_batch(batch, self.mesh)

  def search(self, strategy: str, prompts: Sequence[str], problem_ids: Sequence[int], *,
             budget: int, rng: jax.Array, sampler: Sampler = Sampler(),
             **hyper) -> SearchResult:
    """Runs `strategy` on the prompts (one compile per strategy, budget, hyperparameters
    and batch size; pad the last batch to reuse it).

    Args:
      strategy: a name in `ttcjax.search.STRATEGIES`.
      prompts: P prompt texts; P must be a multiple of the mesh's data axis.
      problem_ids: P stable ids (a problem's result depends only on rng and its id).
      budget: N.
      rng: key (not consumed).
      sampler: how steps are sampled.
      **hyper: the strategy's hyperparameters (beam_width, lookahead_steps, temperature).
    """
    if not prompts:
      raise ValueError("No prompts to search.")
    if len(prompts) != len(problem_ids):
      raise ValueError(f"{len(prompts)} prompts but {len(problem_ids)} problem ids.")
    if len(prompts) % self.data_shards:
      raise ValueError(f"{len(prompts)} problems do not split over {self.data_shards} data "
                       "shards; pad the batch to a multiple.")
    sampler.check()
    fn = self._function(strategy, budget, tuple(sorted(hyper.items())))
    out = fn(self.policy_params, self.prm_params, self._batch(prompts, problem_ids), rng,
             sampler, self.settings)
    out = jax.device_get(out)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    texts = [[self.tokenizer.decode(tokens[p, n, :lengths[p, n]]) for n in range(tokens.shape[1])]
             for p in range(tokens.shape[0])]
    return SearchResult(
        texts=texts, answers=[[self.answer_fn(t) for t in row] for row in texts],
        step_scores=np.asarray(out.step_scores), step_mask=np.asarray(out.step_mask),
        finished=np.asarray(out.finished), lengths=lengths,
        compute={f.name: np.asarray(getattr(out.compute, f.name))
                 for f in dataclasses.fields(out.compute)})
