r"""Policy prompts for MATH-style problems: chat template or plain text, few-shot.

`PromptBuilder.from_dir(policy_dir, ...)` reads the policy checkpoint's own chat
template (tokenizer_config.json or chat_template.jinja) and lays a problem out as a
system turn (the instruction), optional worked examples as user/assistant turns, and
the problem as the last user turn, ending with the generation prompt. Without a
template (a base model, or `use_chat_template=False`) the plain layout is

    {instruction}

    Problem: {example problem}

    Solution:
    {example solution}

    ...

    Problem: {problem}

    Solution:
    (the policy continues here)

The default instruction asks for the layout the search relies on: steps separated by
a blank line ("\n\n", the default step delimiter) and the final answer in \boxed{}.
The four built-in worked examples are written in that layout; Snell et al. prompted
with 4-shot examples from MATH's training split, which a user can pass instead as a
JSON-lines file in MATH's format (`few_shot_path`: the first k solutions).

The template's `bos_token` renders as "" because the runner prepends the BOS id itself
(Llama 3's template writes it as text, which would double it). `date_string` is fixed
(`TEMPLATE_DATE`, the Llama 3.1 template's own fallback): Llama 3.2's template would
otherwise put today's date in the system turn, and a run resumed on another day would
search other prompts.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ttcjax.models import chat_template
from ttcjax.tasks.math import data as math_data

TEMPLATE_DATE = "26 Jul 2024"
# The user turn between two attempts of a revision chain (chat layout), and the line
# that opens the next attempt (plain layout).
REVISION_REQUEST = ("That solution may contain a mistake. Solve the problem again, step by "
                    "step, and put the final answer in \\boxed{}.")
PLAIN_REVISION_HEADER = "Revised solution:"
DEFAULT_INSTRUCTION = (
    "Solve the following math problem step by step. Write each step as a short paragraph "
    "and separate the steps with a blank line. Put the final answer in \\boxed{}.")

# Worked examples in the step layout above (written for ttcjax).
FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the value of $3^2 + 4^2$?",
     "We compute each square: $3^2 = 9$ and $4^2 = 16$.\n\n"
     "Adding them gives $9 + 16 = 25$.\n\n"
     "The answer is $\\boxed{25}$."),
    ("Solve for $x$: $2x + 7 = 19$.",
     "Subtract 7 from both sides: $2x = 12$.\n\n"
     "Divide both sides by 2: $x = 6$.\n\n"
     "The answer is $\\boxed{6}$."),
    ("A bag holds 3 red and 5 blue marbles. One marble is drawn at random. What is the "
     "probability that it is red?",
     "There are $3 + 5 = 8$ marbles in total.\n\n"
     "Three of them are red, so the probability is $\\frac{3}{8}$.\n\n"
     "The answer is $\\boxed{\\frac{3}{8}}$."),
    ("What is the greatest common divisor of 84 and 126?",
     "Factor both numbers: $84 = 2^2 \\cdot 3 \\cdot 7$ and $126 = 2 \\cdot 3^2 \\cdot 7$.\n\n"
     "The common prime factors with their smallest powers are $2 \\cdot 3 \\cdot 7 = 42$.\n\n"
     "The answer is $\\boxed{42}$."),
)


def few_shot_examples(k: int, path: str | None = None) -> list[tuple[str, str]]:
  """The first k (problem, solution) examples: built in, or from a MATH-format file.

  Raises:
    ValueError: k is negative or more than the examples available.
  """
  if k < 0:
    raise ValueError(f"few_shot={k}: expected a count of examples, 0 or more.")
  if k == 0:
    return []
  if path is None:
    examples = list(FEW_SHOT_EXAMPLES)
  else:
    examples = [(p.problem, p.solution) for p in math_data.load_math(path, limit=k)]
  if len(examples) < k:
    raise ValueError(f"few_shot={k} but only {len(examples)} examples are available "
                     f"({path or 'built in'}); lower few_shot or pass a longer few_shot_path.")
  return examples[:k]


@dataclasses.dataclass(frozen=True)
class PromptBuilder:
  """Turns problem texts into policy prompts.

  Attributes:
    instruction: the system turn (chat) or the first paragraph (plain).
    examples: worked (problem, solution) pairs shown before the problem.
    template: the chat template; None: the plain layout.
    special_tokens: the template's variables (eos_token, ..., date_string).
  """

  instruction: str = DEFAULT_INSTRUCTION
  examples: tuple[tuple[str, str], ...] = ()
  template: str | None = dataclasses.field(default=None, repr=False)
  special_tokens: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def from_dir(cls, policy_dir: str, instruction: str | None = None, few_shot: int = 0,
               few_shot_path: str | None = None,
               use_chat_template: bool = True) -> "PromptBuilder":
    """The builder for the policy checkpoint in `policy_dir` (its template if it has one
    and `use_chat_template`; `instruction` None: `DEFAULT_INSTRUCTION`)."""
    template, special = chat_template.read_checkpoint_template(policy_dir)
    return cls(instruction=DEFAULT_INSTRUCTION if instruction is None else instruction,
               examples=tuple(few_shot_examples(few_shot, few_shot_path)),
               template=template if use_chat_template else None,
               special_tokens={**special, "bos_token": "", "date_string": TEMPLATE_DATE})

  def messages(self, problem: str) -> list[dict]:
    """The chat turns of `problem`'s prompt."""
    turns = [{"role": "system", "content": self.instruction}] if self.instruction else []
    for question, solution in self.examples:
      turns += [{"role": "user", "content": question},
                {"role": "assistant", "content": solution}]
    return turns + [{"role": "user", "content": problem}]

  def __call__(self, problem: str) -> str:
    """The prompt text of `problem` (the policy continues it with the first step)."""
    if self.template is not None:
      return chat_template.render(self.template, self.messages(problem),
                                  add_generation_prompt=True, **self.special_tokens)
    parts = [self.instruction] if self.instruction else []
    parts += [f"Problem: {q}\n\nSolution:\n{s}" for q, s in self.examples]
    return "\n\n".join(parts + [f"Problem: {problem}\n\nSolution:\n"])

  def prompts(self, problems: Sequence[str]) -> list[str]:
    return [self(p) for p in problems]

  def attempt_separator(self) -> str:
    """The text between one attempt and the next in a revision model's context.

    Chat layout: previous attempts are earlier assistant turns, each answered by the
    fixed user turn `REVISION_REQUEST`, so the separator is what the template writes
    from the end of an assistant turn's content to the start of the next one's (its
    first token is the end-of-turn token an attempt ends with). Chosen over one user
    turn listing the attempts because a chat model reads multi-turn corrections
    natively and because the context then only grows by attempt + separator, the
    layout the search extends without re-reading the prompt. Plain layout: a blank
    line and `PLAIN_REVISION_HEADER`.

    Raises:
      ValueError: the template does not render the problem's prompt as a prefix of the
        same conversation with an attempt (no fixed turn boundary to use).
    """
    if self.template is None:
      return f"\n\n{PLAIN_REVISION_HEADER}\n"
    marker = "ATTEMPT-7f3a"  # stands for an attempt's text
    problem = "PROBLEM"
    prefix = self(problem)
    turns = self.messages(problem) + [{"role": "assistant", "content": marker},
                                      {"role": "user", "content": REVISION_REQUEST}]
    full = chat_template.render(self.template, turns, add_generation_prompt=True,
                                **self.special_tokens)
    if not full.startswith(prefix + marker) or full.count(marker) != 1:
      raise ValueError("This chat template does not render an assistant turn right after "
                       "the prompt's generation prompt, so previous attempts cannot be "
                       "appended as turns; use use_chat_template=False for revisions.")
    return full[len(prefix) + len(marker):]
