"""Running strategies on text prompts with transformer models, optionally on a mesh.

`SearchRunner` owns the host side: tokenising prompts into fixed-shape batches,
allocating caches, compiling each (strategy, hyperparameters, budget) once, placing
the batch on a device mesh (problems sharded over the "data" axis), and decoding
the candidates back into texts and answers.

With a `PrmAdapter` (a published PRM's layout, `ttcjax.models.prm_adapters`) the PRM
is prefilled with the adapter's own prompt for each problem, and the `PrmFn` the
strategies get is the adapter's wrapper around the PRM: each step loses its trailing
delimiter and gets the family's suffix tokens, and its score is read where the family
reads it. The policy's token ids go to the PRM as they are, so the two must share a
tokenizer (checked).

B denotes the problems of one call, N the budget (rows per problem), T the solution cap
(the glossary of `ttcjax.search.base`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ttcjax import parallel
from ttcjax.models.cache import KVCache, SharedPrefixCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.paged import PAGE_SIZES
from ttcjax.models.prm import PrmConfig
from ttcjax.models.prm_adapters import PrmAdapter
from ttcjax.models.tokenizer import Tokenizer, pad_batch, separator_tokens
from ttcjax.models.transformer import attention_views
from ttcjax.sampling import Sampler, StepDelimiter, transformer_decode_fn
from ttcjax.models.prm import transformer_prm_fn
from ttcjax.search import get_strategy
from ttcjax.search.base import (RoundTrace, SearchBatch, SearchModels, SearchSettings,
                                cache_capacity, prm_cache_capacity)

DATA_AXIS = parallel.DATA_AXIS


def prompt_buckets(buffer: int) -> tuple[int, ...]:
  """The widths a batch's prompts may be padded to: the buffer and its halvings down to
  an eighth, rounded up to multiples of 16 (the same static views attention reads)."""
  return attention_views(buffer)


@dataclasses.dataclass
class SearchResult:
  """One search over B problems, on the host.

  Attributes:
    texts: B lists of N candidate solutions.
    answers: B lists of N canonical answers (None: unparsable).
    step_scores: [B, N, S] float32.
    step_mask: [B, N, S] bool.
    finished: [B, N] bool.
    lengths: [B, N] generated tokens per candidate.
    compute: {field: [B] float} of the `ComputeRecord`.
    tokens: [B, N, T] int32 generated tokens (see `SearchRunner.candidate_steps`).
    step_end: [B, N, T] bool, the last token of each step.
    chain: [B, N] int32, each candidate's chain (sequential revisions; else n).
    position: [B, N] int32, its attempt within the chain (else 0).
    trace: the search's `RoundTrace` on the host (`search(..., trace=True)` with a
      step-level strategy), rows b * N + n; else None.
  """

  texts: list[list[str]]
  answers: list[list[Hashable | None]]
  step_scores: np.ndarray
  step_mask: np.ndarray
  finished: np.ndarray
  lengths: np.ndarray
  compute: dict[str, np.ndarray]
  tokens: np.ndarray | None = None
  step_end: np.ndarray | None = None
  chain: np.ndarray | None = None
  position: np.ndarray | None = None
  trace: RoundTrace | None = None

  def take(self, count: int) -> "SearchResult":
    """The first `count` problems (drops a padded batch's filler)."""
    first = lambda x: None if x is None else x[:count]
    trace = self.trace
    if trace is not None:  # rows b * N + n: the first count * N
      rows = count * self.finished.shape[1]
      trace = jax.tree.map(lambda x: x if x.ndim == 0 else x[:, :rows], trace)
    return SearchResult(self.texts[:count], self.answers[:count], self.step_scores[:count],
                        self.step_mask[:count], self.finished[:count], self.lengths[:count],
                        {k: v[:count] for k, v in self.compute.items()}, first(self.tokens),
                        first(self.step_end), first(self.chain), first(self.position), trace)


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
    prm_adapter: optional layout of a published PRM (`load_adapted_prm`); `search`
      then needs the problems' texts for the PRM's own prompts. None: the PRM reads
      the policy's prompt and tokens as they are (a PRM trained on them).
    max_prm_prompt_tokens: the PRM prompt buffer with an adapter (default
      `max_prompt_tokens`); longer PRM prompts raise.
    prm_rows_per_pass: score at most this many rows per PRM pass (0: all at once); see
      `SearchSettings.prm_rows_per_pass`.
    revision_policy: optional (config, params) of a revision model, the policy of
      strategies that revise (`Strategy.revises`); it shares the tokenizer.
    attempt_separator: the text between attempts the revision model was trained with
      (its export's "attempt_separator"); required with `revision_policy`.
    share_prompt_cache: store each problem's prompt once in both models' caches, read
      by its N rows (`SharedPrefixCache`), instead of once per row; rows then hold only
      what they generate. Same results up to float rounding (the attention's softmax
      is summed in two blocks), so it is off where archived results must reproduce
      bit for bit (the testbed) and on for the real-size configs.
    prompt_buckets: pad each batch's prompts to the shortest of a few static widths
      that holds its longest prompt (`prompt_buckets`: the buffer's halvings down to an
      eighth), not to the buffer, so caches and attention follow the batch's real
      prompt lengths at one compile per width. Same results up to float rounding.
    kv_page_size: with `share_prompt_cache`, keep both models' rows in pages of this
      many slots (`ttcjax.models.paged`; 0: dense rows), so that a fork copies page
      table entries instead of the caches. The same tokens and scores (attention
      reads the same slots); the pool is sized never to run out.
  """

  def __init__(self, policy: tuple[TransformerConfig, dict], prm: tuple[PrmConfig, dict],
               tokenizer: Tokenizer, answer_fn: Callable[[str], Hashable | None], *,
               max_prompt_tokens: int, max_step_tokens: int, max_solution_tokens: int,
               max_steps: int, max_rounds: int = 40, step_delimiter: str = "\n\n",
               mesh: Mesh | None = None, prm_adapter: PrmAdapter | None = None,
               max_prm_prompt_tokens: int | None = None, prm_rows_per_pass: int = 0,
               revision_policy: tuple[TransformerConfig, dict] | None = None,
               attempt_separator: str = "", share_prompt_cache: bool = False,
               prompt_buckets: bool = False, kv_page_size: int = 0):
    (self.policy_config, policy_params), (self.prm_config, prm_params) = policy, prm
    self.revision_config, revision_params = revision_policy or (None, None)
    separator = ()
    if revision_policy is not None:
      separator = tuple(separator_tokens(tokenizer, attempt_separator))
      if self.revision_config.vocab_size != self.policy_config.vocab_size:
        raise ValueError(
            f"The revision model's vocabulary ({self.revision_config.vocab_size}) is not the "
            f"policy's ({self.policy_config.vocab_size}); both must share the tokenizer.")
    self.tokenizer, self.answer_fn = tokenizer, answer_fn
    self.max_prompt_tokens = max_prompt_tokens
    self.prm_adapter = prm_adapter
    self.max_prm_prompt_tokens = max_prm_prompt_tokens or max_prompt_tokens
    if prm_adapter is not None:
      prm_adapter.check_prm_config(self.prm_config)
      prm_adapter.check_tokenizer(tokenizer)
    self.settings = SearchSettings(
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        delimiter=StepDelimiter.build(tokenizer, step_delimiter, self.policy_config.vocab_size),
        max_step_tokens=max_step_tokens, max_solution_tokens=max_solution_tokens,
        max_steps=max_steps, max_rounds=max_rounds, prm_rows_per_pass=prm_rows_per_pass,
        attempt_separator=separator).check()
    self.share_prompt_cache = share_prompt_cache
    self.prompt_buckets = prompt_buckets
    if kv_page_size and not share_prompt_cache:
      raise ValueError("kv_page_size pages the rows of a shared prompt cache: set "
                       "share_prompt_cache=True as well (or kv_page_size=0).")
    if kv_page_size and kv_page_size not in PAGE_SIZES:
      raise ValueError(f"kv_page_size must be 0 or one of {PAGE_SIZES}, got {kv_page_size}.")
    if kv_page_size and mesh is not None and dict(mesh.shape).get(DATA_AXIS, 1) > 1:
      raise ValueError("kv_page_size is not supported with problems sharded over a data axis "
                       "yet (the page pool is one per search, not one per device); use "
                       "kv_page_size=0 or a mesh with one data shard.")
    self.kv_page_size = kv_page_size
    self.mesh = mesh
    if mesh is not None and DATA_AXIS not in mesh.axis_names:
      raise ValueError(f"The mesh needs a {DATA_AXIS!r} axis, has {mesh.axis_names}.")
    place = (lambda p: p) if mesh is None else (lambda p: parallel.shard_params(p, mesh))
    self.policy_params = place(policy_params)
    self.prm_params = place(prm_params)
    self.revision_params = None if revision_params is None else place(revision_params)
    self._compiled: dict = {}

  @property
  def data_shards(self) -> int:
    return 1 if self.mesh is None else self.mesh.shape[DATA_AXIS]

  def _function(self, strategy: str, budget: int, hyper: tuple):
    key = (strategy, budget, hyper)
    if key not in self._compiled:
      record = get_strategy(strategy)
      policy_config = self.revision_config if record.revises else self.policy_config
      decode, score = transformer_decode_fn(policy_config), transformer_prm_fn(self.prm_config)
      if self.prm_adapter is not None:
        steps = record.prm_chunk_steps(self.settings, dict(hyper))
        score = self.prm_adapter.wrap_prm_fn(score, max_steps_per_chunk=steps)

      def call(policy_params, prm_params, batch, rng, sampler, settings):
        models = SearchModels(decode, policy_params, score, prm_params)
        if self.mesh is None:
          return record.fn(models, batch, rng, sampler, settings, budget=budget, **dict(hyper))
        # Traced under the mesh, so that the caches keep their heads split over its
        # model axis (`models.cache.shard_heads`) through every write and fork.
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
          return record.fn(models, batch, rng, sampler, settings, budget=budget, **dict(hyper))

      self._compiled[key] = jax.jit(call)
    return self._compiled[key]

  def prm_capacity(self, strategy: str, hyper: dict | None = None,
                   prompt_width: int | None = None) -> int:
    """Slots of a row's PRM cache in a search with `strategy` and `hyper`, for PRM
    prompts padded to `prompt_width` (default the buffer's maximum)."""
    if self.prm_adapter is None:
      return cache_capacity(prompt_width or self.max_prompt_tokens, self.settings)
    return prm_cache_capacity(
        prompt_width or self.max_prm_prompt_tokens, self.settings,
        len(self.prm_adapter.suffix_ids),
        get_strategy(strategy).prm_suffixes_per_row(self.settings, hyper or {}))

  def _width(self, lengths: np.ndarray, buffer: int) -> int:
    """The padded prompt width of a batch: the buffer, or with `prompt_buckets` the
    shortest of `prompt_buckets(buffer)` that holds its longest prompt."""
    if not self.prompt_buckets:
      return buffer
    longest = int(np.max(lengths))
    return next(w for w in prompt_buckets(buffer) if w >= longest)

  def _batch(self, prompts: Sequence[str], problem_ids: Sequence[int],
             problem_texts: Sequence[str] | None, strategy: str, hyper: dict) -> SearchBatch:
    tokens, lengths = pad_batch(self.tokenizer, prompts, width=self.max_prompt_tokens)
    width = self._width(lengths, self.max_prompt_tokens)
    tokens = tokens[:, :width]
    prm_tokens = prm_lengths = None
    prm_width = width
    if self.prm_adapter is not None:
      try:
        prm_tokens, prm_lengths = self.prm_adapter.prompt_batch(problem_texts,
                                                                width=self.max_prm_prompt_tokens)
      except ValueError as err:
        raise ValueError(f"{err} Raise max_prm_prompt_tokens ({self.max_prm_prompt_tokens}) "
                         "or shorten the problem.") from None
      prm_width = self._width(prm_lengths, self.max_prm_prompt_tokens)
      prm_tokens = prm_tokens[:, :prm_width]
    rows = len(prompts)
    record = get_strategy(strategy)

    def empty_cache(config, capacity, prompt_width):
      if self.share_prompt_cache:
        return SharedPrefixCache.init(config, rows, prompt_width, capacity - prompt_width,
                                      page_size=self.kv_page_size)
      return KVCache.init(config, rows, capacity)

    batch = SearchBatch(
        prompts=jnp.asarray(tokens), prompt_lengths=jnp.asarray(lengths),
        problem_ids=jnp.asarray(problem_ids, jnp.int32),
        policy_cache=empty_cache(
            self.revision_config if record.revises else self.policy_config,
            record.policy_cache_capacity(width, self.settings, hyper), width),
        prm_cache=empty_cache(self.prm_config.backbone,
                              self.prm_capacity(strategy, hyper, prm_width), prm_width))
    if prm_tokens is not None:
      batch = batch.replace(prm_prompts=jnp.asarray(prm_tokens),
                            prm_prompt_lengths=jnp.asarray(prm_lengths))
    if self.mesh is None:
      return batch
    caches = {"policy_cache": batch.policy_cache, "prm_cache": batch.prm_cache}
    batch = parallel.shard_batch(batch.replace(policy_cache=None, prm_cache=None), self.mesh)
    return batch.replace(**parallel.shard_caches(caches, self.mesh))

  def search(self, strategy: str, prompts: Sequence[str], problem_ids: Sequence[int], *,
             budget: int, rng: jax.Array, sampler: Sampler = Sampler(),
             problem_texts: Sequence[str] | None = None, trace: bool = False,
             **hyper) -> SearchResult:
    """Runs `strategy` on the prompts (one compile per strategy, budget, hyperparameters
    and batch size; pad the last batch to reuse it).

    Args:
      strategy: a name in `ttcjax.search.STRATEGIES`.
      prompts: B prompt texts; B must be a multiple of the mesh's data axis.
      problem_ids: B stable ids (a problem's result depends only on rng and its id).
      budget: N.
      rng: key (not consumed).
      sampler: how steps are sampled.
      problem_texts: B problems as the PRM adapter's prompt states them (the policy's
        `prompts` may wrap them in its own chat template); required with a
        `prm_adapter`, unused without one.
      trace: also return the search's `RoundTrace` (step-level strategies; a separate
        compile, and [max_rounds, B * N, T] tokens more on the device).
      **hyper: the strategy's hyperparameters (beam_width, lookahead_steps, temperature).
    """
    if not prompts:
      raise ValueError("No prompts to search.")
    if len(prompts) != len(problem_ids):
      raise ValueError(f"{len(prompts)} prompts but {len(problem_ids)} problem ids.")
    if self.prm_adapter is not None and (problem_texts is None
                                         or len(problem_texts) != len(prompts)):
      raise ValueError(
          f"A SearchRunner with a {self.prm_adapter.family} adapter needs problem_texts, one "
          f"per prompt ({len(prompts)}), for the PRM's own prompts; got "
          f"{'none' if problem_texts is None else len(problem_texts)}.")
    if len(prompts) % self.data_shards:
      raise ValueError(f"{len(prompts)} problems do not split over {self.data_shards} data "
                       "shards; pad the batch to a multiple.")
    record = get_strategy(strategy)
    record.validate(budget, hyper)
    if record.revises and self.revision_params is None:
      raise ValueError(f"Strategy {strategy!r} revises: give the SearchRunner a "
                       "revision_policy (a revision model) and its attempt_separator.")
    sampler.check()
    fn = self._function(strategy, budget, tuple(sorted(hyper.items())))
    batch = self._batch(prompts, problem_ids, problem_texts, strategy, hyper)
    policy_params = self.revision_params if record.revises else self.policy_params
    settings = self.settings.replace(trace_rounds=True) if trace else self.settings
    out = fn(policy_params, self.prm_params, batch, rng, sampler, settings)
    out = parallel.to_host(out)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    texts = [[self.tokenizer.decode(tokens[p, n, :lengths[p, n]]) for n in range(tokens.shape[1])]
             for p in range(tokens.shape[0])]
    return SearchResult(
        texts=texts, answers=[[self.answer_fn(t) for t in row] for row in texts],
        step_scores=np.asarray(out.step_scores), step_mask=np.asarray(out.step_mask),
        finished=np.asarray(out.finished), lengths=lengths,
        compute={f.name: np.asarray(getattr(out.compute, f.name))
                 for f in dataclasses.fields(out.compute)},
        tokens=tokens, step_end=np.asarray(out.step_end), chain=np.asarray(out.chain),
        position=np.asarray(out.position),
        trace=None if out.trace is None else jax.tree.map(np.asarray, out.trace))

  def candidate_steps(self, result: SearchResult) -> list[list[list[str]]]:
    """B lists of N lists of step texts, each step's tokens decoded (delimiters and a
    final EOS kept), e.g. to score them on the host with `PrmAdapter.score_solutions`."""
    out = []
    for tokens, step_end, lengths in zip(result.tokens, result.step_end, result.lengths):
      rows = []
      for row, ends, length in zip(tokens, step_end, lengths):
        cuts = [0] + [int(i) + 1 for i in np.flatnonzero(ends[:length])]
        if cuts[-1] < length:  # tokens after the last step end (no strategy leaves any)
          cuts.append(int(length))
        rows.append([self.tokenizer.decode(row[a:b]) for a, b in zip(cuts, cuts[1:])])
      out.append(rows)
    return out
