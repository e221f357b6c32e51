"""Renders a checkpoint's chat template (the Jinja text in tokenizer_config.json).

The environment is the one transformers' `apply_chat_template` uses (trim_blocks,
lstrip_blocks, loop controls, `tojson`, `raise_exception`, `strftime_now`), so the
text equals what transformers would produce without importing it.
"""

from __future__ import annotations

import datetime
import functools
import json
import os


@functools.lru_cache(maxsize=16)
def compile_template(template: str):
  """The compiled Jinja template (cached: a run renders one template many times)."""
  try:
    import jinja2  # pylint: disable=import-outside-toplevel
    from jinja2 import sandbox  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("Rendering a chat template needs jinja2: pip install jinja2.") from None

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  env = sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False,
                                                                 indent=indent)
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)


def render(template: str, messages: list[dict], add_generation_prompt: bool = False,
           **special_tokens) -> str:
  """The template's text of `messages` ([{"role", "content"}, ...]); `special_tokens`
  (bos_token, eos_token, ...) are the template's variables of those names."""
  return compile_template(template).render(
      messages=messages, add_generation_prompt=add_generation_prompt, **special_tokens)


def read_checkpoint_template(path: str) -> tuple[str | None, dict[str, str]]:
  """(the chat template, {"bos_token": ..., "eos_token": ...}) of the tokenizer files in
  checkpoint directory `path`; the template is None when there is none.

  The template is `tokenizer_config.json`'s "chat_template" (its "default" entry when
  it holds named templates) or, as transformers >= 4.50 saves it, `chat_template.jinja`.
  """

  def read(name, parse, default):
    if not os.path.isfile(os.path.join(path, name)):
      return default
    with open(os.path.join(path, name), encoding="utf-8") as f:
      return parse(f)

  config = read("tokenizer_config.json", json.load, {})
  template = config.get("chat_template")
  if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
    template = {t.get("name"): t.get("template") for t in template}.get("default")
  template = read("chat_template.jinja", lambda f: f.read(), template)
  special = {k: v.get("content") if isinstance(v, dict) else v for k, v in config.items()
             if k.endswith("_token")}  # bos_token, eos_token, ... as the template sees them
  return template or None, {k: v for k, v in special.items() if isinstance(v, str)}
