"""Accuracy against budget from a sweep's records, with FLOPs beside each figure.

Every record holds one problem's candidates for one (strategy, budget, seed); the
report applies each selection rule to them. Best-of-N runs once at the largest
budget; its accuracy at a smaller budget n averages `num_draws` random n-subsets of
its N samples, and its compute at n is the prompt's cost plus n / N of the rest.
"""

from __future__ import annotations

import collections
import itertools
from typing import Iterable, Sequence

import numpy as np

from ttcjax import compute
from ttcjax.search import get_strategy
from ttcjax.sweep import select

# (label, aggregation or None, selection rule)
REPORTED_SELECTIONS = (
    ("majority", None, "majority"),
    ("weighted_last", "last", "weighted"),
    ("weighted_min", "min", "weighted"),
    ("weighted_prod", "prod", "weighted"),
    ("best_last", "last", "best"),
)

# Every accuracy column of a report row: the selections and the oracle (pass@n).
COLUMNS = tuple(s[0] for s in REPORTED_SELECTIONS) + ("oracle",)

# Selections that read each candidate's chain (sequential revisions; the paper's
# choice for them): best-of-N weighted within each chain, then across chains. On a
# strategy without chains (each candidate its own) it equals "weighted_last".
CHAIN_SELECTIONS = (("hierarchical_last", "last", "hierarchical"),)


def score_table(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  """[Q, N, S] scores and mask from the records' ragged step-score lists."""
  p, n = len(records), len(records[0]["step_scores"])
  s = max(1, max(len(steps) for r in records for steps in r["step_scores"]))
  scores, mask = np.zeros((p, n, s)), np.zeros((p, n, s), bool)
  for i, record in enumerate(records):
    for j, steps in enumerate(record["step_scores"]):
      scores[i, j, :len(steps)] = steps
      mask[i, j, :len(steps)] = True
  return scores, mask


def _ids(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  ids, vocab = select.answer_ids([r["answers"] for r in records])
  correct = np.array([v.index(r["correct_answer"]) if r["correct_answer"] in v
                      else select.NO_ANSWER for r, v in zip(records, vocab)])
  return ids, correct


def rule_of(label: str) -> tuple[str | None, str]:
  """(aggregation or None, selection rule) of a selection label in `REPORTED_SELECTIONS`
  or `CHAIN_SELECTIONS`."""
  for name, how, rule in REPORTED_SELECTIONS + CHAIN_SELECTIONS:
    if name == label:
      return how, rule
  raise ValueError(f"Unknown selection {label!r}; choose from "
                   f"{[s[0] for s in REPORTED_SELECTIONS + CHAIN_SELECTIONS]}.")


def problem_accuracy(records: Sequence[dict], selection: str = "weighted_last",
                     subset_size: int | None = None, num_draws: int = 16,
                     seed: int = 0) -> np.ndarray:
  """Expected correctness [Q] of one selection rule on each record's problem.

  Args:
    records: one per problem, same strategy, budget and seed.
    selection: a label of `REPORTED_SELECTIONS`.
    subset_size: select among random subsets of this many candidates (best-of-n
      read from a larger run); None uses all candidates (exact, no draws).
    num_draws: subsets averaged per problem.
    seed: the subsets' seed.
  """
  how, rule = rule_of(selection)
  ids, correct = _ids(records)
  solution_scores = None
  if how is not None:
    scores, mask = score_table(records)
    solution_scores = select.aggregate(scores, mask, how)
  if rule == "hierarchical":
    if subset_size not in (None, ids.shape[1]):
      raise ValueError("Hierarchical selection reads whole chains; it takes no subsets.")
    chosen = select.select_answers(ids, solution_scores, rule, candidate_chains(records))
    return ((chosen == correct) & (correct != select.NO_ANSWER)).astype(np.float64)
  return select.subset_selection(ids, solution_scores, correct, subset_size or ids.shape[1],
                                 rule, num_draws, seed)


def candidate_chains(records: Sequence[dict]) -> np.ndarray:
  """[Q, N] the chain of each candidate: n // chain_length for sequential revisions
  (candidate n = chain * L + position), n itself for every other strategy."""
  n = len(records[0]["answers"])
  lengths = np.array([int(r.get("hyper", {}).get("chain_length", 1)) for r in records])
  return np.arange(n)[None, :] // lengths[:, None]


def accuracies(records: Sequence[dict], subset_size: int | None = None,
               num_draws: int = 16, seed: int = 0) -> dict[str, float]:
  """Mean accuracy of every selection rule (and of the oracle, pass@n) over the records."""
  size = subset_size or len(records[0]["answers"])
  out = {label: float(problem_accuracy(records, label, subset_size, num_draws, seed).mean())
         for label, _, _ in REPORTED_SELECTIONS}
  # pass@n: some candidate (of a random n-subset) is right.
  out["oracle"] = float(problem_pass_at(records, size, num_draws, seed).mean())
  return out


def problem_pass_at(records: Sequence[dict], size: int, num_draws: int = 16,
                    seed: int = 0) -> np.ndarray:
  """Per problem [Q], the probability that a random `size`-subset of its candidates
  holds a right one (exact when `size` is all of them, else over `num_draws` subsets)."""
  correct = np.array([r["correct"] for r in records], bool)
  rng = np.random.default_rng(seed)
  draws = 1 if size == correct.shape[1] else num_draws
  hits = np.zeros(correct.shape[0])
  for _ in range(draws):
    pick = np.argsort(rng.random(correct.shape), axis=1)[:, :size]
    hits += np.take_along_axis(correct, pick, axis=1).any(axis=1)
  return hits / draws


def subset_flops(record: dict, fraction: float, policy_cost, prm_cost,
                 part: str = "total_flops") -> float:
  """FLOPs of a best-of-N record had it drawn `fraction` of its samples: the prompt's
  prefill (once per problem) stays, the samples' share scales. `part`: a key of
  `compute.search_flops` ("total_flops", "policy_flops" or "prm_flops")."""
  c = record["compute"]
  prompt = c["policy_prefilled"] + 1
  policy_prompt_context = (prompt - 1) * prompt / 2
  prm_prompt_context = prompt * (prompt + 1) / 2
  scaled = {
      "policy_generated": c["policy_generated"] * fraction,
      "policy_prefilled": c["policy_prefilled"],
      "policy_context": (policy_prompt_context
                         + (c["policy_context"] - policy_prompt_context) * fraction),
      "prm_scored": prompt + (c["prm_scored"] - prompt) * fraction,
      "prm_context": prm_prompt_context + (c["prm_context"] - prm_prompt_context) * fraction,
  }
  return float(compute.search_flops(scaled, policy_cost, prm_cost)[part])


def budget_table(records: Iterable[dict], budgets: Sequence[int], policy_cost=None,
                 prm_cost=None, num_draws: int = 16) -> list[dict]:
  """One row per (strategy, budget, seed) with every rule's accuracy and mean FLOPs.

  Args:
    records: a sweep's records (`ttcjax.sweep.read_results`).
    budgets: the budgets to report best-of-N at (read from its largest run).
    policy_cost, prm_cost: `compute.ModelCost`s, needed to scale best-of-N's FLOPs.
    num_draws: subsets averaged for best-of-N at smaller budgets.
  """
  groups = collections.defaultdict(list)
  for record in records:
    groups[(record["strategy"], record["budget"], record["seed"])].append(record)
  rows = []
  for (label, budget, seed), group in sorted(groups.items()):
    group.sort(key=lambda r: r["uid"])
    subsets = [budget]
    if get_strategy(group[0]["name"]).independent_samples:
      subsets = [b for b in budgets if b <= budget]
    for size in subsets:
      if size == budget:
        flops = float(np.mean([r["flops"]["total_flops"] for r in group]))
        acc = accuracies(group)
      else:
        if policy_cost is None or prm_cost is None:
          raise ValueError("Model costs are needed to report best-of-N below its run budget.")
        flops = float(np.mean([subset_flops(r, size / budget, policy_cost, prm_cost)
                               for r in group]))
        acc = accuracies(group, subset_size=size, num_draws=num_draws, seed=seed)
      rows.append({"strategy": label, "budget": size,
                   "generation_budget": size * group[0]["generation_budget"] // budget,
                   "seed": seed, "problems": len(group), "mean_flops": flops, **acc})
  return rows


def _cells(rows: Sequence[dict]) -> tuple[list[int], list[str], dict, int]:
  """The generation budgets, the strategies, rows by (strategy, generation budget), and
  the most problems any row covers."""
  cells = collections.defaultdict(list)
  for r in rows:
    cells[(r["strategy"], r["generation_budget"])].append(r)
  return (sorted({r["generation_budget"] for r in rows}),
          sorted({r["strategy"] for r in rows}), cells, max(r["problems"] for r in rows))


def _cell(got: Sequence[dict], rule: str, most_problems: int) -> str:
  """'accuracy (GFLOPs per problem)', averaged over the seeds' rows; '[n=...]' marks a
  cell over fewer problems than the others (a sweep still running)."""
  acc = np.mean([r[rule] for r in got])
  text = f"{acc:.3f} ({np.mean([r['mean_flops'] for r in got]) / 1e9:.2f})"
  problems = min(r["problems"] for r in got)
  return text + (f" [n={problems}]" if problems < most_problems else "")


def format_table(rows: Sequence[dict], rule: str = "weighted_last") -> str:
  """Strategies down, generation budgets across: 'accuracy (GFLOPs per problem)'."""
  budgets, strategies, cells, most = _cells(rows)
  text = {key: _cell(got, rule, most) for key, got in cells.items()}
  width = max(len(s) for s in strategies) + 2
  column = max(len(t) for t in text.values()) + 2
  lines = [f"accuracy ({rule}) and GFLOPs per problem, by generation budget",
           " " * width + "".join(f"{b:>{column}}" for b in budgets)]
  for s in strategies:
    lines.append(f"{s:<{width}}" + "".join(f"{text.get((s, b), '-'):>{column}}"
                                           for b in budgets))
  return "\n".join(lines)


def wall_times(records: Sequence[dict], problems_per_batch: int) -> list[dict]:
  """Recorded wall time per (strategy, budget, seed): the sum over its units, and the
  median unit (what a unit takes when nothing else competes for the machine).

  Every record carries its unit's wall time (`unit_wall_s`, compilation included), and
  a unit's records are written together, so a run of consecutive records with the same
  (strategy, budget, seed, time) is one unit -- or, if neighbouring units took the same
  time to the millisecond, ceil(records / the unit's records) of them (each record
  states its unit's `unit_problems`; older ones fall back to `problems_per_batch`).
  Times add up across resumed runs. Records without a time (older sweeps) are counted
  in `untimed_problems`.
  """
  if problems_per_batch <= 0:
    raise ValueError(f"problems_per_batch must be positive, got {problems_per_batch}.")
  unit_times = collections.defaultdict(list)
  problems = collections.Counter()
  untimed = collections.Counter()
  groups = itertools.groupby(records, key=lambda r: (
      r["strategy"], r["budget"], r["seed"], r.get("unit_wall_s"),
      r.get("unit_problems", problems_per_batch)))
  for (*run, wall_s, unit_size), group in groups:
    size = len(list(group))
    problems[tuple(run)] += size
    if wall_s is None:
      untimed[tuple(run)] += size
    else:
      unit_times[tuple(run)] += [wall_s] * -(-size // unit_size)
  rows = []
  for run in sorted(problems, key=lambda r: (r[1], r[0], r[2])):
    times = unit_times.get(run, [])
    rows.append({"strategy": run[0], "budget": run[1], "seed": run[2], "units": len(times),
                 "wall_s": float(sum(times)),
                 "median_unit_s": float(np.median(times)) if times else 0.0,
                 "problems": problems[run], "untimed_problems": untimed[run]})
  return rows


def format_markdown(rows: Sequence[dict], rules: Sequence[str]) -> str:
  """A markdown table: one line per (strategy, selection rule), generation budgets
  across, each cell 'accuracy (GFLOPs per problem)'."""
  known = list(COLUMNS)
  unknown = [rule for rule in rules if rule not in known]
  if unknown or not rules:
    raise ValueError(f"Unknown or no selection rules {list(rules)}; choose from {known}.")
  budgets, strategies, cells, most = _cells(rows)
  lines = ["| strategy | selection | " + " | ".join(str(b) for b in budgets) + " |",
           "|---|---|" + "---:|" * len(budgets)]
  for s in strategies:
    for rule in rules:
      lines.append(f"| {s} | {rule} | " + " | ".join(
          _cell(cells[(s, b)], rule, most) if (s, b) in cells else "-"
          for b in budgets) + " |")
  return "\n".join(lines)
