"""Tokenizers behind one small interface.

`CharTokenizer` maps each character of a fixed alphabet to one id (the synthetic
testbed); `HFTokenizer` wraps a Hugging Face `tokenizer.json` through the
`tokenizers` library (real checkpoints). The sampler needs only `token_text`, the
text one token contributes, to precompute which tokens end a reasoning step.
"""

from __future__ import annotations

import json
import os
from typing import Protocol, Sequence, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
  """What ttcjax needs from a tokenizer."""

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int

  def encode(self, text: str, add_bos: bool = False) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def token_text(self, token_id: int) -> str: ...


class CharTokenizer:
  """One id per character; ids 0, 1, 2 are <pad>, <bos>, <eos>.

  Args:
    alphabet: the characters the tokenizer knows, in id order (no duplicates).
  """

  PAD, BOS, EOS = 0, 1, 2
  _SPECIALS = ("<pad>", "<bos>", "<eos>")

  def __init__(self, alphabet: str):
    if len(set(alphabet)) != len(alphabet):
      raise ValueError("CharTokenizer alphabet has repeated characters.")
    if not alphabet:
      raise ValueError("CharTokenizer needs a non-empty alphabet.")
    self.alphabet = alphabet
    self._ids = {ch: i + len(self._SPECIALS) for i, ch in enumerate(alphabet)}
    self.vocab_size = len(alphabet) + len(self._SPECIALS)
    self.pad_id, self.bos_id, self.eos_id = self.PAD, self.BOS, self.EOS

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    try:
      ids = [self._ids[ch] for ch in text]
    except KeyError as err:
      raise ValueError(
          f"Character {err.args[0]!r} is not in this CharTokenizer's alphabet "
          f"{self.alphabet!r}.") from None
    return [self.bos_id] + ids if add_bos else ids

  def decode(self, ids: Sequence[int]) -> str:
    """Text of the ids; special tokens are dropped, decoding stops at <eos>."""
    out = []
    for token in ids:
      token = int(token)
      if token == self.eos_id:
        break
      if token >= len(self._SPECIALS):
        out.append(self.alphabet[token - len(self._SPECIALS)])
    return "".join(out)

  def token_text(self, token_id: int) -> str:
    if token_id < len(self._SPECIALS):
      return ""
    return self.alphabet[token_id - len(self._SPECIALS)]

  def to_dict(self) -> dict:
    return {"type": "char", "alphabet": self.alphabet}


def _special_token_name(value) -> str | None:
  if isinstance(value, dict):
    return value.get("content")
  return value


class HFTokenizer:
  """A Hugging Face fast tokenizer loaded from a local `tokenizer.json`.

  Special tokens (bos/eos/pad) come from `tokenizer_config.json` beside it when
  present; `eos_token` may be overridden (chat models end turns with their own token).
  """

  def __init__(self, tokenizer, bos_token: str | None, eos_token: str | None,
               pad_token: str | None = None, chat_template: str | None = None):
    self._tok = tokenizer
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    self.chat_template = chat_template

    def token_id(name, what):
      if name is None:
        return None
      token = tokenizer.token_to_id(name)
      if token is None:
        raise ValueError(f"The tokenizer has no {what} token {name!r}.")
      return token

    self.bos_id = token_id(bos_token, "bos")
    self.eos_id = token_id(eos_token, "eos")
    if self.eos_id is None:
      raise ValueError("The tokenizer defines no eos token; pass eos_token=... explicitly.")
    pad = token_id(pad_token, "pad")
    self.pad_id = pad if pad is not None else self.eos_id

  @classmethod
  def from_dir(cls, path: str, eos_token: str | None = None) -> "HFTokenizer":
    """Loads `tokenizer.json` (and `tokenizer_config.json`) from a checkpoint dir."""
    from tokenizers import Tokenizer as _Tokenizer  # pylint: disable=import-outside-toplevel

    file = os.path.join(path, "tokenizer.json")
    if not os.path.exists(file):
      raise ValueError(f"No tokenizer.json in {path}; ttcjax loads fast tokenizers only.")
    tokenizer = _Tokenizer.from_file(file)
    config = {}
    config_file = os.path.join(path, "tokenizer_config.json")
    if os.path.exists(config_file):
      with open(config_file) as f:
        config = json.load(f)
    return cls(tokenizer,
               bos_token=_special_token_name(config.get("bos_token")),
               eos_token=eos_token or _special_token_name(config.get("eos_token")),
               pad_token=_special_token_name(config.get("pad_token")),
               chat_template=config.get("chat_template"))

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return [self.bos_id] + ids if add_bos and self.bos_id is not None else ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def token_text(self, token_id: int) -> str:
    return self._tok.decode([int(token_id)], skip_special_tokens=False)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)


def pad_batch(tokenizer: Tokenizer, texts, add_bos: bool = True, width: int | None = None):
  """Tokenises texts into a right-padded [B, T] int32 array and [B] lengths.

  Args:
    tokenizer: any `Tokenizer`.
    texts: B strings.
    add_bos: prepend the tokenizer's BOS (when it has one).
    width: T; default the longest sequence. Longer sequences raise ValueError.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  encoded = [tokenizer.encode(text, add_bos=add_bos) for text in texts]
  if not encoded:
    raise ValueError("pad_batch needs at least one text.")
  longest = max(len(ids) for ids in encoded)
  width = width or longest
  if longest > width:
    raise ValueError(f"A text of {longest} tokens does not fit width {width}.")
  tokens = np.full((len(encoded), width), tokenizer.pad_id, np.int32)
  for i, ids in enumerate(encoded):
    tokens[i, :len(ids)] = ids
  return tokens, np.array([len(ids) for ids in encoded], np.int32)


def separator_tokens(tokenizer: Tokenizer, separator: str) -> list[int]:
  """The separator's token ids; ValueError when the tokenizer cannot express it.

  Args:
    tokenizer: the revision model's tokenizer.
    separator: the text between attempts (non-empty).
  """
  if not separator:
    raise ValueError("The attempt separator is empty; set one the tokenizer can express "
                     "(the testbed uses three newlines).")
  try:
    ids = tokenizer.encode(separator)
  except ValueError as err:
    raise ValueError(f"The revision model's tokenizer cannot express the attempt separator "
                     f"{separator!r}: {err} Choose a separator made of its tokens.") from None
  if not ids or tokenizer.decode(ids) != separator:
    raise ValueError(f"The attempt separator {separator!r} does not round-trip through the "
                     f"revision model's tokenizer (it decodes to {tokenizer.decode(ids)!r}); "
                     "choose one it encodes exactly.")
  return ids
