"""Training data of a revision model (the paper's section 6), from the policy's own samples.

Two stages (`ttcjax.training.pipeline`):

* `revision_samples`: the policy samples `samples_per_problem` (the paper: 64)
  solutions per training question; each is graded, and the question's samples are
  appended to `samples.jsonl` as one JSON line (resumable by question uid).
* `revision_sft`: every correct sample becomes a target, preceded in its context by
  k previous attempts, all incorrect samples of the same question. k is drawn
  uniformly from 0..`max_previous` (the paper: 0-4) and capped by the incorrect
  samples the question has. The attempt placed last (nearest the target) is the
  incorrect sample closest to the target by character edit distance (Levenshtein);
  the other k - 1 are drawn at random from the remaining incorrect samples, in random
  order. A question with no correct sample contributes nothing (no target); one with
  no incorrect sample contributes its correct samples as targets after no previous
  attempt (k = 0), which teaches the first attempt as the policy makes it.

The context layout (`revision_prompt_tokens`) is the one sequential revisions run at
test time (`ttcjax.search.revisions`):

    [bos] prompt  attempt_1 sep  attempt_2 sep ... attempt_k sep  target [eos]

an attempt being its solution tokens without its EOS and `sep` the separator's
tokens; at most `MAX_PREVIOUS_ATTEMPTS` attempts are kept (the oldest dropped first).
Pieces are tokenised one by one and concatenated, exactly as the search concatenates
generated tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein
from tqdm.auto import tqdm

from ttcjax import rundir
from ttcjax.models.tokenizer import Tokenizer, separator_tokens  # noqa: F401 (re-export)
from ttcjax.search.base import MAX_PREVIOUS_ATTEMPTS
from ttcjax.training import sft



@dataclasses.dataclass(frozen=True)
class RevisionExample:
  """One SFT example: a question, its previous (incorrect) attempts, a correct target.

  Attributes:
    uid: the question's uid.
    prompt: the question as the policy reads it.
    previous: the previous attempts' texts, oldest first (the last is the closest to
      the target by edit distance).
    target: the correct solution to learn.
  """

  uid: str
  prompt: str
  previous: tuple[str, ...]
  target: str


def revision_prompt_tokens(tokenizer: Tokenizer, prompt: str, previous: Sequence[str],
                           separator: Sequence[int]) -> list[int]:
  """[bos] prompt, then each of the last `MAX_PREVIOUS_ATTEMPTS` attempts followed by
  the separator's tokens: what the revision model continues with its next attempt."""
  ids = tokenizer.encode(prompt, add_bos=True)
  for attempt in list(previous)[-MAX_PREVIOUS_ATTEMPTS:]:
    ids += tokenizer.encode(attempt) + list(separator)
  return ids


def build_examples(records: Sequence[dict], rng: np.random.Generator,
                   max_previous: int = MAX_PREVIOUS_ATTEMPTS) -> list[RevisionExample]:
  """Revision examples from sampled questions (the rule of the module docstring).

  Args:
    records: `samples.jsonl` lines: {"uid", "prompt", "samples": [{"text",
      "correct"}, ...]}.
    rng: draws the counts, the other attempts and their order.
    max_previous: the largest k (at most `MAX_PREVIOUS_ATTEMPTS`).

  Returns:
    One example per correct sample, questions in the given order.
  """
  if not 0 <= max_previous <= MAX_PREVIOUS_ATTEMPTS:
    raise ValueError(f"max_previous must lie in [0, {MAX_PREVIOUS_ATTEMPTS}] (the context "
                     f"keeps at most that many attempts), got {max_previous}.")
  examples = []
  for number, record in enumerate(records):
    if not {"uid", "prompt", "samples"} <= set(record) or any(
        not {"text", "correct"} <= set(s) for s in record["samples"]):
      raise ValueError(
          f"Record {number} ({record.get('uid', '?')}) is not a revision sample record "
          "(it needs uid, prompt and samples with text and correct); point at the "
          "samples.jsonl of a `revision_samples` run.")
    right = [s["text"] for s in record["samples"] if s["correct"]]
    wrong = [s["text"] for s in record["samples"] if not s["correct"]]
    for target in right:
      count = min(int(rng.integers(0, max_previous + 1)), len(wrong))
      if count == 0:
        examples.append(RevisionExample(record["uid"], record["prompt"], (), target))
        continue
      distances = [Levenshtein.distance(target, w) for w in wrong]
      closest = int(np.argmin(distances))  # ties: the first sampled
      others = [i for i in range(len(wrong)) if i != closest]
      chosen = [int(i) for i in rng.permutation(others)[:count - 1]]
      previous = tuple(wrong[i] for i in chosen) + (wrong[closest],)
      examples.append(RevisionExample(record["uid"], record["prompt"], previous, target))
  return examples


def encode_revision_batch(tokenizer: Tokenizer, examples: Sequence[RevisionExample],
                          separator: Sequence[int], max_length: int,
                          pad_to_multiple: int | None = None) -> dict[str, np.ndarray]:
  """Revision examples as an SFT batch: loss on the target and its EOS only.

  Returns:
    The dict of `sft.encode_sft_batch` ([B, L] inputs, targets, loss_mask; [B] lengths).
  """
  sequences = []
  for e in examples:
    context = revision_prompt_tokens(tokenizer, e.prompt, e.previous, separator)
    sequences.append((len(context), context + tokenizer.encode(e.target) + [tokenizer.eos_id]))
  return sft.pad_sequences(sequences, tokenizer.pad_id, max_length, pad_to_multiple)


# --------------------------------------------------------------------- sampling


def sample_to_file(sample_fn: Callable[[Sequence, Sequence[int]], list[list[dict]]],
                   problems: Sequence, prompts: Sequence[str], path: str, *,
                   problems_per_batch: int, extra: Callable[[object], dict] | None = None
                   ) -> dict:
  """Samples every problem not yet in `path`, one JSON line per problem.

  Args:
    sample_fn: (problems, their indices) -> per problem, its samples as dicts with
      "text" and "correct" (and whatever else to store).
    problems: objects with a `uid`.
    prompts: their prompt texts.
    path: the JSON-lines output (resumed if it exists; a kill cuts at most the last
      line, which is dropped and redone).
    problems_per_batch: problems per `sample_fn` call (the last batch is padded with
      copies so that shapes, and the compile, stay fixed).
    extra: problem -> extra fields to store.

  Returns:
    {"problems": sampled this call, "wall_s"}.
  """
  rundir.drop_partial_line(path)
  done = {r["uid"] for r in rundir.read_json_lines(path, "sampled question")}
  todo = [i for i, p in enumerate(problems) if p.uid not in done]
  start = time.perf_counter()
  with open(path, "a") as f, tqdm(total=len(problems), initial=len(problems) - len(todo),
                                  desc="revision-samples", disable=None) as bar:
    for first in range(0, len(todo), problems_per_batch):
      chunk = todo[first:first + problems_per_batch]
      padded = chunk + [chunk[-1]] * (problems_per_batch - len(chunk))
      results = sample_fn([problems[i] for i in padded], padded)
      for i, samples in zip(chunk, results):
        record = {"uid": problems[i].uid, "prompt": prompts[i], "samples": samples}
        if extra is not None:
          record.update(extra(problems[i]))
        f.write(json.dumps(record) + "\n")
      f.flush()
      bar.update(len(chunk))
      if bar.disable:  # not a terminal: one line per batch instead of a bar
        finished = len(problems) - len(todo) + first + len(chunk)
        print(f"revision-samples {finished}/{len(problems)} problems, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
  return {"problems": len(todo), "wall_s": time.perf_counter() - start}


def read_samples(path: str) -> list[dict]:
  """The complete records of a `samples.jsonl` (ValueError naming a damaged line)."""
  if not os.path.exists(path):
    raise ValueError(f"No revision samples at {path}; run the `revision_samples` stage "
                     "first (configs/arith/revision_samples.py).")
  return rundir.read_json_lines(path, "sampled question")
