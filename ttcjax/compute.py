"""Budgets and FLOPs: what a search spent, in the paper's unit and in FLOPs.

The paper's generation budget counts samples (N), and N x (k + 1) for lookahead
search. FLOPs are counted from what actually ran (`ComputeRecord`):

    FLOPs = 2 x matmul parameters x tokens + 4 x layers x (heads x head_dim) x context

where "context" sums, over every token run, the positions it attended to (each
attention score and each weighted value is one multiply-add per head dimension).
The policy pays its output projection on every token it samples; prefill reads
logits only at the last prompt position, so its prompt tokens are charged without
the output head. The PRM never runs the language-model head for a value head.
Attention is counted over the live context, not over the cache's padded capacity:
that is the work a search needs, independent of how a kernel pads it.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig


@dataclasses.dataclass(frozen=True)
class ModelCost:
  """FLOPs per token of one model.

  Attributes:
    body_flops: 2 x parameters multiplied per token, output head excluded.
    head_flops: 2 x parameters of the output head (0 for a value-head PRM).
    attention_flops: per unit of context, 4 x layers x heads x head_dim.
  """

  body_flops: float
  head_flops: float
  attention_flops: float

  @classmethod
  def of_policy(cls, config: TransformerConfig) -> "ModelCost":
    return cls(body_flops=2.0 * config.num_non_embedding_params,
               head_flops=2.0 * config.vocab_size * config.hidden_size,
               attention_flops=_attention(config))

  @classmethod
  def of_prm(cls, config: PrmConfig) -> "ModelCost":
    backbone = config.backbone
    body = 2.0 * backbone.num_non_embedding_params
    if config.kind == "value":
      hidden = config.head_hidden or 0
      labels = config.num_labels
      head = backbone.hidden_size * hidden + hidden * labels if hidden else backbone.hidden_size * labels
      return cls(body_flops=body + 2.0 * head, head_flops=0.0, attention_flops=_attention(backbone))
    # A token-logit head multiplies two rows of the output projection per token.
    return cls(body_flops=body + 4.0 * backbone.hidden_size, head_flops=0.0,
               attention_flops=_attention(backbone))


def _attention(config: TransformerConfig) -> float:
  return 4.0 * config.num_layers * config.num_heads * config.head_dim


def policy_flops(cost: ModelCost, generated, prefilled, context) -> np.ndarray:
  """Policy FLOPs from token counts ([B] arrays, or scalars)."""
  generated, prefilled = np.asarray(generated, np.float64), np.asarray(prefilled, np.float64)
  return ((cost.body_flops + cost.head_flops) * generated + cost.body_flops * prefilled
          + cost.attention_flops * np.asarray(context, np.float64))


def prm_flops(cost: ModelCost, scored, context) -> np.ndarray:
  """PRM FLOPs from the tokens it ran and their context ([B] arrays, or scalars)."""
  return (cost.body_flops * np.asarray(scored, np.float64)
          + cost.attention_flops * np.asarray(context, np.float64))


def search_flops(record, policy: ModelCost, prm: ModelCost | None) -> dict[str, np.ndarray]:
  """{"policy_flops", "prm_flops", "total_flops"} per problem from a `ComputeRecord`
  (or a mapping with its field names)."""
  def get(name):
    value = record[name] if isinstance(record, Mapping) else getattr(record, name)
    return np.asarray(value, np.float64)

  out = {"policy_flops": policy_flops(policy, get("policy_generated"), get("policy_prefilled"),
                                      get("policy_context"))}
  out["prm_flops"] = (prm_flops(prm, get("prm_scored"), get("prm_context")) if prm is not None
                      else np.zeros_like(out["policy_flops"]))
  out["total_flops"] = out["policy_flops"] + out["prm_flops"]
  return out


def generation_budget(budget: int, lookahead_steps: int = 0) -> int:
  """The paper's unit: N samples, N x (k + 1) for lookahead search with k steps."""
  if budget < 1 or lookahead_steps < 0:
    raise ValueError(f"Need budget >= 1 and lookahead_steps >= 0, got {budget}, {lookahead_steps}.")
  return budget * (lookahead_steps + 1)


def pretraining_flops(config: TransformerConfig, tokens: float) -> float:
  """X = 6 N D, the pretraining FLOPs of the paper's section 7 (N parameters, D tokens)."""
  return 6.0 * config.num_params * float(tokens)


def exchange_factor(params_ratio: float, inference_to_pretraining: float,
                    pretraining_ratio: float = 1.0) -> float:
  """How many times more inference FLOPs the small model may spend to match a model
  `params_ratio` (M) times larger, in total (pretraining + inference) FLOPs.

  With pretraining 6 N D_pretrain and inference 2 N D_inference, equal totals give
  M + 3 (D_pretrain / D_inference) (M - 1) (Snell et al., section 7), where
  `inference_to_pretraining` is R = D_inference / D_pretrain. When the larger model
  was pretrained on t = `pretraining_ratio` times the small one's tokens (R is then
  relative to the small one's), each is charged its own: M + 3 (M t - 1) / R.
  """
  if params_ratio < 1 or inference_to_pretraining <= 0 or pretraining_ratio <= 0:
    raise ValueError(f"Need params_ratio >= 1, a positive R and a positive pretraining "
                     f"ratio, got {params_ratio}, {inference_to_pretraining}, "
                     f"{pretraining_ratio}.")
  return (params_ratio
          + 3.0 * (params_ratio * pretraining_ratio - 1.0) / inference_to_pretraining)
