"""Monte Carlo step labels for PRM training (Math-Shepherd style, as in the paper).

For each training problem the policy samples `samples_per_problem` solutions, one
step at a time. After each step the decode state is forked `rollouts_per_step`
times (a cache gather: the prefix is never recomputed) and every fork is rolled out
to the end; the step's soft label is the fraction of rollouts whose final answer is
correct. A step that ends the solution is labelled by its own correctness. Samples
without a parsable final answer are dropped, as in the paper.

Results are appended to a JSON-lines file one problem at a time, so a killed run
resumes where it stopped without losing or duplicating a problem.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ttcjax import rundir
from ttcjax.models.cache import KVCache
from ttcjax.models.config import TransformerConfig
from ttcjax.models.tokenizer import Tokenizer, pad_batch
from ttcjax.sampling import (DecodeFn, Sampler, StepDelimiter, prefill,
                             row_keys, sample_steps, transformer_decode_fn)


@dataclasses.dataclass(frozen=True)
class LabelConfig:
  """Counts and caps of the labelling run.

  The paper uses 16 samples per problem and 16 rollouts per step on real models;
  the testbed's config uses fewer and says so.
  """

  samples_per_problem: int = 16
  rollouts_per_step: int = 16
  temperature: float = 1.0
  max_steps: int = 12
  max_step_tokens: int = 32
  max_solution_tokens: int = 160
  problems_per_batch: int = 16
  seed: int = 0


@dataclasses.dataclass
class LabelledProblem:
  """One problem's labelled samples (what a line of the output file holds)."""

  uid: str
  prompt: str
  samples: list[dict]  # {"steps": [str], "labels": [float], "correct": bool}


def _step_texts(tokenizer: Tokenizer, tokens: np.ndarray, step_end: np.ndarray,
                length: int) -> tuple[list[str], list[int]]:
  """Splits one row's generated tokens at step ends into texts and token counts."""
  texts, counts, start = [], [], 0
  for t in range(length):
    if step_end[t]:
      texts.append(tokenizer.decode(tokens[start:t + 1]))
      counts.append(t + 1 - start)
      start = t + 1
  if start < length:
    texts.append(tokenizer.decode(tokens[start:length]))
    counts.append(length - start)
  return texts, counts


class MonteCarloLabeler:
  """Labels problems with a policy; compiles once per batch shape.

  Args:
    config: the policy's transformer config.
    params: its parameters.
    tokenizer: its tokenizer.
    label_config: counts and caps.
    grade: (problem, solution text) -> bool.
    step_delimiter: the text that ends a step.
    decode_fn: the policy as a `DecodeFn` (default: the transformer's).
    has_answer: solution text -> whether it states a parsable final answer; samples
      without one are dropped, as in the paper (default: keep every finished sample).
  """

  def __init__(self, config: TransformerConfig, params, tokenizer: Tokenizer,
               label_config: LabelConfig, grade: Callable[[object, str], bool],
               step_delimiter: str = "\n\n", decode_fn: DecodeFn | None = None,
               max_prompt_tokens: int = 48, has_answer: Callable[[str], bool] | None = None):
    self.config, self.params, self.tokenizer = config, params, tokenizer
    self.has_answer = has_answer
    self.cfg, self.grade = label_config, grade
    self.max_prompt_tokens = max_prompt_tokens
    self.capacity = max_prompt_tokens + label_config.max_solution_tokens + 1
    self.decode_fn = decode_fn or transformer_decode_fn(config)
    self.delimiter = StepDelimiter.build(tokenizer, step_delimiter, config.vocab_size)
    self.sampler = Sampler(temperature=label_config.temperature)
    self.tokens_generated = 0
    self.tokens_prefilled = 0
    common = dict(eos_id=tokenizer.eos_id, delimiter=self.delimiter,
                  max_step_tokens=label_config.max_step_tokens,
                  max_solution_tokens=label_config.max_solution_tokens,
                  pad_id=tokenizer.pad_id)
    self._prefill = jax.jit(functools.partial(prefill, self.decode_fn, max_length=self.capacity))
    self._one_step = jax.jit(functools.partial(
        sample_steps, self.decode_fn, max_new_tokens=label_config.max_step_tokens,
        max_steps=1, **common))
    self._rollout = jax.jit(functools.partial(
        sample_steps, self.decode_fn, max_new_tokens=label_config.max_solution_tokens,
        max_steps=None, **common))

  def label(self, problems: Sequence, prompts: Sequence[str], problem_ids: Sequence[int]
            ) -> list[LabelledProblem]:
    """Labels one batch of problems (all of them, in order)."""
    cfg, tok = self.cfg, self.tokenizer
    batch = len(problems)
    k, m = cfg.samples_per_problem, cfg.rollouts_per_step
    tokens, lengths = pad_batch(tok, prompts, width=self.max_prompt_tokens)
    cache = KVCache.init(self.config, batch, self.capacity)
    state, prefilled = self._prefill(self.params, cache, jnp.asarray(tokens), jnp.asarray(lengths))
    self.tokens_prefilled += int(prefilled)
    base_keys = row_keys(jax.random.PRNGKey(cfg.seed), jnp.asarray(problem_ids), k)
    state = state.repeat(k).with_keys(base_keys)
    rows = batch * k
    generated = np.full((rows, cfg.max_solution_tokens), tok.pad_id, np.int32)
    step_ends = np.zeros((rows, cfg.max_solution_tokens), bool)
    filled = np.zeros(rows, np.int32)
    labels = [[] for _ in range(rows)]
    finished = np.zeros(rows, bool)
    for step in range(cfg.max_steps):
      if finished.all():
        break
      out = self._one_step(self.params, state, self.sampler)
      self.tokens_generated += int(out.num_generated)
      new_tokens, new_ends, new_len = jax.device_get((out.tokens, out.step_end, out.lengths))
      was_open = ~finished
      for r in np.nonzero(was_open & (new_len > 0))[0]:
        n = min(int(new_len[r]), cfg.max_solution_tokens - filled[r])
        generated[r, filled[r]:filled[r] + n] = new_tokens[r, :n]
        step_ends[r, filled[r]:filled[r] + n] = new_ends[r, :n]
        filled[r] += n
      finished = np.asarray(out.finished)
      state = out.state
      # Roll every row that is still open out m times from its new prefix.
      open_rows = was_open & ~finished
      soft = np.zeros(rows)
      if open_rows.any():
        keys = jax.vmap(lambda key: jax.random.fold_in(key, 1_000_003 + step))(state.keys)
        forks = state.repeat(m).with_keys(
            jax.vmap(jax.random.fold_in)(jnp.repeat(keys, m, axis=0),
                                         jnp.tile(jnp.arange(m), rows)))
        # Rows already finished or not open stay finished: nothing is generated for them.
        forks = forks.replace(finished=jnp.repeat(jnp.asarray(~open_rows), m))
        rolled = self._rollout(self.params, forks, self.sampler)
        self.tokens_generated += int(rolled.num_generated)
        roll_tokens, roll_len = jax.device_get((rolled.tokens, rolled.lengths))
        for r in np.nonzero(open_rows)[0]:
          prefix = tok.decode(generated[r, :filled[r]])
          wins = sum(self.grade(problems[r // k], prefix + tok.decode(
              roll_tokens[r * m + j, :roll_len[r * m + j]])) for j in range(m))
          soft[r] = wins / m
      for r in np.nonzero(was_open)[0]:
        if open_rows[r]:
          labels[r].append(float(soft[r]))
        else:  # the step ended the solution: its label is the solution's correctness
          text = tok.decode(generated[r, :filled[r]])
          labels[r].append(float(self.grade(problems[r // k], text)))
    results = []
    for b, problem in enumerate(problems):
      samples = []
      for r in range(b * k, (b + 1) * k):
        text = tok.decode(generated[r, :filled[r]])
        steps, _ = _step_texts(tok, generated[r], step_ends[r], filled[r])
        if not finished[r] or len(steps) != len(labels[r]):
          continue  # ran out of steps or tokens: no parsable end
        if self.has_answer is not None and not self.has_answer(text):
          continue
        samples.append({"steps": steps, "labels": labels[r],
                        "correct": bool(self.grade(problem, text)), "text": text})
      results.append(LabelledProblem(uid=problem.uid, prompt=prompts[b], samples=samples))
    return results


def _done_uids(path: str) -> set[str]:
  return {r["uid"] for r in rundir.read_json_lines(path, "labelled problem")}


def label_to_file(labeler: MonteCarloLabeler, problems: Sequence, prompts: Sequence[str],
                  path: str, extra: Callable[[object], dict] | None = None) -> dict:
  """Labels every problem not yet in `path`, appending one JSON line per problem.

  Args:
    labeler: the labeller.
    problems: objects with a `uid`.
    prompts: their prompt texts.
    path: the JSON-lines output (resumed if it exists).
    extra: problem -> extra fields to store (e.g. the true step labels).

  Returns:
    {"problems": labelled this call, "tokens_generated", "wall_s", "tokens_per_s"}.
  """
  rundir.drop_partial_line(path)
  done = _done_uids(path)
  todo = [i for i, p in enumerate(problems) if p.uid not in done]
  size = labeler.cfg.problems_per_batch
  start = time.perf_counter()
  tokens_before = labeler.tokens_generated
  with open(path, "a") as f, tqdm(total=len(problems), initial=len(problems) - len(todo),
                                  desc="mc-labels", disable=None) as bar:
    for chunk_start in range(0, len(todo), size):
      chunk = todo[chunk_start:chunk_start + size]
      if len(chunk) < size:  # pad the batch so the shapes (and the compile) stay fixed
        chunk_padded = chunk + [chunk[-1]] * (size - len(chunk))
      else:
        chunk_padded = chunk
      results = labeler.label([problems[i] for i in chunk_padded],
                              [prompts[i] for i in chunk_padded], chunk_padded)
      for i, result in zip(chunk, results):
        record = dataclasses.asdict(result)
        if extra is not None:
          record.update(extra(problems[i]))
        f.write(json.dumps(record) + "\n")
      f.flush()
      elapsed = time.perf_counter() - start
      bar.update(len(chunk))
      tokens_per_s = (labeler.tokens_generated - tokens_before) / elapsed
      bar.set_postfix(tok_s=f"{tokens_per_s:.0f}")
      if bar.disable:  # not a terminal: one line per batch instead of a bar
        finished = len(problems) - len(todo) + chunk_start + len(chunk)  # bar.n stays 0 when disabled
        print(f"mc-labels {finished}/{len(problems)} problems, {elapsed:.0f} s, "
              f"{tokens_per_s:.0f} tokens/s", flush=True)
  elapsed = time.perf_counter() - start
  generated = labeler.tokens_generated - tokens_before
  return {"problems": len(todo), "tokens_generated": generated, "wall_s": elapsed,
          "tokens_per_s": generated / max(elapsed, 1e-9)}


def read_labels(path: str) -> list[dict]:
  """All complete records of a labels file (ValueError naming a damaged line)."""
  if not os.path.exists(path):
    raise ValueError(f"No labels file at {path}; run the labelling stage first.")
  return rundir.read_json_lines(path, "labelled problem")
