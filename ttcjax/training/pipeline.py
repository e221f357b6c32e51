"""The testbed's training stages, driven by ml_collections configs.

* `sft`: train a policy on reference solutions of the arithmetic task.
* `mc_labels`: sample solutions with a trained policy and label every step by Monte
  Carlo rollouts.
* `prm` / `orm`: train a value head (backbone initialised from the policy) on the
  soft step labels, or on final-answer correctness.
* `revision_samples` / `revision_sft`: sample the policy many times per training
  question, then fine-tune a revision model (initialised from the policy) to write a
  correct attempt after incorrect ones (`ttcjax.training.revisions`).
* `revision_outputs`: the revision model's own chains of attempts on training
  questions, graded, as a labels file the `orm` stage trains a revision ORM on (the
  paper's verifier for revisions).

Each stage writes into its workdir and exports its result as `model/` (a
safetensors file plus model.json), or `labels.jsonl` / `samples.jsonl` for the labelling and sampling stages.
Launchers (`experiments/train.py`, `experiments/mc_labels.py`) only parse flags and
call `run`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.transformer import init_params
from ttcjax.tasks.arith import arithmetic, testbed
from ttcjax import rundir
from ttcjax.models.export import export_model
from ttcjax.rollouts import SolutionSampler
from ttcjax.sampling import Sampler
from ttcjax.training import loop, mc_labels, revisions, reward_models, sft

STAGES = ("sft", "mc_labels", "prm", "orm", "revision_samples", "revision_sft",
          "revision_outputs")


def _export_dir(config, workdir: str) -> str:
  return config.get("export_dir") or os.path.join(workdir, "model")


def _write_summary(workdir: str, summary: dict[str, Any]) -> None:
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the stage `config.stage` in `workdir` (resuming what is there)."""
  stage = config.get("stage")
  if stage not in STAGES:
    raise ValueError(f"config.stage must be one of {STAGES}, got {stage!r}.")
  rundir.check_run_config(workdir, config.to_dict(), ignore=("export_dir",))
  start = time.perf_counter()
  summary = {"sft": run_sft, "mc_labels": run_mc_labels, "prm": run_reward,
             "orm": run_reward, "revision_samples": run_revision_samples,
             "revision_sft": run_revision_sft,
             "revision_outputs": run_revision_outputs}[stage](config, workdir)
  summary["wall_s"] = time.perf_counter() - start
  _write_summary(workdir, summary)
  return summary


def _optimizer(config, num_steps):
  return loop.make_optimizer(loop.OptimizerConfig(**config.optimizer.to_dict()), num_steps)


def _loop_config(config) -> loop.LoopConfig:
  t = config.train
  return loop.LoopConfig(num_steps=t.steps, log_every=t.log_every, eval_every=t.eval_every,
                         save_every=t.save_every, keep_checkpoints=t.keep_checkpoints,
                         early_stopping_patience=t.get("early_stopping_patience", 0))


# ------------------------------------------------------------------------- policy


_LENGTH_GROUP = 8  # batches drawn together and split by length
_PAD_MULTIPLE = 16


def _sft_batch_fn(config, tokenizer):
  """Batch k of the SFT stream: pure in (data seed, k).

  Problems are drawn `_LENGTH_GROUP` batches at a time, sorted by length, and cut
  into batches, so each batch pads to similar lengths: attention over padding is
  most of a small model's cost.
  """
  d = config.data

  @functools.lru_cache(maxsize=2)
  def sorted_group(group: int):
    # Drawn once for the group's batches, not once per batch.
    problems = arithmetic.train_batch(group, d.batch_size * _LENGTH_GROUP, d.seed, tuple(d.levels))
    return sorted(problems, key=lambda p: len(p.prompt) + len(p.solution()))

  def batch_fn(step: int):
    group, index = divmod(step, _LENGTH_GROUP)
    problems = sorted_group(group)[index * d.batch_size:(index + 1) * d.batch_size]
    return sft.encode_sft_batch(tokenizer, [p.prompt for p in problems],
                                [p.solution() for p in problems], d.max_length, _PAD_MULTIPLE)

  return batch_fn


def run_sft(config, workdir: str) -> dict[str, Any]:
  tokenizer = testbed.tokenizer()
  model_config = TransformerConfig(vocab_size=tokenizer.vocab_size, **config.model.to_dict())
  params = init_params(model_config, jax.random.PRNGKey(config.seed))
  loss_fn = sft.sft_loss(model_config)
  batch_fn = _sft_batch_fn(config, tokenizer)
  validation = arithmetic.validation_problems(config.data.seed, config.data.eval_problems)
  eval_batch = sft.encode_sft_batch(tokenizer, [p.prompt for p in validation],
                                    [p.solution() for p in validation], config.data.max_length)
  eval_loss = jax.jit(loss_fn)

  def eval_fn(params):
    loss, metrics = eval_loss(params, eval_batch)
    return {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}

  state = loop.train(
      workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn,
      optimizer=_optimizer(config, config.train.steps), loop=_loop_config(config),
      eval_fn=eval_fn, tokens_in_batch=lambda b: int(b["lengths"].sum()),
      description=f"sft {model_config.num_params / 1e6:.2f}M")
  # Pretraining tokens (for FLOPs-matched comparisons): every token fed, counted exactly.
  train_tokens = sum(int(batch_fn(s)["lengths"].sum()) for s in range(config.train.steps))
  export = _export_dir(config, workdir)
  params = state.params
  if config.get("export_dtype", "float32") != "float32":
    params = jax.tree.map(lambda x: x.astype(config.export_dtype), params)
  export_model(export, params, model_config.replace(
      param_dtype=config.get("export_dtype", "float32")), extra={
          "stage": "sft", "train_tokens": train_tokens, "train_steps": config.train.steps,
          "tokenizer": tokenizer.to_dict(), "step_delimiter": arithmetic.STEP_DELIMITER})
  return {"stage": "sft", "num_params": model_config.num_params, "train_tokens": train_tokens,
          "final_eval": eval_fn(state.params), "export_dir": export}


# ------------------------------------------------------------------ MC labelling


def run_mc_labels(config, workdir: str) -> dict[str, Any]:
  tokenizer = testbed.tokenizer()
  model_config, params, _ = testbed.load_policy(config.policy_dir)
  problems = arithmetic.make_split("train", config.num_problems, config.data_seed)
  label_config = mc_labels.LabelConfig(**config.labels.to_dict())
  labeler = mc_labels.MonteCarloLabeler(model_config, params, tokenizer, label_config,
                                        grade=arithmetic.is_correct,
                                        step_delimiter=arithmetic.STEP_DELIMITER,
                                        has_answer=lambda t: arithmetic.extract_answer(t) is not None)

  def truth(problem):
    return {"level": problem.level}

  stats = mc_labels.label_to_file(labeler, problems, [p.prompt for p in problems],
                                  os.path.join(workdir, "labels.jsonl"), extra=truth)
  records = mc_labels.read_labels(os.path.join(workdir, "labels.jsonl"))
  samples = [s for r in records for s in r["samples"]]
  return {"stage": "mc_labels", "problems": len(records), "samples": len(samples),
          "sample_accuracy": float(np.mean([s["correct"] for s in samples])) if samples else 0.0,
          "rollout_tokens_per_s_this_call": stats["tokens_per_s"],
          "tokens_generated_this_call": stats["tokens_generated"]}


# ----------------------------------------------------------------------- PRM / ORM


def _reward_examples(records: list[dict], outcome: bool):
  examples = []
  for record in records:
    for sample in record["samples"]:
      labels = [float(sample["correct"])] * len(sample["steps"]) if outcome else sample["labels"]
      examples.append((record["uid"], record["prompt"], sample["steps"], labels,
                       bool(sample["correct"])))
  return examples


def _epoch_batches(examples, sizes: np.ndarray, batch_size: int, seed: int, encode,
                   length_group: int = _LENGTH_GROUP):
  """batch_fn(step) over epochs of `examples`: pure in (seed, step).

  Each epoch is shuffled, then every run of `length_group` batches is sorted by length
  (`sizes`), so batches of similar lengths pad less (as for SFT); 1 keeps every batch
  a random mixture.
  """
  per_epoch = max(1, len(examples) // batch_size)

  @functools.lru_cache(maxsize=2)
  def epoch_order(epoch: int) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(len(examples))
    span = length_group * batch_size
    return np.concatenate([chunk[np.argsort(sizes[chunk], kind="stable")]
                           for chunk in np.array_split(order, range(span, len(order), span))])

  def batch_fn(step: int):
    epoch, index = divmod(step, per_epoch)
    chosen = epoch_order(epoch)[index * batch_size:(index + 1) * batch_size]
    return encode([examples[i] for i in chosen])

  return batch_fn


def run_reward(config, workdir: str) -> dict[str, Any]:
  outcome = config.stage == "orm"
  tokenizer = testbed.tokenizer()
  policy_config, policy_params, _ = testbed.load_policy(config.policy_dir)
  # Older configs lack the two options: both off.
  step_likelihood = bool(config.model.get("step_likelihood", False))
  prm_config = PrmConfig(policy_config, kind="value", num_labels=1,
                         head_hidden=config.model.head_hidden, step_likelihood=step_likelihood)
  params = init_prm_params(prm_config, jax.random.PRNGKey(config.seed))
  # The multi-task objective keeps next-token prediction on the right solutions beside
  # the step loss, through the policy's own LM head (`reward_models`).
  lm_weight = float(config.model.get("lm_weight", 0.0))
  params = reward_models.backbone_from_policy(policy_params, params,
                                              keep_lm_head=lm_weight > 0 or step_likelihood)
  records = mc_labels.read_labels(config.labels_path)
  if not records:
    raise ValueError(f"{config.labels_path} holds no labelled problems.")
  uids = sorted({r["uid"] for r in records})
  rng = np.random.default_rng(config.seed)
  held_out = set(rng.choice(uids, max(1, int(len(uids) * config.data.held_out_fraction)),
                            replace=False))
  train_ex = _reward_examples([r for r in records if r["uid"] not in held_out], outcome)
  eval_ex = _reward_examples([r for r in records if r["uid"] in held_out], outcome)
  if not train_ex or not eval_ex:
    raise ValueError("Too few labelled samples to split into training and held-out sets.")
  d = config.data

  def encode(examples):
    return reward_models.encode_reward_batch(
        tokenizer, [e[1] for e in examples], [e[2] for e in examples],
        [e[3] for e in examples], d.max_length, outcome_only=outcome,
        pad_to_multiple=_PAD_MULTIPLE, lm_solutions=[e[4] for e in examples])

  sizes = np.array([len(e[1]) + sum(len(step) for step in e[2]) for e in train_ex])

  batch_fn = _epoch_batches(train_ex, sizes, d.batch_size, config.seed, encode)

  loss_fn = reward_models.reward_loss(prm_config, lm_weight)
  eval_loss = jax.jit(loss_fn)
  eval_ex.sort(key=lambda e: len(e[1]) + sum(len(step) for step in e[2]))
  eval_batches = [encode(eval_ex[i:i + d.batch_size]) for i in range(0, len(eval_ex), d.batch_size)]

  def eval_fn(params):
    # Early stopping reads the verifier's own loss (held-out BCE), not the LM term.
    weights = [b["label_mask"].sum() for b in eval_batches]
    metrics = [eval_loss(params, b)[1] for b in eval_batches]
    out = {"loss": float(np.average([float(m["bce"]) for m in metrics], weights=weights))}
    lm_weights = [b["lm_mask"].sum() for b in eval_batches]
    if lm_weight and sum(lm_weights) > 0:  # held out without a right solution: no LM term
      out["lm_loss"] = float(np.average([float(m["lm_loss"]) for m in metrics],
                                        weights=lm_weights))
    return out

  state = loop.train(
      workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn,
      optimizer=_optimizer(config, config.train.steps), loop=_loop_config(config),
      eval_fn=eval_fn, tokens_in_batch=lambda b: int(b["lengths"].sum()),
      description=config.stage)
  export = _export_dir(config, workdir)
  export_model(export, state.best_params, prm_config, extra={
      "stage": config.stage, "best_eval_loss": float(state.best_eval),
      "tokenizer": tokenizer.to_dict(), "step_delimiter": arithmetic.STEP_DELIMITER})
  return {"stage": config.stage, "train_examples": len(train_ex), "held_out_examples": len(eval_ex),
          "best_eval_loss": float(state.best_eval), "steps_done": int(state.step),
          "export_dir": export}


# ------------------------------------------------------------------- revisions


def _graded_to_file(sample_fn, problems, path: str, problems_per_batch: int
                    ) -> tuple[dict, np.ndarray]:
  """Samples every training question not yet in `path` (`revisions.sample_to_file`);
  (this call's stats, [Q, N] correctness of every question in the file)."""
  stats = revisions.sample_to_file(sample_fn, problems, [p.prompt for p in problems], path,
                                   problems_per_batch=problems_per_batch,
                                   extra=lambda p: {"level": p.level})
  records = revisions.read_samples(path)
  return stats, np.array([[x["correct"] for x in r["samples"]] for r in records], bool)


def run_revision_samples(config, workdir: str) -> dict[str, Any]:
  tokenizer = testbed.tokenizer()
  model_config, params, _ = testbed.load_policy(config.policy_dir)
  problems = arithmetic.make_split("train", config.num_problems, config.data_seed)
  s = config.sampling
  sampler = Sampler(temperature=s.temperature).check()
  solution_sampler = SolutionSampler(model_config, tokenizer,
                                     max_prompt_tokens=testbed.MAX_PROMPT_TOKENS,
                                     max_solution_tokens=s.max_solution_tokens,
                                     step_delimiter=arithmetic.STEP_DELIMITER)
  rng = jax.random.PRNGKey(s.seed)
  generated = [0]

  def sample_fn(batch, ids):
    out = solution_sampler.sample(params, [p.prompt for p in batch], s.samples_per_problem,
                                  sampler, rng, problem_ids=ids)
    generated[0] += out.num_generated
    return [[{"text": text, "correct": bool(arithmetic.is_correct(problem, text)),
              "finished": bool(done)} for text, done in zip(texts, finished)]
            for problem, texts, finished in zip(batch, out.texts, out.finished)]

  stats, correct = _graded_to_file(sample_fn, problems, os.path.join(workdir, "samples.jsonl"),
                                   s.problems_per_batch)
  return {"stage": "revision_samples", "problems": len(correct),
          "samples": int(correct.size), "sample_accuracy": float(correct.mean()),
          "problems_without_correct": int((~correct.any(axis=1)).sum()),
          "problems_without_incorrect": int(correct.all(axis=1).sum()),
          "tokens_generated_this_call": int(generated[0]),
          "tokens_per_s_this_call": generated[0] / max(stats["wall_s"], 1e-9)}


def run_revision_sft(config, workdir: str) -> dict[str, Any]:
  tokenizer = testbed.tokenizer()
  separator = revisions.separator_tokens(tokenizer, config.separator)
  model_config, params, policy_extra = testbed.load_policy(config.policy_dir)
  records = revisions.read_samples(config.samples_path)
  if not records:
    raise ValueError(f"{config.samples_path} holds no sampled questions.")
  d = config.data
  uids = sorted(r["uid"] for r in records)
  rng = np.random.default_rng(config.seed)
  held_out = set(rng.choice(uids, max(1, int(len(uids) * d.held_out_fraction)), replace=False))
  train_ex = revisions.build_examples([r for r in records if r["uid"] not in held_out],
                                      np.random.default_rng([config.seed, 1]), d.max_previous)
  eval_ex = revisions.build_examples([r for r in records if r["uid"] in held_out],
                                     np.random.default_rng([config.seed, 2]), d.max_previous)
  if not train_ex or not eval_ex:
    raise ValueError("Too few correct samples to split into training and held-out examples; "
                     "sample more questions.")

  def encode(examples):
    return revisions.encode_revision_batch(tokenizer, examples, separator, d.max_length,
                                           _PAD_MULTIPLE)

  sizes = np.array([len(e.prompt) + sum(map(len, e.previous)) + len(e.target) for e in train_ex])

  batch_fn = _epoch_batches(train_ex, sizes, d.batch_size, config.seed, encode,
                            d.get("length_group", _LENGTH_GROUP))

  loss_fn = sft.sft_loss(model_config)
  eval_loss = jax.jit(loss_fn)
  # Held-out loss apart for first attempts (no previous one) and revisions, so a learning
  # rate that revises well by forgetting how to answer shows as such.
  def batches(examples):
    examples = sorted(examples, key=lambda e: len(e.prompt) + sum(map(len, e.previous))
                      + len(e.target))
    return [encode(examples[i:i + d.batch_size]) for i in range(0, len(examples), d.batch_size)]

  eval_groups = {"first_attempt": batches([e for e in eval_ex if not e.previous]),
                 "revision": batches([e for e in eval_ex if e.previous])}

  def eval_fn(params):
    sums, counts = {}, {}
    for name, group in eval_groups.items():
      counts[name] = sum(float(b["loss_mask"].sum()) for b in group)
      sums[name] = sum(float(eval_loss(params, b)[0]) * float(b["loss_mask"].sum())
                       for b in group)
    metrics = {"loss": sum(sums.values()) / sum(counts.values())}
    metrics.update({f"loss_{name}": sums[name] / counts[name]
                    for name in eval_groups if counts[name]})
    return metrics

  state = loop.train(
      workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn,
      optimizer=_optimizer(config, config.train.steps), loop=_loop_config(config),
      eval_fn=eval_fn, tokens_in_batch=lambda b: int(b["lengths"].sum()),
      description="revision sft")
  counts = np.bincount([len(e.previous) for e in train_ex], minlength=d.max_previous + 1)
  best_eval = eval_fn(state.best_params)
  # Its pretraining tokens for FLOPs-matched comparisons: the policy's plus every token fed here.
  sft_tokens = sum(int(batch_fn(s)["lengths"].sum()) for s in range(int(state.step)))
  train_tokens = int(policy_extra.get("train_tokens", 0)) + sft_tokens
  export = _export_dir(config, workdir)
  export_model(export, state.best_params, model_config, extra={
      "stage": "revision_sft", "tokenizer": tokenizer.to_dict(),
      "step_delimiter": arithmetic.STEP_DELIMITER, "attempt_separator": config.separator,
      "max_previous_attempts": revisions.MAX_PREVIOUS_ATTEMPTS,
      "train_tokens": train_tokens, "revision_train_tokens": sft_tokens,
      "best_eval_loss": float(state.best_eval), "best_eval": best_eval})
  return {"stage": "revision_sft", "train_examples": len(train_ex),
          "held_out_examples": len(eval_ex),
          "train_previous_attempt_counts": [int(c) for c in counts],
          "revision_train_tokens": sft_tokens,
          "best_eval_loss": float(state.best_eval), "best_eval": best_eval,
          "steps_done": int(state.step), "export_dir": export}


def run_revision_outputs(config, workdir: str) -> dict[str, Any]:
  """Chains of the revision model on training questions, every attempt graded, written
  in the labels format (`mc_labels.read_labels`) with outcome labels only."""
  runner = testbed.search_runner(config.policy_dir, config.prm_dir, dict(config.caps),
                                 revision_dir=config.revision_dir)
  problems = arithmetic.make_split("train", config.num_problems, config.data_seed)
  s = config.sampling
  sampler = Sampler(temperature=s.temperature).check()
  budget = s.chains * s.chain_length
  rng = jax.random.PRNGKey(s.seed)

  def sample_fn(batch, ids):
    result = runner.search("revisions", [p.prompt for p in batch], ids, budget=budget, rng=rng,
                           sampler=sampler, chain_length=s.chain_length)
    out = []
    for problem, texts, positions in zip(batch, result.texts, result.position):
      out.append([{"text": text, "steps": arithmetic.split_steps(text),
                   "correct": bool(arithmetic.is_correct(problem, text)),
                   "position": int(position)} for text, position in zip(texts, positions)])
    return out

  stats, correct = _graded_to_file(sample_fn, problems, os.path.join(workdir, "labels.jsonl"),
                                   s.problems_per_batch)
  return {"stage": "revision_outputs", "problems": len(correct), "samples": int(correct.size),
          "sample_accuracy": float(correct.mean()), "wall_s_this_call": stats["wall_s"]}
