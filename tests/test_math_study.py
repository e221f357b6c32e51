"""The MATH-500 path end to end, on tiny random stand-ins of the real checkpoints.

The stand-ins are Hugging Face directories with the real ones' structure: a
Llama-3.2-Instruct-style policy (LlamaForCausalLM, Llama 3's chat template, BOS
`<|begin_of_text|>`, turns ended by `<|eot_id|>`) and a Qwen2.5-Math-PRM-style PRM
(Qwen2ForProcessRewardModel, Qwen's chat template, `<extra_0>` after each step). A
search scores steps inside jit with the policy's token ids, so the two share one
locally trained byte-level BPE tokenizer that carries both families' special tokens
(the published pairs of `configs/math500` share a tokenizer the same way).

The sweep and the study run through `experiments.search` and `experiments.reproduce`
with `configs/math500/qwen_math1p5b_prm7b.py` and overrides, on the first 10 problems
of the real MATH-500 file plus one row without an answer; the problem with the
longest prompt is made too long for the prompt buffer. Both bad problems must be
skipped, logged and counted, and everything else must run: answers extracted and
graded, results, report and allocations written. Accuracy near zero is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

try:
  from tests import hf_models  # pylint: disable=wrong-import-position
  from tests.test_prm_adapters import LLAMA3_TEMPLATE, QWEN_TEMPLATE
except ImportError:
  import hf_models  # pylint: disable=wrong-import-position
  from test_prm_adapters import LLAMA3_TEMPLATE, QWEN_TEMPLATE

from configs.math500 import qwen_math1p5b_prm7b as qwen_config  # pylint: disable=wrong-import-position
from ttcjax.models.hf_import import load_hf_tokenizer  # pylint: disable=wrong-import-position
from ttcjax.models.prm_adapters import load_prm_adapter  # pylint: disable=wrong-import-position
from ttcjax.tasks.math import data as math_data  # pylint: disable=wrong-import-position
from ttcjax.tasks.math import grading as math_grading  # pylint: disable=wrong-import-position
from ttcjax.tasks.math import task as math_task  # pylint: disable=wrong-import-position
from ttcjax.tasks.math.prompts import PromptBuilder  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATH500 = os.path.join(ROOT, os.pardir, "shared", "data", "math500_test.jsonl")
CONFIG = "configs/math500/qwen_math1p5b_prm7b.py"
LLAMA_SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<extra_0>"]
NUM_REAL = 10


def _save_standins(root: str, problems) -> tuple[str, str]:
  """(policy_dir, prm_dir) of the tiny stand-ins, sharing one tokenizer."""
  corpus = [p.problem for p in problems] + [p.solution for p in problems]
  policy_dir, prm_dir = os.path.join(root, "policy"), os.path.join(root, "prm")
  families = {policy_dir: dict(chat_template=LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>",
                               eos_token="<|eot_id|>"),
              prm_dir: dict(chat_template=QWEN_TEMPLATE, bos_token=None,
                            eos_token="<|im_end|>")}
  # ".\n\n" and "\n\n" as single tokens, as Llama 3's and Qwen's merges have them, so
  # that steps end inside merged tokens.
  vocab = hf_models.save_bpe_tokenizer(policy_dir, corpus,
                                       special_tokens=LLAMA_SPECIAL + QWEN_SPECIAL,
                                       added_tokens=[".\n\n", "\n\n"], vocab_size=420)
  os.makedirs(prm_dir)
  shutil.copy(os.path.join(policy_dir, "tokenizer.json"), prm_dir)
  for path, tokenizer_config in families.items():
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
      json.dump(dict(tokenizer_class="PreTrainedTokenizerFast", **tokenizer_config), f)
  model = dict(vocab_size=vocab, max_position_embeddings=4096)
  hf_models.save_causal_lm("llama", policy_dir, seed=21, **model)
  hf_models.save_qwen2_prm(prm_dir, seed=22, **model)
  return policy_dir, prm_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  if not os.path.isfile(MATH500):
    pytest.skip(f"MATH-500 is not at {MATH500}; the end-to-end MATH test needs the real file.")
  root = str(tmp_path_factory.mktemp("math_study"))
  problems = math_data.load_math(MATH500, limit=NUM_REAL)
  policy_dir, prm_dir = _save_standins(root, problems)
  data = os.path.join(root, "math.jsonl")
  with open(MATH500) as f, open(data, "w") as out:
    lines = [next(f) for _ in range(NUM_REAL)]
    out.writelines(lines)
    broken = json.loads(lines[0])
    del broken["answer"]
    broken["unique_id"] = "test/broken/0.json"
    out.write(json.dumps(broken) + "\n")
  # The prompt buffer is one token short of the longest prompt, which is skipped.
  tokenizer = load_hf_tokenizer(policy_dir)
  build = PromptBuilder.from_dir(policy_dir, instruction=qwen_config.SYSTEM_PROMPT)
  lengths = {p.unique_id: len(tokenizer.encode(build(p.problem))) + 1 for p in problems}
  longest = max(lengths, key=lengths.get)
  adapter = load_prm_adapter(prm_dir, "qwen_math_prm")
  prm_longest = max(len(adapter.prompt_ids(p.problem)) for p in problems)
  overrides = {
      "policy_dir": policy_dir, "prm_dir": prm_dir, "data_path": data, "dtype": "float32",
      "budgets": (2, 4), "problems_per_batch": 5,
      "caps.max_prompt_tokens": lengths[longest] - 1,
      "caps.max_prm_prompt_tokens": prm_longest, "caps.max_step_tokens": 8,
      "caps.max_solution_tokens": 32, "caps.max_steps": 32, "caps.max_rounds": 6,
      "difficulty_samples": 4, "num_bins": 2, "cv_repeats": 5, "num_draws": 4,
  }
  return dict(root=root, overrides=overrides, longest=longest, lengths=lengths)


def _flags(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def _config(overrides: dict):
  """The config the command lines get, built in this process."""
  config = qwen_config.get_config()
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for name in path:
      node = node[name]
    node[leaf] = value
  return config


def _run(module: str, workdir: str, overrides: dict) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, "--config", CONFIG, "--workdir", workdir]
                        + _flags(overrides), cwd=ROOT, capture_output=True, text=True,
                        timeout=900, check=False)


def test_sweep_and_study_on_real_problems(setup):
  overrides = setup["overrides"]
  workdir = os.path.join(setup["root"], "study")
  # The sweep first, as a user would; the study then reuses it.
  sweep = _run("experiments.search", os.path.join(workdir, "sweep"), overrides)
  assert sweep.returncode == 0, sweep.stderr[-3000:]
  assert "Skipping problem test/broken/0.json" in sweep.stderr
  assert f"Skipping problem {setup['longest']}" in sweep.stderr
  with open(os.path.join(workdir, "sweep", "results.jsonl")) as f:
    records = [json.loads(line) for line in f]
  searched = NUM_REAL - 1
  # best-of-N at the largest budget only; beam and DVTS (M = 4) fit N = 4 only.
  assert sorted({(r["strategy"], r["budget"]) for r in records}) == [
      ("beam", 4), ("best_of_n", 4), ("dvts", 4)]
  assert len(records) == 3 * searched
  assert setup["longest"] not in {r["uid"] for r in records}
  for r in records:
    assert len(r["answers"]) == 4 and len(r["correct"]) == 4
    assert r["correct_answer"] and r["compute"]["policy_generated"] > 0
    assert r["flops"]["prm_flops"] > 0 and r["unit_wall_s"] > 0
    assert all(0.0 <= s <= 1.0 for row in r["step_scores"] for s in row)

  study = _run("experiments.reproduce", workdir, overrides)
  assert study.returncode == 0, study.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["task"] == "math500" and summary["questions"] == searched
  assert summary["search_units_run_now"]["sweep"] == 0  # reused
  assert summary["search_units_run_now"]["difficulty"] > 0
  assert "large_greedy" not in summary["search_units"] and summary["exchange"] is None
  assert {s["uid"] for s in summary["skipped_problems"]} == {"test/broken/0.json",
                                                           setup["longest"]}
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert "MATH-500" in report and "2 problem(s) were skipped" in report
  assert "no larger policy" in report.lower()
  for name in ("study.json", "allocation_oracle.json", "allocation_predicted.json",
               "accuracy_vs_budget.png", "skipped.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name


def test_a_sweep_that_would_not_fit_is_refused_before_any_search(setup, tmp_path):
  config = _config(dict(setup["overrides"], device_gb=1e-4))  # about 100 KiB per device
  with pytest.raises(ValueError, match="beam at N=4 would not fit: The search needs"):
    math_task.run_search_sweep(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "results.jsonl")


def test_prompts_use_the_policy_template_and_few_shot(setup):
  policy_dir = setup["overrides"]["policy_dir"]
  build = PromptBuilder.from_dir(policy_dir, instruction="Be brief.", few_shot=2)
  prompt = build("What is $1+1$?")
  # Llama 3's layout, without the BOS text (the runner prepends the BOS id).
  assert not prompt.startswith("<|begin_of_text|>")
  assert prompt.startswith("<|start_header_id|>system<|end_header_id|>")
  assert "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>" in prompt  # a fixed date
  assert prompt.count("<|start_header_id|>user<|end_header_id|>") == 3
  assert prompt.count("<|start_header_id|>assistant<|end_header_id|>") == 3  # 2 shots + prompt
  assert prompt.endswith("What is $1+1$?<|eot_id|><|start_header_id|>assistant"
                         "<|end_header_id|>\n\n")
  plain = PromptBuilder.from_dir(policy_dir, few_shot=1, use_chat_template=False)("Q?")
  assert plain.startswith("Solve the following math problem step by step.")
  assert plain.endswith("Problem: Q?\n\nSolution:\n") and "\\boxed{25}" in plain
  with pytest.raises(ValueError, match="only 4 examples"):
    PromptBuilder.from_dir(policy_dir, few_shot=5)


def test_answers_are_keyed_and_graded():
  answers = math_task.MathAnswers(math_grading.default_grader())
  half = answers.answer("So $x = \\boxed{\\dfrac{1}{2}}$.")
  assert half == answers.answer("Thus \\boxed{0.5}") and half is not None
  assert answers.answer("no box here") is None
  text = "So $x = \\boxed{\\dfrac{1}{2}}$."
  assert answers.judge(half, "\\frac12", text) and not answers.judge(half, "2", text)
  assert not answers.judge(None, "2", "no box")


def test_bad_rows_are_skipped_with_reasons(tmp_path):
  path = tmp_path / "rows.jsonl"
  good = dict(problem="1+1?", solution="\\boxed{2}", answer="2", subject="A", level=1,
              unique_id="a")
  rows = [json.dumps(good), "{not json", json.dumps(dict(good, unique_id="b", answer=" ")),
          json.dumps(dict(good, unique_id="a")), json.dumps({"problem": "x"}),
          json.dumps(dict(good, unique_id="c"))]
  path.write_text("\n".join(rows) + "\n")
  problems, skipped = math_data.load_math_skipping(str(path))
  assert [p.unique_id for p in problems] == ["a", "c"]
  reasons = [s["reason"] for s in skipped]
  assert [s["uid"] for s in skipped] == [f"{path}, line 2", "b", "a", f"{path}, line 5"]
  assert len(skipped) == 4 and "not valid JSON" in reasons[0]
  assert "answer field is empty" in reasons[1] and "occurs twice" in reasons[2]
  assert "missing field(s)" in reasons[3]
  assert [p.unique_id for p in math_data.load_math_skipping(str(path), limit=1)[0]] == ["a"]
  with pytest.raises(ValueError, match="line 2: not valid JSON"):
    math_data.load_math(str(path))


def test_a_study_widened_to_a_larger_budget_reads_only_its_own_runs(tmp_path):
  """best-of-N runs once, at the largest budget: after widening (4, 16) to (4, 16, 64)
  the N = 16 run stays in the file but is no longer the study's."""
  from ttcjax.study import runner as study_runner  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  rows = [dict(key=f"{s}|{b}|0|{u}", uid=u, strategy=s, budget=b, seed=0)
          for u in ("p1", "p2")
          for s, b in [("best_of_n", 16), ("best_of_n", 64), ("beam", 4), ("beam", 16),
                       ("beam", 64), ("beam", 256)]]
  with open(tmp_path / "results.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  config = ml_collections.ConfigDict(dict(
      budgets=(4, 16, 64), seeds=(0,),
      strategies=[dict(name="best_of_n", max_budget_only=True),
                  dict(name="beam", beam_width=4, label="beam")]))
  kept = study_runner._stage_records(str(tmp_path), config, ["p1"])  # pylint: disable=protected-access
  assert sorted((r["strategy"], r["budget"]) for r in kept) == [
      ("beam", 4), ("beam", 16), ("beam", 64), ("best_of_n", 64)]


@pytest.mark.parametrize("family", ["llama3", "qwen"])
def test_revision_separator_is_the_chat_templates_turn_boundary(family):
  """Previous attempts go in as assistant turns answered by a fixed user turn: the
  separator is the text between one assistant turn's content and the next one's."""
  from ttcjax.tasks.math import prompts
  template = {"llama3": LLAMA3_TEMPLATE, "qwen": QWEN_TEMPLATE}[family]
  builder = prompts.PromptBuilder(template=template, special_tokens={
      "bos_token": "", "date_string": prompts.TEMPLATE_DATE})
  sep = builder.attempt_separator()
  end_of_turn = {"llama3": "<|eot_id|>", "qwen": "<|im_end|>"}[family]
  assert sep.startswith(end_of_turn) and prompts.REVISION_REQUEST in sep
  turns = builder.messages("2+2?") + [{"role": "assistant", "content": "It is 4."},
                                      {"role": "user", "content": prompts.REVISION_REQUEST}]
  from ttcjax.models import chat_template
  assert chat_template.render(template, turns, add_generation_prompt=True,
                              **builder.special_tokens) == builder("2+2?") + "It is 4." + sep
  assert prompts.PromptBuilder().attempt_separator().endswith(prompts.PLAIN_REVISION_HEADER + "\n")
