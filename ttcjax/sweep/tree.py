"""The prefix tree of a problem's final candidates, for looking at a search.

Candidates that share their first k steps share a path of k nodes; each node keeps
its step text, the PRM's score of that step and how many candidates pass through it.
Beam search's survivors share long prefixes; best-of-N's samples split at the root.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass
class Node:
  step: str
  score: float | None
  count: int = 0
  children: list["Node"] = dataclasses.field(default_factory=list)


def solution_tree(steps: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> Node:
  """The tree of N candidates, given each one's step texts and step scores."""
  if len(steps) != len(scores):
    raise ValueError(f"{len(steps)} candidates but {len(scores)} score lists.")
  root = Node(step="", score=None)
  for candidate_steps, candidate_scores in zip(steps, scores):
    if len(candidate_steps) < len(candidate_scores):
      raise ValueError("A candidate has more scores than steps.")
    node = root
    node.count += 1
    for i, step in enumerate(candidate_steps):
      score = float(candidate_scores[i]) if i < len(candidate_scores) else None
      child = next((c for c in node.children if c.step == step), None)
      if child is None:
        child = Node(step=step, score=score)
        node.children.append(child)
      child.count += 1
      node = child
  return root


def format_tree(root: Node, indent: str = "  ") -> str:
  """One line per node: step text, PRM score and the candidates through it."""
  lines = []

  def walk(node: Node, depth: int):
    for child in node.children:
      score = "  -  " if child.score is None else f"{child.score:.3f}"
      lines.append(f"{indent * depth}[{score}] x{child.count}  {child.step.strip()}")
      walk(child, depth + 1)

  walk(root, 0)
  return "\n".join(lines)
