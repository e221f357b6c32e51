"""Supervised fine-tuning of a policy on reference solutions.

A training sequence is `[bos] prompt solution [eos]`; the loss is next-token cross
entropy on the solution and the EOS only (the prompt is given, not learned).

B denotes the batch dimension and L the padded sequence length.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models.config import TransformerConfig
from ttcjax.models.tokenizer import Tokenizer
from ttcjax.models.transformer import forward


def encode_sft_batch(tokenizer: Tokenizer, prompts: Sequence[str], solutions: Sequence[str],
                     max_length: int, pad_to_multiple: int | None = None) -> dict[str, np.ndarray]:
  """Tokenises (prompt, solution) pairs into a padded batch.

  Args:
    tokenizer: the policy's tokenizer.
    prompts, solutions: B texts each.
    max_length: the longest allowed sequence (longer ones raise) and, without
      `pad_to_multiple`, the padded length L.
    pad_to_multiple: pad only to the batch's longest sequence rounded up to this
      multiple (fewer wasted tokens; a handful of shapes to compile).

  Returns:
    {"inputs": [B, L] int32, "targets": [B, L] int32, "loss_mask": [B, L] float32,
     "lengths": [B] int32 valid input tokens}.
  """
  if len(prompts) != len(solutions) or not prompts:
    raise ValueError(
        f"Need as many prompts as solutions, and at least one (got {len(prompts)} and "
        f"{len(solutions)}).")
  sequences = []
  for prompt, solution in zip(prompts, solutions):
    prompt_ids = tokenizer.encode(prompt, add_bos=True)
    sequences.append((len(prompt_ids), prompt_ids + tokenizer.encode(solution) + [tokenizer.eos_id]))
  return pad_sequences(sequences, tokenizer.pad_id, max_length, pad_to_multiple)


def pad_sequences(sequences: Sequence[tuple[int, list[int]]], pad_id: int, max_length: int,
                  pad_to_multiple: int | None = None) -> dict[str, np.ndarray]:
  """(context length, whole sequence) pairs as a padded batch whose loss covers
  everything after the context (see `encode_sft_batch` for the arguments and keys)."""
  batch = len(sequences)
  longest = max(len(seq) - 1 for _, seq in sequences)
  if longest > max_length:
    raise ValueError(
        f"A training sequence of {longest} tokens exceeds max_length={max_length}; raise "
        "data.max_length.")
  if pad_to_multiple:
    max_length = min(max_length, -(-longest // pad_to_multiple) * pad_to_multiple)
  inputs = np.full((batch, max_length), pad_id, np.int32)
  targets = np.full((batch, max_length), pad_id, np.int32)
  mask = np.zeros((batch, max_length), np.float32)
  lengths = np.zeros((batch,), np.int32)
  for i, (prompt_length, sequence) in enumerate(sequences):
    n = len(sequence) - 1
    inputs[i, :n] = sequence[:-1]
    targets[i, :n] = sequence[1:]
    mask[i, prompt_length - 1:n] = 1.0
    lengths[i] = n
  return {"inputs": inputs, "targets": targets, "loss_mask": mask, "lengths": lengths}


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-token cross entropy [B, L] from logits [B, L, V] and targets [B, L]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def sft_loss(config: TransformerConfig):
  """The loss function (params, batch) -> (mean masked cross entropy, metrics)."""

  def loss_fn(params, batch):
    out = forward(params, config, batch["inputs"], num_new=batch["lengths"])
    losses = token_cross_entropy(out.logits, batch["targets"])
    mask = batch["loss_mask"]
    loss = jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    correct = (jnp.argmax(out.logits, -1) == batch["targets"]) * mask
    return loss, {"token_accuracy": jnp.sum(correct) / jnp.maximum(jnp.sum(mask), 1.0)}

  return loss_fn
