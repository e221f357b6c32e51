"""One resumable training loop for every model the framework trains.

A run is a loss function, a deterministic batch function (batch k depends only on
the seed and k), and an optax optimizer. State (step, params, optimizer state, the
best parameters seen by early stopping) is checkpointed with orbax; a run killed at
any point and restarted resumes from the latest checkpoint and, because batches and
updates are pure functions of the step, reaches bit-identical parameters on CPU.

Metrics go to `metrics.jsonl` in the workdir (one JSON object per logged step; lines
past the restored step are dropped on resume, so nothing is duplicated) and to a
progress bar.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ttcjax.training.checkpoints import TrainCheckpointer

Batch = Mapping[str, np.ndarray]
LossFn = Callable[[Any, Batch], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warmup, cosine decay and global-norm clipping."""

  learning_rate: float = 1e-3
  warmup_steps: int = 100
  final_lr_fraction: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  weight_decay: float = 0.01
  clip_norm: float = 1.0


def make_optimizer(cfg: OptimizerConfig, num_steps: int) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=min(cfg.warmup_steps, num_steps),
      decay_steps=max(num_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * cfg.final_lr_fraction)
  return optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                     optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs.

  Attributes:
    step: scalar int32, updates done.
    params: the model's parameters.
    opt_state: the optimizer's state.
    best_params: parameters at the best evaluation so far (early stopping).
    best_eval: scalar float32, the best evaluation loss (inf before the first).
    evals_since_best: scalar int32, evaluations without improvement.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  best_params: Any
  best_eval: jax.Array
  evals_since_best: jax.Array


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How long to train, and how often to log, evaluate and save."""

  num_steps: int
  log_every: int = 50
  eval_every: int = 0  # 0: never evaluate
  save_every: int = 500
  keep_checkpoints: int = 2
  early_stopping_patience: int = 0  # evaluations without improvement; 0: off


def _truncate_metrics(path: str, last_step: int) -> None:
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
  with open(path, "w") as f:
    f.writelines(lines)


def train(*, workdir: str, params, loss_fn: LossFn, batch_fn: Callable[[int], Batch],
          optimizer: optax.GradientTransformation, loop: LoopConfig,
          eval_fn: Callable[[Any], dict[str, float]] | None = None,
          tokens_in_batch: Callable[[Batch], int] | None = None,
          description: str = "train", stop_after: int | None = None) -> TrainState:
  """Trains, resuming from `workdir` if it holds checkpoints of this run.

  Args:
    workdir: run directory (checkpoints/ and metrics.jsonl go here).
    params: initial parameters (ignored when resuming).
    loss_fn: (params, batch) -> (scalar loss, metrics); pure, jitted here once.
    batch_fn: step -> batch of numpy arrays; must be deterministic in the step.
    optimizer: an optax transformation.
    loop: steps and intervals.
    eval_fn: params -> {"loss": ..., ...} on held-out data; "loss" drives early
      stopping and the best-parameter choice.
    tokens_in_batch: counts a batch's tokens for the tokens/s figure.
    description: progress-bar label.
    stop_after: stop (as if killed) after this many steps of this call; for tests.

  Returns:
    The final `TrainState`; with evaluation, `best_params` holds the parameters of
    the best evaluation.
  """
  if loop.num_steps <= 0:
    raise ValueError(f"num_steps must be positive, got {loop.num_steps}.")
  checkpointer = TrainCheckpointer(os.path.join(workdir, "checkpoints"), loop.save_every,
                                   loop.keep_checkpoints)
  state = TrainState(step=jnp.int32(0), params=params, opt_state=optimizer.init(params),
                     best_params=params, best_eval=jnp.float32(np.inf),
                     evals_since_best=jnp.int32(0))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  restored = checkpointer.latest_step()
  if restored is not None:
    state = checkpointer.restore(state, restored)
    _truncate_metrics(metrics_path, restored)
  elif os.path.exists(metrics_path):
    os.remove(metrics_path)

  @jax.jit
  def update(state: TrainState, batch):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  start = int(state.step)
  bar = tqdm(total=loop.num_steps, initial=start, desc=description, dynamic_ncols=True,
             disable=None)
  window_tokens, window_start = 0, time.perf_counter()
  stopped_early = int(state.evals_since_best) >= loop.early_stopping_patience > 0
  with open(metrics_path, "a") as metrics_file:
    for step in range(start, loop.num_steps):
      if stopped_early or (stop_after is not None and step - start >= stop_after):
        break
      batch = batch_fn(step)
      state, metrics = update(state, batch)
      done = step + 1
      window_tokens += tokens_in_batch(batch) if tokens_in_batch else 0
      record = None
      if done % loop.log_every == 0 or done == loop.num_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - window_start
        record = {"step": done, **metrics, "tokens_per_s": window_tokens / max(elapsed, 1e-9)}
        window_tokens, window_start = 0, time.perf_counter()
      if eval_fn is not None and loop.eval_every and (
          done % loop.eval_every == 0 or done == loop.num_steps):
        evaluation = eval_fn(state.params)
        improved = evaluation["loss"] < float(state.best_eval)
        state = state.replace(
            best_params=state.params if improved else state.best_params,
            best_eval=jnp.float32(min(evaluation["loss"], float(state.best_eval))),
            evals_since_best=jnp.int32(0 if improved else int(state.evals_since_best) + 1))
        record = dict(record or {"step": done}, **{f"eval_{k}": v for k, v in evaluation.items()})
        stopped_early = int(state.evals_since_best) >= loop.early_stopping_patience > 0
      if record is not None:
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"}, refresh=False)
        if bar.disable:  # not a terminal: one line per record instead of a bar
          print(f"{description} step {done}/{loop.num_steps} " + " ".join(
              f"{k}={v:.4g}" for k, v in record.items() if k != "step"), flush=True)
      checkpointer.maybe_save(done, state, force=done == loop.num_steps or stopped_early)
      bar.update(1)
  bar.close()
  checkpointer.close()
  return state
