r"""Adapters for published PRMs: each family's token layout and where it reads scores.

A PRM's scores drift off the layout it was trained on. An adapter lays a solution out
in tokens as prompt(problem) + step_1 + suffix + ... + step_n + suffix and reads step
i's score at `read_offset` inside the suffix after it:

* Qwen2.5-Math-PRM: the checkpoint's chat template (system "Please reason step by
  step, ...", user = problem, assistant = steps); suffix [`<extra_0>`], read there by
  the 2-class value head.
* Math-Shepherd: "{problem} " then "step ки\n" per step; read at `ки`, P("+") vs P("-").
* RLHFlow Llama3.1-8B-PRM: the Llama 3 template, a user turn per step (the first
  "{problem} {step}"), every assistant reply "+"; suffix = end of turn + assistant
  header + "+" + end of turn + user header, read at the header's last token (whose
  logits predict the reply), P("+") vs P("-").
Suffixes stay in the PRM's KV cache: the training layouts have them in the history.

The policy's step delimiter ("\n\n") and a final EOS are stripped before the suffix:
the three families were trained on `text.split("\n\n")` pieces (Llama 3's template
also trims turns), never on "\n\n<extra_0>" or "\n\n<|eot_id|>". In tokens: trailing
whitespace-only and special tokens are dropped, and a last token like ".\n\n" becomes
"." when the vocabulary has that token.

Layouts are assembled from token pieces (in a search the PRM reads the policy's own
tokens), so they equal whole-text tokenization except where a piece boundary falls
inside a pre-token (the space between problem and first step of Shepherd / RLHFlow).

R denotes the rows of a batch, K the chunk length, E the suffix length, J the most
steps one chunk may end, V the tokenizer's vocabulary (the glossary of
`ttcjax.search.base`).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttcjax.models import chat_template
from ttcjax.models.hf_import import load_hf_prm, load_hf_tokenizer
from ttcjax.models.prm import PrmConfig, PrmFn, token_scores
from ttcjax.models.tokenizer import HFTokenizer, Tokenizer


QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
# Stand-ins rendered through a chat template and split on afterwards.
_MARKS = tuple(f"\u27e6ttcjax-mark-{i}\u27e7" for i in range(4))
_TEMPLATE_TOKEN = re.compile(r"<\|[^|<>\s]+\|>")  # <|eot_id|>, <|im_start|>, ...
_score_jit = jax.jit(token_scores, static_argnames=("config",))
# Text a policy and a PRM must tokenize alike to share token ids (`check_tokenizer`).
_TOKENIZER_PROBES = ("Step 1: 3 \\cdot 4 = 12.\n\n",
                     "So $x^2 + 2x - 1 = 0$; the answer is \\boxed{\\frac{1}{2}}.", " + - ")


def _between(text: str, start: str | None, end: str) -> str:
  """The text after `start` (or from the beginning) and before `end`, each found once."""
  for mark in (start, end):
    if mark is not None and text.count(mark) != 1:
      raise ValueError("The PRM's chat template does not render message contents verbatim "
                       "(once each); ttcjax cannot locate the steps in its layout.")
  begin = 0 if start is None else text.index(start) + len(start)
  return text[begin:text.index(end)]


def _continuation_ids(tokenizer: HFTokenizer, text: str) -> list[int]:
  """Ids of `text` as it tokenizes after other text (what a policy emits mid-sequence).

  SentencePiece-style tokenizers mark a word start on text encoded alone (" ки" would
  become "▁▁ки"); encoding behind a newline and dropping the newline's ids avoids it.
  """
  probe = tokenizer.encode("a")
  if not text or tokenizer.decode(probe + probe) == "aa":  # no word-start marker added
    return tokenizer.encode(text)
  anchor = tokenizer.encode("\n")
  ids = tokenizer.encode("\n" + text)
  return ids[len(anchor):] if ids[:len(anchor)] == anchor else tokenizer.encode(text)


def _one_token(tokenizer: HFTokenizer, text: str, what: str, family: str, path: str) -> int:
  """The id of `text`, which must be one token (a template's <|...|> markers, tags)."""
  ids = tokenizer.encode(text)
  if len(ids) != 1:
    raise ValueError(
        f"The tokenizer in {path} has no single token for the {what} {text!r} (it encodes "
        f"as {len(ids)} tokens {ids}); a {family} PRM reads its score through that token. "
        "Use the tokenizer files shipped with the PRM checkpoint.")
  return ids[0]


def _strip_tables(tokenizer: HFTokenizer, special_ids: set[int]) -> tuple[np.ndarray, np.ndarray]:
  """([V] bool: droppable at a step's end, [V] int32: the token minus trailing whitespace).

  Droppable: whitespace-only tokens and special tokens (EOS, pad). A token ending in
  whitespace (".\\n\\n") maps to the token of its stripped text when that is one token,
  else to itself (the whitespace then stays).
  """
  size = tokenizer.vocab_size
  drop, rstrip = np.zeros((size,), bool), np.arange(size, dtype=np.int32)
  special_ids = special_ids | {tokenizer.eos_id, tokenizer.pad_id}
  for token in range(size):
    text = tokenizer.token_text(token)
    if token in special_ids or not text.strip():
      drop[token] = True
    elif text != text.rstrip():
      ids = _continuation_ids(tokenizer, text.rstrip())
      if len(ids) == 1:
        rstrip[token] = ids[0]
  return drop, rstrip


def _tokenizer_fields(path: str, template_override: str | None, family: str,
                      needs_template: bool) -> dict:
  """The `PrmAdapter` fields every family reads from the tokenizer files in `path`."""
  tokenizer = load_hf_tokenizer(path)

  template, special = chat_template.read_checkpoint_template(path)
  template = template_override or template
  if needs_template and not template:
    raise ValueError(
        f"{path} has no chat template (tokenizer_config.json 'chat_template' or "
        f"chat_template.jinja), which the {family} layout is rendered from; copy the "
        "tokenizer files of the published checkpoint, or pass chat_template=...")
  with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
    added = json.load(f).get("added_tokens", [])
  drop, rstrip = _strip_tables(tokenizer, {int(t["id"]) for t in added if t.get("special")})
  return dict(path=path, tokenizer=tokenizer, chat_template=template, special_tokens=special,
              drop_table=drop, rstrip_table=rstrip)


def _pad_rows(rows: Sequence[Sequence[int]], num_rows: int, width: int, fill: int):
  """[num_rows, width] int32 right-padded rows and [num_rows] lengths (filler rows: 1)."""
  if max(map(len, rows)) > width:
    raise ValueError(f"A PRM sequence of {max(map(len, rows))} tokens does not fit width {width}.")
  tokens, lengths = np.full((num_rows, width), fill, np.int32), np.ones((num_rows,), np.int32)
  for row, ids in enumerate(rows):
    tokens[row, :len(ids)], lengths[row] = ids, len(ids)
  return tokens, lengths


@dataclasses.dataclass(frozen=True)
class PrmAdapter(abc.ABC):
  """One PRM family's layout (abstract: each family defines `prompt_text`). Build with a subclass's `from_dir` or `load_prm_adapter`.

  Attributes:
    path: the checkpoint directory the tokenizer came from.
    tokenizer: the PRM's tokenizer.
    suffix_ids: the E tokens after every step.
    read_offset: index into `suffix_ids` of the position whose score rates the step.
    head: the `PrmConfig.kind` the family's scores come from.
    positive_token_id, negative_token_id: "+" / "-" of token-logit families.
    add_bos: prepend the tokenizer's BOS to the prompt (layouts without a template).
    chat_template: the checkpoint's chat template (families that use one).
    special_tokens: bos_token, eos_token, ... of tokenizer_config.json.
    drop_table, rstrip_table: [V] bool, [V] int32: tokens dropped from a step's end, and
      a step's last token without trailing whitespace (see `_strip_tables`).
  """

  path: str
  tokenizer: HFTokenizer = dataclasses.field(compare=False, repr=False)
  suffix_ids: tuple[int, ...] = ()
  read_offset: int = 0
  head: str = "value"
  positive_token_id: int | None = None
  negative_token_id: int | None = None
  add_bos: bool = False
  chat_template: str | None = dataclasses.field(default=None, repr=False)
  special_tokens: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
  drop_table: np.ndarray = dataclasses.field(default=None, compare=False, repr=False)
  rstrip_table: np.ndarray = dataclasses.field(default=None, compare=False, repr=False)

  family = "generic"

  @abc.abstractmethod
  def prompt_text(self, problem: str) -> str:
    """The PRM's text before the first step."""

  def _render(self, messages: list[dict], until: str | None = None) -> str:
    """The chat template's text of `messages` (up to the mark `until`)."""
    text = chat_template.render(self.chat_template, messages, **self.special_tokens)
    for name in _TEMPLATE_TOKEN.findall(text):  # not spelled out in bytes
      _one_token(self.tokenizer, name, "chat-template token", self.family, self.path)
    return text if until is None else _between(text, None, until)

  def prompt_ids(self, problem: str) -> list[int]:
    """The PRM's prompt tokens (not the policy's prompt)."""
    ids = self.tokenizer.encode(self.prompt_text(problem))
    bos = self.tokenizer.bos_id
    return [bos] + ids if self.add_bos and bos is not None else ids

  def prompt_batch(self, problems: Sequence[str], width: int | None = None):
    """Right-padded PRM prompts: ([B, P] int32 tokens, [B] int32 lengths)."""
    encoded = [self.prompt_ids(p) for p in problems]
    return _pad_rows(encoded, len(encoded), width or max(map(len, encoded)),
                     self.tokenizer.pad_id)

  def step_ids(self, step: str) -> list[int]:
    """A step's tokens as a policy sharing this tokenizer emits them (delimiter kept)."""
    return _continuation_ids(self.tokenizer, step)

  def strip_step(self, ids: Sequence[int]) -> list[int]:
    """Drops a step's trailing delimiter / EOS tokens (the host twin of `wrap_prm_fn`'s)."""
    size, keep = len(self.drop_table), len(ids)
    while keep and ids[keep - 1] < size and self.drop_table[ids[keep - 1]]:
      keep -= 1
    out = [int(t) for t in ids[:keep]]
    if out and out[-1] < size:
      out[-1] = int(self.rstrip_table[out[-1]])
    return out

  def layout(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """(token ids, S positions where the step scores are read) of a whole solution;
    `steps` are S texts as the policy wrote them (delimiters / EOS may be kept)."""
    ids, reads = self.prompt_ids(problem), []
    for step in steps:
      ids += self.strip_step(self.step_ids(step))
      reads.append(len(ids) + self.read_offset)
      ids += self.suffix_ids
    return ids, reads

  def check_prm_config(self, config: PrmConfig) -> None:
    """Raises ValueError unless `config` reads scores the way this family does."""
    want = (self.head, 2) if self.head == "value" else (
        self.head, self.positive_token_id, self.negative_token_id)
    got = (config.kind, config.num_labels) if config.kind == "value" else (
        config.kind, config.positive_token_id, config.negative_token_id)
    if got != want:
      raise ValueError(f"A {self.family} PRM reads (head, labels or '+'/'-' ids) {want}, this "
                       f"config {got}; load it with load_adapted_prm.")
    if max(self.suffix_ids) >= config.backbone.vocab_size:
      raise ValueError(f"The suffix tokens {self.suffix_ids} exceed the PRM's vocabulary "
                       f"({config.backbone.vocab_size}); tokenizer and checkpoint disagree.")

  def check_tokenizer(self, tokenizer: Tokenizer) -> None:
    """Raises ValueError unless `tokenizer` (a policy's) encodes text as this PRM's does.

    A search inside jit hands the policy's token ids to the PRM as they are, so the
    two must share one tokenizer. Checked on the vocabulary size and a few strings
    of the kind math solutions hold.
    """
    mismatch = None
    if tokenizer.vocab_size != self.tokenizer.vocab_size:
      mismatch = f"vocabularies of {tokenizer.vocab_size} and {self.tokenizer.vocab_size} tokens"
    for text in _TOKENIZER_PROBES:
      if mismatch:
        break
      try:
        theirs = tokenizer.encode(text)
      except ValueError:  # a character tokenizer without these characters
        theirs = None
      if theirs != self.tokenizer.encode(text):
        mismatch = (f"{text!r} encodes as {theirs} for the policy, "
                    f"{self.tokenizer.encode(text)} here")
    if mismatch:
      raise ValueError(
          f"The policy's tokenizer is not the {self.family} PRM's ({self.path}): {mismatch}. "
          "A search feeds the policy's token ids to the PRM inside jit, so they must share "
          "a tokenizer. Sample without this PRM (e.g. best_of_n with no adapter) and score "
          "the candidates' steps on the host with adapter.score_solutions "
          "(SearchRunner.candidate_steps gives the step texts).")

  def score_solutions(self, params, prm_config: PrmConfig, problem_texts: Sequence[str],
                      steps_lists: Sequence[Sequence[str]],
                      batch_size: int = 8) -> list[list[float]]:
    """Scores every step of whole solutions, one PRM forward pass per batch.

    Args:
      params, prm_config: the PRM (e.g. from `load_adapted_prm`).
      problem_texts: B problems.
      steps_lists: B lists of step texts (delimiters and a final EOS may be kept).
      batch_size: rows per pass (the last batch is padded; lengths to a multiple of 64).

    Returns:
      B lists with one score in [0, 1] per step.
    """
    self.check_prm_config(prm_config)
    layouts = [self.layout(p, s) for p, s in zip(problem_texts, steps_lists, strict=True)]
    width = -(-max([len(ids) for ids, _ in layouts], default=1) // 64) * 64  # few compiles
    out = []
    for start in range(0, len(layouts), batch_size):
      chunk = layouts[start:start + batch_size]
      tokens, lengths = _pad_rows([ids for ids, _ in chunk], batch_size, width, 0)
      scores = np.asarray(_score_jit(params, prm_config, jnp.asarray(tokens),
                                     num_new=jnp.asarray(lengths))[0])
      out += [[float(scores[row, r]) for r in reads] for row, (_, reads) in enumerate(chunk)]
    return out

  def wrap_prm_fn(self, inner: PrmFn, max_steps_per_chunk: int = 1) -> PrmFn:
    """A `PrmFn` that feeds `inner` this family's layout, one chunk at a time.

    It takes (params, tokens [R, K], cache, num_new [R], step_end=None). Each step
    ending in the chunk loses its trailing delimiter/EOS tokens and gets `suffix_ids`
    after it; `inner` runs on the [R, K + J * E] result and its cache keeps the
    suffixes (allow E extra slots per step). Without `step_end` a row's chunk is one
    step ending at num_new - 1 (a beam round); with it ([R, K] bool, as `sample_steps`
    marks step ends) a chunk holds up to J steps (best-of-N). Tokens after a chunk's
    last step end (an unfinished step) get no suffix.

    Args:
      inner: the PRM's own `PrmFn` (e.g. `transformer_prm_fn(prm_config)`).
      max_steps_per_chunk: J, static; a row's step ends beyond the J-th get no suffix
        and score NaN, so that an undersized J cannot go unnoticed.

    Returns:
      A `PrmFn` whose scores [R, K] hold at each step's last token the score read at
      `read_offset` of that step's suffix, and 0 at other positions.
    """
    if max_steps_per_chunk < 1:
      raise ValueError(f"max_steps_per_chunk must be positive, got {max_steps_per_chunk}.")
    suffix = jnp.asarray(self.suffix_ids, jnp.int32)
    drop_table, rstrip_table = jnp.asarray(self.drop_table), jnp.asarray(self.rstrip_table)
    vocab, length, most = drop_table.shape[0], suffix.shape[0], max_steps_per_chunk

    def score(params, tokens, cache, num_new, step_end=None):
      rows, width = tokens.shape
      out_width = width + most * length
      position = jnp.arange(width, dtype=jnp.int32)[None, :]
      valid = position < num_new[:, None]
      if step_end is None:
        step_end = position == num_new[:, None] - 1
      step_end = step_end & valid
      step_index = jnp.cumsum(step_end, axis=1, dtype=jnp.int32) - step_end  # [R, K]
      # Where each token's step ends (width: the step is unfinished).
      step_last = jax.lax.cummin(jnp.where(step_end, position, width), axis=1, reverse=True)
      closed = (step_last < width) & (step_index < most)  # stripped and given a suffix
      known = tokens < vocab  # the model's vocabulary may exceed the tokenizer's
      safe = jnp.clip(tokens, 0, vocab - 1)
      droppable = drop_table[safe] & known & valid
      # A droppable token is trailing when no other token follows it in its step.
      solid_from = jnp.cumsum((valid & ~droppable)[:, ::-1], axis=1)[:, ::-1]  # [R, K]
      solid_from = jnp.pad(solid_from, ((0, 0), (0, 1)))  # [R, K + 1]
      solid_after = jnp.take_along_axis(solid_from, jnp.minimum(step_last + 1, width), axis=1)
      kept = valid & ~(droppable & closed & (solid_from[:, :width] == solid_after))
      next_kept = jnp.pad(kept[:, 1:], ((0, 0), (0, 1)))
      last_kept = kept & closed & (step_end | ~next_kept)
      tokens = jnp.where(last_kept & known, rstrip_table[safe], tokens)

      # Kept tokens move right by E per suffix before them; step j's suffix follows
      # the kept tokens of steps 0..j.
      kept_before = jnp.cumsum(kept, axis=1, dtype=jnp.int32) - kept
      new_position = kept_before + length * jnp.minimum(step_index, most)
      ends = step_end & closed
      suffix_start = kept_before + kept + length * step_index  # meaningful where `ends`
      row_index = jnp.arange(rows)[:, None]
      chunk = jnp.zeros((rows, out_width), jnp.int32)
      chunk = chunk.at[row_index, jnp.where(kept, new_position, out_width)].set(tokens, mode="drop")
      slots = jnp.where(ends[..., None], suffix_start[..., None] + jnp.arange(length), out_width)
      chunk = chunk.at[row_index[..., None], slots].set(
          jnp.broadcast_to(suffix, slots.shape), mode="drop")
      inner_new = kept.sum(axis=1, dtype=jnp.int32) + length * ends.sum(axis=1, dtype=jnp.int32)

      scores, cache = inner(params, chunk, cache, inner_new)
      read = jnp.clip(suffix_start + self.read_offset, 0, out_width - 1)
      picked = jnp.take_along_axis(scores.astype(jnp.float32), read, axis=1)
      # Step ends past the J-th got no suffix: NaN.
      return jnp.where(ends, picked, jnp.where(step_end, jnp.nan, 0.0)), cache

    return score


@dataclasses.dataclass(frozen=True)
class QwenMathPrmAdapter(PrmAdapter):
  """Qwen2.5-Math-PRM: chat template, steps in the assistant turn, `<extra_0>` after each.

  Attributes:
    system_prompt: the system turn (the model card's).
  """

  system_prompt: str = QWEN_SYSTEM_PROMPT

  family = "Qwen2.5-Math-PRM"

  @classmethod
  def from_dir(cls, path: str, chat_template: str | None = None,
               system_prompt: str = QWEN_SYSTEM_PROMPT) -> "QwenMathPrmAdapter":
    fields = _tokenizer_fields(path, chat_template, cls.family, needs_template=True)
    separator = _one_token(fields["tokenizer"], "<extra_0>", "step separator", cls.family, path)
    adapter = cls(suffix_ids=(separator,), read_offset=0, head="value",
                  system_prompt=system_prompt, **fields)
    adapter.prompt_text("x")  # checks the template's tokens
    return adapter

  def prompt_text(self, problem: str) -> str:
    return self._render([{"role": "system", "content": self.system_prompt},
                         {"role": "user", "content": problem},
                         {"role": "assistant", "content": _MARKS[0]}], until=_MARKS[0])


@dataclasses.dataclass(frozen=True)
class MathShepherdAdapter(PrmAdapter):
  """Math-Shepherd: "{problem} " then "step ки\\n" per step, "+"/"-" read at `ки`.

  Attributes:
    prompt_format: the text before the first step, with a {problem} field (the model
      card's f"{question} {output}"). A SentencePiece policy whose first step token
      already carries the word start "▁" wants "{problem}" here.
  """

  prompt_format: str = "{problem} "

  family = "Math-Shepherd"
  TAG = "ки"

  @classmethod
  def from_dir(cls, path: str, prompt_format: str = "{problem} ",
               step_separator: str = "\n") -> "MathShepherdAdapter":
    """`step_separator` follows each tag (the model card puts a step per line)."""
    fields = _tokenizer_fields(path, None, cls.family, needs_template=False)
    tokenizer = fields["tokenizer"]
    suffix = _continuation_ids(tokenizer, f" {cls.TAG}{step_separator}")
    # The tag is the token whose text is "ки" (in Mistral's vocabulary "▁ки").
    tags = [i for i, t in enumerate(suffix) if tokenizer.token_text(t).strip() == cls.TAG]
    labels = [_continuation_ids(tokenizer, f" {x}")[-1:] for x in "+-"]  # "▁+" for Mistral
    for what, ids, want in (("step tag", tags[-1:], None), ("label", labels[0], "+"),
                            ("label", labels[1], "-")):
      if not ids or (want and tokenizer.token_text(ids[0]).strip() != want):
        raise ValueError(
            f"The tokenizer in {path} has no single token for the {what} {want or cls.TAG!r}"
            "; a Math-Shepherd PRM reads each step's score through it. Use the tokenizer "
            "files shipped with the PRM checkpoint.")
    return cls(suffix_ids=tuple(suffix), read_offset=tags[-1], head="token_logit",
               positive_token_id=labels[0][0], negative_token_id=labels[1][0], add_bos=True,
               prompt_format=prompt_format, **fields)

  def prompt_text(self, problem: str) -> str:
    return self.prompt_format.format(problem=problem)


@dataclasses.dataclass(frozen=True)
class RlhflowPrmAdapter(PrmAdapter):
  """RLHFlow Llama3.1-8B-PRM: each step a user turn, the assistant replies "+".

  Attributes:
    problem_separator: between the problem and the first step in the first turn.
  """

  problem_separator: str = " "

  family = "RLHFlow Llama3.1-8B-PRM"

  @classmethod
  def from_dir(cls, path: str, chat_template: str | None = None) -> "RlhflowPrmAdapter":
    fields = _tokenizer_fields(path, chat_template, cls.family, needs_template=True)
    tokenizer = fields["tokenizer"]
    plus = _one_token(tokenizer, "+", "positive label", cls.family, path)
    minus = _one_token(tokenizer, "-", "negative label", cls.family, path)
    # Two exchanges with stand-in contents; the text between them makes the suffix.
    user_a, reply, user_b = _MARKS[1:]
    adapter = cls(head="token_logit", positive_token_id=plus, negative_token_id=minus,
                  **fields)
    text = adapter._render([{"role": "user", "content": user_a},
                            {"role": "assistant", "content": reply},
                            {"role": "user", "content": user_b},
                            {"role": "assistant", "content": "+"}])
    head_text, tail_text = _between(text, user_a, reply), _between(text, reply, user_b)
    head, tail = tokenizer.encode(head_text), tokenizer.encode(tail_text)
    if not head:
      raise ValueError(f"The chat template in {path} puts nothing between a user turn and "
                       "the assistant's reply; there is no position to read the score at.")
    # Read at the header's last token: its logits predict the reply, "+" or "-".
    return dataclasses.replace(adapter, suffix_ids=tuple(head + [plus] + tail),
                               read_offset=len(head) - 1)

  def prompt_text(self, problem: str) -> str:
    first_turn = problem + self.problem_separator + _MARKS[0]
    return self._render([{"role": "user", "content": first_turn},
                         {"role": "assistant", "content": "+"}], until=_MARKS[0])


ADAPTERS = {"qwen_math_prm": QwenMathPrmAdapter, "math_shepherd": MathShepherdAdapter,
            "rlhflow": RlhflowPrmAdapter}


def load_prm_adapter(path: str, family: str, **options) -> PrmAdapter:
  """The adapter of `family` ("qwen_math_prm", "math_shepherd", "rlhflow") for the
  tokenizer in checkpoint directory `path`; options go to the family's `from_dir`."""
  if family not in ADAPTERS:
    raise ValueError(f"Unknown PRM family {family!r}; known: {sorted(ADAPTERS)}.")
  return ADAPTERS[family].from_dir(path, **options)


def load_adapted_prm(path: str, family: str, dtype=None,
                     **options) -> tuple[PrmAdapter, PrmConfig, dict]:
  """(adapter, prm_config, params) of a published PRM, its head matching the family's."""
  adapter = load_prm_adapter(path, family, **options)
  labels = {} if adapter.head == "value" else dict(
      positive_token_id=adapter.positive_token_id, negative_token_id=adapter.negative_token_id)
  config, params = load_hf_prm(path, dtype=dtype, **labels)
  adapter.check_prm_config(config)
  return adapter, config, params
