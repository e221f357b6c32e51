"""Process reward models: a transformer backbone plus a head read at step ends.

Two head kinds cover the published PRMs:

* ``"value"``: a classifier on the final hidden state. ``num_labels=1`` gives
  sigmoid(logit); ``num_labels=2`` gives softmax(logits)[1], the layout of
  Qwen2.5-Math-PRM (Linear(H, H) -> ReLU -> Linear(H, 2), read at each ``<extra_0>``
  separator). ``head_hidden=None`` makes the head a single linear layer.
  ``step_likelihood=True`` also feeds the head the backbone's own surprise at the
  step: the least and the mean log-probability its language-model head gave the
  step's tokens (`step_likelihood_features`), so a step's score can read whether
  the verifier would have written the step's result itself.
* ``"token_logit"``: the language-model head itself, Math-Shepherd style: at a tag
  token, score = P("+") / (P("+") + P("-")) = sigmoid(logit(+) - logit(-)). Only the
  two output rows are multiplied, not the whole vocabulary.

Every position gets a score in one forward pass (`token_scores`); the scores of
steps are read at the positions that end steps (`gather_step_scores`). With a cache
the PRM scores only the new tokens of a row, so a beam-search round costs only the
tokens it added. A search reads any PRM through the `PrmFn` protocol; `transformer_prm_fn`
is this module's.

B denotes the batch dimension, K the chunk length, L the sequence length and S the
maximum number of steps (the glossary of `ttcjax.search.base`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from ttcjax.models.cache import KVCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.transformer import Linear, Transformer

HeadKind = Literal["value", "token_logit"]


@dataclasses.dataclass(frozen=True)
class PrmConfig:
  """A PRM: backbone shape plus head.

  Attributes:
    backbone: the transformer's config.
    kind: "value" (classifier head) or "token_logit" (LM logits at a tag token).
    num_labels: 1 (sigmoid) or 2 (softmax, positive class is index 1); value heads.
    head_hidden: width of the head's hidden layer (ReLU MLP), or None for a
      single linear layer; value heads.
    positive_token_id / negative_token_id: the "+" and "-" tokens; token-logit heads.
    step_likelihood: feed a value head the step's likelihood features beside the
      hidden state (the params then hold the backbone's LM head).
  """

  backbone: TransformerConfig
  kind: HeadKind = "value"
  num_labels: int = 1
  head_hidden: int | None = None
  positive_token_id: int | None = None
  negative_token_id: int | None = None
  step_likelihood: bool = False

  def __post_init__(self):
    if self.step_likelihood and self.kind != "value":
      raise ValueError("step_likelihood feeds a value head; a token-logit PRM reads the LM "
                       "head already. Use kind='value' or step_likelihood=False.")
    if self.kind == "value":
      if self.num_labels not in (1, 2):
        raise ValueError(f"A value head has 1 or 2 labels, got num_labels={self.num_labels}.")
    elif self.kind == "token_logit":
      for name in ("positive_token_id", "negative_token_id"):
        token = getattr(self, name)
        if token is None or not 0 <= token < self.backbone.vocab_size:
          raise ValueError(
              f"A token-logit PRM needs {name} inside the vocabulary "
              f"[0, {self.backbone.vocab_size}), got {token!r}.")
    else:
      raise ValueError(f"PRM head kind must be 'value' or 'token_logit', got {self.kind!r}.")

  @property
  def num_params(self) -> int:
    if self.kind == "token_logit":
      return self.backbone.num_params
    h = self.backbone.hidden_size
    inputs = h + (NUM_LIKELIHOOD_FEATURES if self.step_likelihood else 0)
    if self.head_hidden is None:
      head = inputs * self.num_labels + self.num_labels
    else:
      head = (inputs * self.head_hidden + self.head_hidden + self.head_hidden * self.num_labels
              + self.num_labels)
    # A value PRM uses the backbone's output projection only for likelihood features.
    reads_lm_head = self.step_likelihood or self.backbone.tie_word_embeddings
    unused = 0 if reads_lm_head else self.backbone.vocab_size * h
    return self.backbone.num_params - unused + head


NUM_LIKELIHOOD_FEATURES = 2  # the step's least and mean token log-probability
_LOG_PROB_FLOOR = -30.0  # keeps a near-impossible token's feature finite


def step_likelihood_features(logits: jax.Array, tokens: jax.Array, step_end: jax.Array | None,
                             solution_start: jax.Array | None = None,
                             num_new: jax.Array | None = None) -> jax.Array:
  """The least and mean log-probability of each step's tokens so far, per position.

  A step's tokens are those after the previous step end (or after `solution_start`)
  up to the position; each step's first token is left out, because in a search the
  chunk of new tokens starts with it and its prediction sits in an earlier chunk.
  Positions with no counted token get 0 for both.

  Args:
    logits: [B, K, V] next-token logits (position t predicts token t + 1).
    tokens: [B, K] the chunk's tokens.
    step_end: [B, K] bool, the positions that end a step (None: none do).
    solution_start: [B] int32, the chunk position of the solution's first token (a
      whole prompt-plus-solution sequence); default 0 (a chunk that starts a step).
    num_new: [B] valid tokens per row (default K).

  Returns:
    [B, K, 2] float32: (least, mean) log-probability of the counted tokens.
  """
  batch, length = tokens.shape
  positions = jnp.arange(length)
  if step_end is None:
    step_end = jnp.zeros((batch, length), bool)
  if solution_start is None:
    solution_start = jnp.zeros((batch,), jnp.int32)
  if num_new is None:
    num_new = jnp.full((batch,), length, jnp.int32)
  log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  token_log_prob = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
  token_log_prob = jnp.maximum(jnp.pad(token_log_prob, ((0, 0), (1, 0))), _LOG_PROB_FLOOR)
  after_end = jnp.pad(step_end[:, :-1], ((0, 0), (1, 0)))  # the token after a step end
  counted = ((positions[None] > solution_start[:, None]) & ~after_end
             & (positions[None] < num_new[:, None]))
  # Segment ids: steps are numbered by the step ends before them.
  segment = jnp.cumsum(after_end, axis=1)
  same = ((segment[:, :, None] == segment[:, None, :])
          & (positions[None, None, :] <= positions[None, :, None]) & counted[:, None, :])
  least = jnp.min(jnp.where(same, token_log_prob[:, None, :], 0.0), axis=-1)
  total = jnp.sum(jnp.where(same, token_log_prob[:, None, :], 0.0), axis=-1)
  mean = total / jnp.maximum(jnp.sum(same, axis=-1), 1)
  return jnp.stack([least, mean], axis=-1)


class ValueHead(nn.Module):
  config: PrmConfig

  @nn.compact
  def __call__(self, hidden, features=None):
    cfg = self.config
    dense = lambda n, name: Linear(n, True, jnp.float32, cfg.backbone.jnp_param_dtype, name=name)
    x = hidden.astype(jnp.float32)
    if features is not None:
      x = jnp.concatenate([x, features.astype(jnp.float32)], axis=-1)
    if cfg.head_hidden is not None:
      x = nn.relu(dense(cfg.head_hidden, "dense_0")(x))
    logits = dense(cfg.num_labels, "dense_1")(x)
    if cfg.num_labels == 1:
      return jax.nn.sigmoid(logits[..., 0])
    return jax.nn.softmax(logits, axis=-1)[..., 1]


class ProcessRewardModel(nn.Module):
  config: PrmConfig

  def setup(self):
    self.backbone = Transformer(self.config.backbone)
    if self.config.kind == "value":
      self.head = ValueHead(self.config)

  def __call__(self, tokens, cache=None, num_new=None, step_end=None, solution_start=None):
    cfg = self.config
    if cfg.kind == "value":
      if cfg.step_likelihood:
        out = self.backbone(tokens, cache, num_new, logits="all")
        features = step_likelihood_features(out.logits, tokens, step_end, solution_start, num_new)
        return self.head(out.hidden, features), out.cache
      out = self.backbone(tokens, cache, num_new, logits="none")
      return self.head(out.hidden), out.cache
    out = self.backbone(tokens, cache, num_new, logits="none")
    plus_minus = jnp.array([cfg.positive_token_id, cfg.negative_token_id])
    bb = self.backbone
    if cfg.backbone.tie_word_embeddings:
      rows = bb.embed_tokens.embedding[plus_minus].T  # [H, 2]
    else:
      rows = bb.lm_head.variables["params"]["kernel"][:, plus_minus]
    logits = jnp.einsum("bkh,hc->bkc", out.hidden.astype(jnp.float32), rows.astype(jnp.float32))
    return jax.nn.sigmoid(logits[..., 0] - logits[..., 1]), out.cache

  def scores_and_logits(self, tokens, num_new=None, step_end=None, solution_start=None):
    """(scores [B, L], next-token logits [B, L, V]) in one pass, for training a value
    head beside the backbone's language-model head (which the params must then hold)."""
    out = self.backbone(tokens, None, num_new, logits="all")
    features = None
    if self.config.step_likelihood:
      features = step_likelihood_features(out.logits, tokens, step_end, solution_start, num_new)
    return self.head(out.hidden, features), out.logits

  def init_all(self, tokens):
    """Creates every parameter the PRM reads (the LM head only for token-logit heads
    and likelihood features)."""
    if self.config.kind == "token_logit":
      self.backbone(tokens, logits="all")
    return self(tokens)


def init_prm_params(config: PrmConfig, rng: jax.Array):
  """Random PRM parameters: {"backbone": ..., "head": ...} (no head for token_logit)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return ProcessRewardModel(config).init(rng, tokens, method=ProcessRewardModel.init_all)["params"]


def token_scores(params, config: PrmConfig, tokens: jax.Array, cache: KVCache | None = None,
                 num_new: jax.Array | None = None, step_end: jax.Array | None = None,
                 solution_start: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
  """The PRM's score at every position, in [0, 1].

  Args:
    params: PRM parameters.
    config: the PRM config (static under jit).
    tokens: [B, K] int32.
    cache: optional PRM KV cache (the chunk is appended to it, as in `forward`).
    num_new: [B] valid tokens per row (default K).
    step_end: [B, K] bool step ends, read only by `step_likelihood` heads (a chunk
      then starts a step, or the solution starts at `solution_start`).
    solution_start: [B] int32, where the solution starts in a whole sequence
      (`step_likelihood_features`).

  Returns:
    (scores [B, K] float32, updated cache or None).
  """
  if tokens.ndim != 2:
    raise ValueError(f"tokens must have shape [batch, length], got {tokens.shape}.")
  if cache is not None and cache.batch_size != tokens.shape[0]:
    raise ValueError(
        f"PRM cache has {cache.batch_size} rows but tokens have batch {tokens.shape[0]}.")
  return ProcessRewardModel(config).apply({"params": params}, tokens, cache, num_new, step_end,
                                          solution_start)


class StepScores(NamedTuple):
  """Per-step scores: `scores` [B, S] float32 and `mask` [B, S] (the step exists)."""

  scores: jax.Array
  mask: jax.Array


def gather_step_scores(scores: jax.Array, step_end: jax.Array, max_steps: int,
                       first_step: jax.Array | None = None,
                       keep_last: bool = False) -> StepScores:
  """Collects the scores at step-ending positions into a [B, S] table.

  Args:
    scores: [B, K] per-position scores (`token_scores`).
    step_end: [B, K] bool, True where a step ends (the position its score is read at).
    max_steps: S, the table's width; steps past it are dropped.
    first_step: [B] int32 index of the first step ending in this chunk (for
      incremental scoring, the number of steps already scored); default 0.
    keep_last: when a row has more than S steps, put its last step's score in
      column S-1 (so "last"-step aggregation still reads the final step).

  Returns:
    `StepScores` with step i of row b at column first_step[b] + i.
  """
  if scores.shape != step_end.shape:
    raise ValueError(f"scores {scores.shape} and step_end {step_end.shape} must have one shape.")
  batch = scores.shape[0]
  if first_step is None:
    first_step = jnp.zeros((batch,), jnp.int32)
  step_index = jnp.cumsum(step_end, axis=1) - 1 + first_step[:, None]
  column = jnp.where(step_end, step_index, max_steps)  # out of range -> dropped
  rows = jnp.arange(batch)[:, None]
  table = jnp.zeros((batch, max_steps), jnp.float32).at[rows, column].set(scores, mode="drop")
  mask = jnp.zeros((batch, max_steps), bool).at[rows, column].set(True, mode="drop")
  if keep_last:
    positions = jnp.arange(scores.shape[1])[None, :]
    last_end = jnp.max(jnp.where(step_end, positions, -1), axis=1)
    overflow = (last_end >= 0) & (step_index[:, -1] >= max_steps)
    last_score = jnp.take_along_axis(scores, jnp.maximum(last_end, 0)[:, None], axis=1)[:, 0]
    table = table.at[:, -1].set(jnp.where(overflow, last_score, table[:, -1]))
    mask = mask.at[:, -1].set(mask[:, -1] | overflow)
  return StepScores(table, mask)


def score_steps(params, config: PrmConfig, tokens: jax.Array, step_end: jax.Array,
                max_steps: int, lengths: jax.Array | None = None,
                keep_last: bool = False, prompt_lengths: jax.Array | None = None) -> StepScores:
  """Scores every step of whole sequences in one forward pass.

  Args:
    params: PRM parameters.
    config: the PRM config.
    tokens: [B, L] right-padded token ids.
    step_end: [B, L] bool, True at the positions whose score rates a step.
    max_steps: S.
    lengths: [B] valid tokens per row (default L); step ends past it are ignored.
    keep_last: see `gather_step_scores`.
    prompt_lengths: [B] tokens of each row's prompt, where its solution starts (read
      by `step_likelihood` heads; default 0).

  Returns:
    `StepScores` ([B, S] scores and mask).
  """
  if config.step_likelihood and prompt_lengths is None:
    raise ValueError("A step-likelihood PRM scoring whole sequences needs prompt_lengths "
                     "(where each solution starts); without them the prompt would count as "
                     "part of the first step.")
  scores, _ = token_scores(params, config, tokens, num_new=lengths, step_end=step_end,
                           solution_start=prompt_lengths)
  if lengths is not None:
    step_end = step_end & (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None])
  return gather_step_scores(scores, step_end, max_steps, keep_last=keep_last)


# ------------------------------------------------------------- the search's view


class PrmFn(Protocol):
  """A process reward model as a pure function.

  Args:
    params: the PRM's parameters.
    tokens: [R, K] int32 tokens to append to each row.
    cache: the rows' PRM cache; it exposes `lengths` ([R] int32, the tokens it holds),
      as an attribute (`KVCache`) or a key (a dict), so that a search can count what
      the PRM ran.
    num_new: [R] int32, how many of each row's K tokens are valid.
    step_end: optional [R, K] bool, the tokens that end a step (all False for a
      prompt). A PRM that reads scores at every token ignores it; one that lays steps
      out itself (`PrmAdapter.wrap_prm_fn`) puts its step suffixes there.

  Returns:
    (scores [R, K] float32 in [0, 1], the PRM's score after each token, or at least at
    each step end; updated cache).
  """

  def __call__(self, params, tokens: jax.Array, cache: Any, num_new: jax.Array,
               step_end: jax.Array | None = None) -> tuple[jax.Array, Any]: ...


def transformer_prm_fn(config: PrmConfig) -> PrmFn:
  """The `PrmFn` of a ttcjax PRM (value or token-logit head) with a `KVCache`."""

  def score(params, tokens, cache, num_new, step_end=None):
    # Every position is scored; a step-likelihood head also reads where steps end
    # (each chunk after the prompt starts a step).
    return token_scores(params, config, tokens, cache, num_new, step_end)

  return score
