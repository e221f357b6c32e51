"""PRM and ORM training data and losses.

Both verifiers are a value head on a backbone initialised from the policy. A
training sequence is `[bos] prompt step_1 ... step_n [eos]`, and the head is read
at the last token of each step (its delimiter, or the EOS for the final step),
exactly where the search reads it.

* PRM: binary cross-entropy against the Monte Carlo soft label of every step.
* ORM: binary cross-entropy against the final answer's correctness, at the final
  step only.

B denotes the batch dimension and L the padded sequence length.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.prm import PrmConfig, token_scores
from ttcjax.models.tokenizer import Tokenizer

_EPS = 1e-6


def encode_reward_batch(tokenizer: Tokenizer, prompts: Sequence[str],
                        steps: Sequence[Sequence[str]], labels: Sequence[Sequence[float]],
                        max_length: int, outcome_only: bool = False,
                        pad_to_multiple: int | None = None) -> dict[str, np.ndarray]:
  """Tokenises labelled solutions.

  Args:
    tokenizer: the policy's tokenizer.
    prompts: B prompt texts.
    steps: B lists of step texts (each step includes its delimiter, the last its
      final text; concatenated they give the solution).
    labels: B lists of per-step targets in [0, 1].
    max_length: the longest allowed sequence and, without `pad_to_multiple`, L.
    outcome_only: label only the final step (ORM).
    pad_to_multiple: pad only to the batch's longest sequence rounded up to this
      multiple (as `sft.encode_sft_batch`).

  Returns:
    {"tokens": [B, L] int32, "lengths": [B] int32, "label_mask": [B, L] float32,
     "labels": [B, L] float32}.
  """
  batch = len(prompts)
  if not batch or not (batch == len(steps) == len(labels)):
    raise ValueError(
        f"Need the same positive number of prompts, step lists and label lists, got "
        f"{len(prompts)}, {len(steps)}, {len(labels)}.")
  encoded = []
  for i in range(batch):
    if len(steps[i]) != len(labels[i]):
      raise ValueError(f"Example {i} has {len(steps[i])} steps but {len(labels[i])} labels.")
    ids = tokenizer.encode(prompts[i], add_bos=True)
    ends = []
    for j, step in enumerate(steps[i]):
      ids += tokenizer.encode(step)
      if j == len(steps[i]) - 1:
        ids.append(tokenizer.eos_id)
      ends.append(len(ids) - 1)
    if len(ids) > max_length:
      raise ValueError(f"A sequence of {len(ids)} tokens exceeds max_length={max_length}.")
    encoded.append((ids, ends))
  if pad_to_multiple:
    longest = max(len(ids) for ids, _ in encoded)
    max_length = min(max_length, -(-longest // pad_to_multiple) * pad_to_multiple)
  tokens = np.full((batch, max_length), tokenizer.pad_id, np.int32)
  label_mask = np.zeros((batch, max_length), np.float32)
  targets = np.zeros((batch, max_length), np.float32)
  lengths = np.zeros((batch,), np.int32)
  for i, (ids, ends) in enumerate(encoded):
    tokens[i, :len(ids)] = ids
    lengths[i] = len(ids)
    chosen = list(zip(ends, labels[i]))[-1:] if outcome_only else zip(ends, labels[i])
    for position, label in chosen:
      label_mask[i, position] = 1.0
      targets[i, position] = label
  return {"tokens": tokens, "lengths": lengths, "label_mask": label_mask, "labels": targets}


def reward_loss(config: PrmConfig):
  """(params, batch) -> (mean BCE over labelled positions, metrics)."""

  def loss_fn(params, batch):
    scores, _ = token_scores(params, config, batch["tokens"], num_new=batch["lengths"])
    p = jnp.clip(scores, _EPS, 1 - _EPS)
    y = batch["labels"]
    bce = -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
    mask = batch["label_mask"]
    count = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(bce * mask) / count
    error = jnp.sum(jnp.abs(scores - y) * mask) / count
    return loss, {"mean_abs_error": error}

  return loss_fn


def backbone_from_policy(policy_params, prm_params):
  """PRM params whose backbone is the policy's (its unused LM head dropped)."""
  backbone = {k: v for k, v in policy_params.items()
              if k in prm_params["backbone"]}
  missing = set(prm_params["backbone"]) - set(backbone)
  if missing:
    raise ValueError(
        f"The policy checkpoint lacks backbone parameters {sorted(missing)}; the PRM's "
        "backbone config must match the policy's.")
  shapes_match = jax.tree.map(lambda a, b: a.shape == b.shape, backbone, prm_params["backbone"])
  if not all(jax.tree.leaves(shapes_match)):
    raise ValueError("The PRM backbone's shapes differ from the policy checkpoint's; use the "
                     "policy's model config for the PRM backbone.")
  return dict(prm_params, backbone=backbone)
