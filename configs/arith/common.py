"""Pieces shared by the testbed's configs."""

import ml_collections

DATA_SEED = 0
MAX_LENGTH = 192  # prompt + longest solution + EOS, in characters


def sft_config(model: dict, steps: int, learning_rate: float) -> ml_collections.ConfigDict:
  """An SFT run on the arithmetic task (same data stream for every policy size)."""
  c = ml_collections.ConfigDict()
  c.stage = "sft"
  c.seed = 0
  c.export_dir = ""
  c.export_dtype = "float32"
  c.model = dict(model)
  c.data = dict(seed=DATA_SEED, batch_size=64, max_length=MAX_LENGTH,
                levels=list(range(1, 11)), eval_problems=256)
  c.optimizer = dict(learning_rate=learning_rate, warmup_steps=200, final_lr_fraction=0.1,
                     b1=0.9, b2=0.95, weight_decay=0.01, clip_norm=1.0)
  c.train = dict(steps=steps, log_every=50, eval_every=500, save_every=250,
                 keep_checkpoints=2, early_stopping_patience=0)
  return c


def reward_config(stage: str, policy_dir: str, labels_path: str,
                  steps: int) -> ml_collections.ConfigDict:
  """PRM (stage "prm") or ORM (stage "orm") training on Monte Carlo labels (the
  original recipe: value head on the backbone's hidden state, BCE only)."""
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.seed = 0
  c.export_dir = ""
  c.policy_dir = policy_dir
  c.labels_path = labels_path
  # Set model.lm_weight > 0 to keep next-token prediction on the solutions beside the
  # step loss (`ttcjax.training.reward_models`; absent: 0, which keeps older runs' configs).
  c.model = dict(head_hidden=128)
  c.data = dict(batch_size=64, max_length=MAX_LENGTH, held_out_fraction=0.1)
  # The paper: AdamW, lr 3e-5, betas (0.9, 0.95) on a large model; a small model
  # trained from a policy this size needs a larger rate.
  c.optimizer = dict(learning_rate=1e-3, warmup_steps=100, final_lr_fraction=0.1,
                     b1=0.9, b2=0.95, weight_decay=0.01, clip_norm=1.0)
  c.train = dict(steps=steps, log_every=50, eval_every=100, save_every=100,
                 keep_checkpoints=2, early_stopping_patience=5)
  return c


def verifier_config(stage: str, step_likelihood: bool = True) -> ml_collections.ConfigDict:
  """The testbed's verifiers since testbed v2: PRM or ORM from the larger policy,
  multi-task (BCE on the labels plus next-token loss on the right solutions), the
  head reading the step's likelihood features beside the hidden state.

  The learning rate is 0.4x the larger policy's pretraining peak (7.5e-4), the usual
  fine-tuning discount; no sweep was run for it (one CPU-hour per run).
  """
  c = reward_config(stage, policy_dir="checkpoints/arith/policy_large",
                    labels_path="runs/mc_labels/labels.jsonl", steps=1000)
  c.model.lm_weight = 1.0
  c.model.step_likelihood = step_likelihood
  c.optimizer.learning_rate = 3e-4
  return c
