"""One problem's search, searched again as its sweep unit searched it and drawn as a
self-contained HTML page (`experiments.view_tree`).

`search_problem` reruns one (strategy setting, budget, seed) on one problem with the
round trace on (a problem's search depends only on the seed and its id, so this is
the search the sweep recorded, up to float rounding of a different batch size);
`render_page` draws it: for a step-level search the tree of every sampled step (PRM
score, round, row, which rows survived, which candidate each surviving path became),
for every strategy the final candidates side by side (chains of attempts for
sequential revisions), and the answers with their votes.
"""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Any, Callable, Hashable, Sequence

import jax
import numpy as np

from ttcjax.sampling import Sampler
from ttcjax.sweep import select, tree
from ttcjax.sweep.plan import StrategySetting
from ttcjax.sweep.runner import SearchResult, SearchRunner


@dataclasses.dataclass
class ProblemSearch:
  """One problem's search (N candidates).

  Attributes:
    uid: the problem's id in the sweep's records.
    problem: its text as the page shows it.
    correct_answer: the reference answer.
    label, name, hyper, budget, seed: what was searched (hyper resolved at the budget).
    result: the `SearchResult` of this one problem (B = 1), traced when step-level.
    correct: [N] each candidate judged right.
    steps: [N] lists of step texts.
    decode: token ids -> text.
  """

  uid: str
  problem: str
  correct_answer: Any
  label: str
  name: str
  hyper: dict
  budget: int
  seed: int
  result: SearchResult
  correct: list[bool]
  steps: list[list[str]]
  decode: Callable[[np.ndarray], str]


def search_problem(runner: SearchRunner, setting: StrategySetting, budget: int, seed: int,
                   sampler: Sampler, *, uid: str, prompt: str, problem_id: int,
                   correct_answer: Any, judge: Callable[[Hashable | None, Any, str], bool],
                   problem_text: str | None = None) -> ProblemSearch:
  """Searches one problem as the sweep unit (setting, budget, seed) did, traced.

  Raises:
    ValueError: the setting does not run at this budget.
  """
  hyper = setting.resolve(budget)
  if hyper is None:
    raise ValueError(f"Strategy setting {setting.label!r} does not run at budget {budget} "
                     f"(its hyperparameters {dict(setting.hyper)} do not fit it).")
  setting.strategy.validate(budget, hyper)
  result = runner.search(setting.name, [prompt], [problem_id], budget=budget,
                         rng=jax.random.PRNGKey(seed), sampler=sampler,
                         problem_texts=None if problem_text is None else [problem_text],
                         trace=not setting.strategy.whole_solutions, **hyper)
  correct = [bool(judge(a, correct_answer, t)) for a, t in zip(result.answers[0],
                                                                  result.texts[0])]
  return ProblemSearch(uid=uid, problem=problem_text or prompt, correct_answer=correct_answer,
                       label=setting.label, name=setting.name, hyper=hyper, budget=budget,
                       seed=seed, result=result, correct=correct,
                       steps=runner.candidate_steps(result)[0], decode=runner.tokenizer.decode)


def differences_from_record(search: ProblemSearch, record: dict) -> list[str]:
  """What of the rerun differs from the sweep's record of the same unit (empty: none)."""
  out = []
  answers = [None if a is None else a for a in search.result.answers[0]]
  recorded = record["answers"]
  # JSON turns tuples into lists and keeps ints and strings: compare through it.
  if json.loads(json.dumps(answers)) != recorded:
    changed = sum(a != b for a, b in zip(json.loads(json.dumps(answers)), recorded))
    out.append(f"{changed} of {len(recorded)} answers differ")
  if [bool(c) for c in search.correct] != record["correct"]:
    out.append("correctness differs")
  mask = search.result.step_mask[0]
  scores = [[float(s) for s in row[m]] for row, m in zip(search.result.step_scores[0], mask)]
  if len(scores) != len(record["step_scores"]) or any(
      len(a) != len(b) or not np.allclose(a, b, atol=1e-3)
      for a, b in zip(scores, record["step_scores"])):
    out.append("step scores differ by more than 1e-3")
  return out


def answer_table(search: ProblemSearch) -> list[dict]:
  """Each distinct answer: its candidates, PRM-weighted votes (last-step scores, the
  paper's best-of-N weighted), whether it is right, and which rules choose it."""
  result = search.result
  ids, keys = select.answer_ids(result.answers)
  scores = select.aggregate(result.step_scores, result.step_mask, "last")
  rules = {"majority": select.select_answers(ids, None, "majority")[0],
           "weighted": select.select_answers(ids, scores, "weighted")[0]}
  if result.chain is not None and len(set(result.chain[0].tolist())) < search.budget:
    rules["hierarchical"] = select.select_answers(ids, scores, "hierarchical", result.chain)[0]
  rows = []
  for answer_id, key in enumerate(keys[0]):
    members = np.flatnonzero(ids[0] == answer_id)
    rows.append({"answer": key, "candidates": len(members),
                 "weighted_votes": float(scores[0, members].sum()),
                 "correct": bool(search.correct[members[0]]),
                 "chosen_by": [rule for rule, chosen in rules.items() if chosen == answer_id]})
  missing = int((ids[0] == select.NO_ANSWER).sum())
  if missing:
    rows.append({"answer": None, "candidates": missing, "weighted_votes": 0.0,
                 "correct": False, "chosen_by": []})
  return sorted(rows, key=lambda r: -r["weighted_votes"])


# ------------------------------------------------------------------------------ page

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
pre, code, .text { font-family: ui-monospace, monospace; white-space: pre-wrap; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; }
.right { color: #176f2c; } .wrong { color: #a31515; }
.warning { background: #fff3cd; padding: 4px 8px; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 1.4em; }
ul.tree { padding-left: 0; }
li.node > .step { display: flex; gap: .6em; align-items: baseline; padding: 1px 0; cursor: pointer; }
li.node.pruned > .step { opacity: .45; }
li.node.collapsed > ul { display: none; }
li.node.collapsed > .step .text::after { content: " [+]"; color: #888; }
body.hide-pruned li.node.pruned { display: none; }
.score { min-width: 3.2em; text-align: right; border-radius: 3px; padding: 0 3px; }
.meta { color: #777; font-size: .85em; }
.badge { border: 1px solid currentColor; border-radius: 3px; padding: 0 4px; font-size: .85em; }
.samples { display: flex; flex-wrap: wrap; gap: 8px; }
.sample { border: 1px solid #ccc; border-radius: 4px; padding: 6px; width: 17em; }
.sample h3 { font-size: .95em; margin: 0 0 4px; }
.sample ol { margin: 0; padding-left: 1.4em; }
.chain { border-left: 3px solid #ccd; padding-left: 6px; margin-bottom: 8px; }
"""

_SCRIPT = """
document.getElementById("show-pruned")?.addEventListener("change", function (e) {
  document.body.classList.toggle("hide-pruned", !e.target.checked);
});
for (const step of document.querySelectorAll("li.node > .step")) {
  step.addEventListener("click", function () {
    const node = step.parentElement;
    if (node.querySelector(":scope > ul")) node.classList.toggle("collapsed");
  });
}
const shown = document.getElementById("shown-nodes");
if (shown) shown.textContent = document.querySelectorAll("li.node").length;
"""


def _score_cell(score: float | None) -> str:
  if score is None:
    return '<span class="score">-</span>'
  hue = int(round(120 * min(max(score, 0.0), 1.0)))
  return (f'<span class="score" style="background:hsl({hue},65%,82%)" '
          f'title="PRM score">{score:.3f}</span>')


def _verdict(correct: bool) -> str:
  return '<span class="right">right</span>' if correct else '<span class="wrong">wrong</span>'


def _answer_text(answer) -> str:
  return "(no answer)" if answer is None else html.escape(str(answer))


def _tree_html(node: tree.Node, search: ProblemSearch) -> str:
  items = []
  for child in node.children:
    state = "ended" if child.ended else ("kept" if child.kept else "pruned")
    badges = "".join(
        f' <span class="badge {"right" if search.correct[n] else "wrong"}">#{n} '
        f'{_answer_text(search.result.answers[0][n])}</span>' for n in child.candidates)
    meta = f"round {child.round} · row {child.row} · {state}"
    if child.count:
      meta += f" · {child.count} candidate{'s' if child.count > 1 else ''}"
    below = f'<ul>{_tree_html(child, search)}</ul>' if child.children else ""
    items.append(f'<li class="node {state}" data-round="{child.round}" data-row="{child.row}">'
                 f'<div class="step">{_score_cell(child.score)}'
                 f'<span class="text">{html.escape(child.step.strip())}</span>'
                 f'<span class="meta">{meta}</span>{badges}</div>{below}</li>')
  return "".join(items)


def _sample_html(search: ProblemSearch, n: int) -> str:
  result = search.result
  scores = result.step_scores[0, n][result.step_mask[0, n]]
  steps = "".join(
      f"<li>{_score_cell(float(scores[i]) if i < len(scores) else None)} "
      f'<span class="text">{html.escape(step.strip())}</span></li>'
      for i, step in enumerate(search.steps[n]))
  position = ""
  if result.chain is not None and result.position is not None and result.position[0].max() > 0:
    position = f" · chain {result.chain[0, n]}, attempt {result.position[0, n] + 1}"
  finished = "" if result.finished[0, n] else " · unfinished"
  return (f'<div class="sample" data-candidate="{n}"><h3>#{n}{position}{finished}: '
          f'{_answer_text(result.answers[0][n])} {_verdict(search.correct[n])}</h3>'
          f"<ol>{steps}</ol></div>")


def render_page(search: ProblemSearch, notes: Sequence[str] = ()) -> str:
  """The page of one problem's search: one HTML document with its style and script.

  Args:
    search: from `search_problem`.
    notes: warnings shown at the top (e.g. how the rerun differs from the record).
  """
  result = search.result
  title = f"{search.uid}: {search.label}, N = {search.budget}, seed {search.seed}"
  parts = [f"<h1>{html.escape(title)}</h1>"]
  parts += [f'<p class="warning">{html.escape(note)}</p>' for note in notes]
  hyper = ", ".join(f"{k} = {v}" for k, v in sorted(search.hyper.items())) or "none"
  parts.append(f"<p>Strategy <code>{html.escape(search.name)}</code> ({html.escape(hyper)}); "
               f"reference answer <b>{_answer_text(search.correct_answer)}</b>; "
               f"{sum(search.correct)} of {search.budget} candidates right.</p>")
  parts.append(f"<pre>{html.escape(search.problem)}</pre>")
  rows = "".join(
      f"<tr><td>{_answer_text(r['answer'])}</td><td>{r['candidates']}</td>"
      f"<td>{r['weighted_votes']:.3f}</td><td>{_verdict(r['correct'])}</td>"
      f"<td>{', '.join(r['chosen_by'])}</td></tr>" for r in answer_table(search))
  parts.append("<h2>Answers</h2><table id=\"answers\"><tr><th>answer</th><th>candidates</th>"
               "<th>PRM-weighted votes (last step)</th><th></th><th>chosen by</th></tr>"
               f"{rows}</table>")
  if result.trace is not None:
    root = tree.search_tree(result.trace, 0, search.budget, search.decode)
    nodes = list(root.walk())[1:]
    kept = sum(n.kept for n in nodes)
    parts.append(
        f"<h2>The search tree</h2><p>{len(nodes)} steps sampled in {int(result.trace.rounds)} "
        f"rounds; {kept} kept, {len(nodes) - kept} pruned; "
        f'<span id="shown-nodes"></span> drawn. Click a step to fold its subtree. '
        '<label><input type="checkbox" id="show-pruned" checked> show pruned steps</label>'
        "</p><p class=\"meta\">Each step: the value the selection ranked (PRM score, or the "
        "lookahead value), the round and row that sampled it; a badge marks the final "
        f'candidate its path became.</p><ul class="tree" data-nodes="{len(nodes)}">'
        f"{_tree_html(root, search)}</ul>")
  samples = [_sample_html(search, n) for n in range(search.budget)]
  if result.chain is not None and result.position is not None and result.position[0].max() > 0:
    chains = {}
    for n in range(search.budget):
      chains.setdefault(int(result.chain[0, n]), []).append(samples[n])
    body = "".join(f'<div class="chain"><b>chain {c}</b><div class="samples">{"".join(s)}'
                   "</div></div>" for c, s in sorted(chains.items()))
  else:
    body = f'<div class="samples">{"".join(samples)}</div>'
  parts.append(f"<h2>The final candidates</h2>{body}")
  return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
          f"{''.join(parts)}<script>{_SCRIPT}</script></body></html>")
