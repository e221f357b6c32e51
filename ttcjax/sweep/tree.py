"""A problem's search as a tree of steps, for looking at a search.

* `solution_tree`: the prefix tree of the final candidates. Candidates that share their
  first k steps share a path of k nodes; each node keeps its step text, the PRM's score
  of that step and how many candidates pass through it. Beam search's survivors share
  long prefixes; best-of-N's samples split at the root.
* `search_tree`: every step a step-level search sampled, pruned ones included, from
  its `RoundTrace` (`SearchRunner.search(..., trace=True)`): which rows survived each
  round and which candidate each surviving path became.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np


@dataclasses.dataclass
class Node:
  """A step. `count`: the final candidates through it. `search_tree` also sets the
  round that sampled it, the row (within the problem) that did, whether it was kept
  (it got children, or its solution ended with it), whether it ended its solution,
  and on the last step of each final candidate, that candidate's index."""

  step: str
  score: float | None
  count: int = 0
  children: list["Node"] = dataclasses.field(default_factory=list)
  round: int | None = None
  row: int | None = None
  kept: bool = True
  ended: bool = False
  candidates: list[int] = dataclasses.field(default_factory=list)

  def walk(self):
    """This node and every node below it, depth first."""
    yield self
    for child in self.children:
      yield from child.walk()


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


def search_tree(trace, problem: int, budget: int,
                decode: Callable[[np.ndarray], str]) -> Node:
  """The tree of every step problem `problem` of a traced search sampled.

  Args:
    trace: the search's `RoundTrace` on the host (`SearchResult.trace`), rows b * N + n.
    problem: b, the problem's index in the searched batch.
    budget: N rows per problem.
    decode: token ids -> text (the tokenizer's decode).

  Returns:
    The root (no step); node (q, r) is the step row r sampled in round q, under the
    node its row continued. Final candidate n is listed on the node whose solution it
    holds after the last round (`Node.candidates`), and counted on its path.
  """
  rows = slice(problem * budget, (problem + 1) * budget)
  rounds = int(trace.rounds)
  grew, tokens, lengths, values, finished, children, parents = (
      x[:rounds, rows] for x in (trace.grew, trace.tokens, trace.lengths, trace.values,
                                 trace.finished, trace.children, trace.parents))
  if rounds and parents.max() >= budget:
    raise ValueError(f"The trace's parents reach row {parents.max()}, beyond the budget "
                     f"{budget}: is budget the search's N?")
  root = Node(step="", score=None)
  nodes: dict[tuple[int, int], Node] = {}
  up: dict[int, Node] = {id(root): None}
  for q in range(rounds):
    for r in range(budget):
      if not grew[q, r]:
        continue
      # Row r sampled this round from what the last round's fork gave it: row p's state.
      parent, start = (root, 0) if q == 0 else (nodes[(q - 1, int(parents[q - 1, r]))],
                                                int(lengths[q - 1, parents[q - 1, r]]))
      node = Node(step=decode(tokens[q, r, start:int(lengths[q, r])]),
                  score=float(values[q, r]), round=q, row=r,
                  kept=bool(children[q, r] > 0 or finished[q, r]), ended=bool(finished[q, r]))
      parent.children.append(node)
      nodes[(q, r)] = node
      up[id(node)] = parent
  for n in range(budget):
    # After the last fork slot n holds row p's state from the latest round p grew in
    # (a finished row keeps its own slot, so the walk goes back to where it ended).
    q, row = rounds - 1, n
    while q >= 0:
      p = int(parents[q, row])
      if grew[q, p]:
        break
      q, row = q - 1, p
    if q < 0:
      continue  # no round ran
    node = nodes[(q, p)]
    node.candidates.append(n)
    while node is not None:
      node.count += 1
      node = up[id(node)]
  return root
