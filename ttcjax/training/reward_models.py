"""PRM and ORM training data and losses.

Both verifiers are a value head on a backbone initialised from the policy. A
training sequence is `[bos] prompt step_1 ... step_n [eos]`, and the head is read
at the last token of each step (its delimiter, or the EOS for the final step),
exactly where the search reads it.

* PRM: binary cross-entropy against the Monte Carlo soft label of every step.
* ORM: binary cross-entropy against the final answer's correctness, at the final
  step only.

Either may keep the language-model objective beside it (`reward_loss(...,
lm_weight > 0)`): next-token cross-entropy on the solution's tokens through the
backbone's own LM head, so that fine-tuning the head's inputs does not wash out the
arithmetic the backbone learnt as a policy (the value head reads what the backbone
still computes). The term covers only the solutions whose final answer is right
(`encode_reward_batch(lm_solutions=...)`): next-token loss on the policy's wrong
solutions would teach the verifier the very mistakes it has to catch. The LM head
then stays in the parameters (`backbone_from_policy(..., keep_lm_head=True)`);
scoring reads it only for a `step_likelihood` head.

B denotes the batch dimension and L the padded sequence length.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.prm import PrmConfig, ProcessRewardModel, token_scores
from ttcjax.models.tokenizer import Tokenizer

_EPS = 1e-6


def encode_reward_batch(tokenizer: Tokenizer, prompts: Sequence[str],
                        steps: Sequence[Sequence[str]], labels: Sequence[Sequence[float]],
                        max_length: int, outcome_only: bool = False,
                        pad_to_multiple: int | None = None,
                        lm_solutions: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
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
    lm_solutions: B flags, which solutions the LM term covers (default all).

  Returns:
    {"tokens": [B, L] int32, "lengths": [B] int32, "label_mask": [B, L] float32,
     "labels": [B, L] float32, "lm_mask": [B, L] float32: 1 at positions whose next
     token is a solution token (the first step's first token through the EOS) of a
     solution in `lm_solutions`, "step_end": [B, L] bool at every step's last token
     (labelled or not), "solution_start": [B] int32, the first solution token}.
  """
  batch = len(prompts)
  if lm_solutions is None:
    lm_solutions = [True] * batch
  if not batch or not (batch == len(steps) == len(labels) == len(lm_solutions)):
    raise ValueError(
        f"Need the same positive number of prompts, step lists, label lists and LM flags, "
        f"got {len(prompts)}, {len(steps)}, {len(labels)}, {len(lm_solutions)}.")
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
    encoded.append((ids, ends, len(tokenizer.encode(prompts[i], add_bos=True))))
  if pad_to_multiple:
    longest = max(len(ids) for ids, _, _ in encoded)
    max_length = min(max_length, -(-longest // pad_to_multiple) * pad_to_multiple)
  tokens = np.full((batch, max_length), tokenizer.pad_id, np.int32)
  label_mask = np.zeros((batch, max_length), np.float32)
  targets = np.zeros((batch, max_length), np.float32)
  lm_mask = np.zeros((batch, max_length), np.float32)
  step_end = np.zeros((batch, max_length), bool)
  solution_start = np.zeros((batch,), np.int32)
  lengths = np.zeros((batch,), np.int32)
  for i, (ids, ends, prompt_length) in enumerate(encoded):
    tokens[i, :len(ids)] = ids
    lengths[i] = len(ids)
    solution_start[i] = prompt_length
    step_end[i, ends] = True
    if lm_solutions[i]:
      lm_mask[i, prompt_length - 1:len(ids) - 1] = 1.0  # position t predicts token t + 1
    chosen = list(zip(ends, labels[i]))[-1:] if outcome_only else zip(ends, labels[i])
    for position, label in chosen:
      label_mask[i, position] = 1.0
      targets[i, position] = label
  return {"tokens": tokens, "lengths": lengths, "label_mask": label_mask, "labels": targets,
          "lm_mask": lm_mask, "step_end": step_end, "solution_start": solution_start}


def reward_loss(config: PrmConfig, lm_weight: float = 0.0):
  """(params, batch) -> (loss, metrics).

  The loss is the mean BCE over labelled positions, plus `lm_weight` times the mean
  next-token cross-entropy over `batch["lm_mask"]` (the params must then hold the
  backbone's LM head). Metrics: "bce", "mean_abs_error", and "lm_loss" with the LM term.
  """
  if lm_weight < 0:
    raise ValueError(f"lm_weight must be >= 0, got {lm_weight}.")
  if lm_weight and config.kind != "value":
    raise ValueError(f"The multi-task objective trains a value head; this PRM's head is "
                     f"{config.kind!r}. Use kind='value' or lm_weight=0.")
  model = ProcessRewardModel(config)

  def loss_fn(params, batch):
    steps = dict(step_end=batch["step_end"], solution_start=batch["solution_start"])
    if lm_weight:
      scores, logits = model.apply({"params": params}, batch["tokens"], batch["lengths"],
                                   **steps, method=ProcessRewardModel.scores_and_logits)
    else:
      scores, _ = token_scores(params, config, batch["tokens"], num_new=batch["lengths"], **steps)
    p = jnp.clip(scores, _EPS, 1 - _EPS)
    y = batch["labels"]
    bce = -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
    mask = batch["label_mask"]
    count = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(bce * mask) / count
    metrics = {"bce": loss, "mean_abs_error": jnp.sum(jnp.abs(scores - y) * mask) / count}
    if lm_weight:
      log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
      nll = -jnp.take_along_axis(log_probs, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
      lm_mask = batch["lm_mask"][:, :-1]
      metrics["lm_loss"] = jnp.sum(nll * lm_mask) / jnp.maximum(jnp.sum(lm_mask), 1.0)
      loss = loss + lm_weight * metrics["lm_loss"]
    return loss, metrics

  return loss_fn


def backbone_from_policy(policy_params, prm_params, keep_lm_head: bool = False):
  """PRM params whose backbone is the policy's: its LM head dropped (scoring never reads
  it), or kept for the multi-task objective (`reward_loss(..., lm_weight > 0)`)."""
  # A policy with tied embeddings has no separate head: its embeddings serve as one.
  backbone = {k: v for k, v in policy_params.items()
              if k in prm_params["backbone"] or (keep_lm_head and k == "lm_head")}
  missing = set(prm_params["backbone"]) - set(backbone)
  if missing:
    raise ValueError(
        f"The policy checkpoint lacks backbone parameters {sorted(missing)}; the PRM's "
        "backbone config must match the policy's.")
  shapes_match = jax.tree.map(lambda a, b: a.shape == b.shape,
                              {k: v for k, v in backbone.items() if k in prm_params["backbone"]},
                              prm_params["backbone"])
  if not all(jax.tree.leaves(shapes_match)):
    raise ValueError("The PRM backbone's shapes differ from the policy checkpoint's; use the "
                     "policy's model config for the PRM backbone.")
  return dict(prm_params, backbone=backbone)
