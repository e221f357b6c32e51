"""PRM adapters: each family's layout and scores equal a transformers/torch reference
built the way the model cards do it, the incremental (KV-cached, one step per call)
path equals the whole-solution path, and a tokenizer lacking a family's tokens fails
clearly.

Each family gets a tiny random checkpoint in its layout (Qwen2 + 2-class head,
Mistral, Llama) and a tiny BPE tokenizer with the family's special tokens and chat
template. The tokenizer isolates whitespace and punctuation, as Llama 3's and Qwen2's
pre-tokenizers split punctuation from words (see `hf_models.save_bpe_tokenizer`), so
the reference may tokenize the whole rendered text, as the model cards do.
"""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

try:
  from tests import hf_models  # pylint: disable=wrong-import-position
except ImportError:
  import hf_models  # pylint: disable=wrong-import-position
from jax_helpers import host_jit  # pylint: disable=wrong-import-position

from ttcjax.models.cache import KVCache  # pylint: disable=wrong-import-position
from ttcjax.models.prm_adapters import (load_adapted_prm,  # pylint: disable=wrong-import-position
                                        load_prm_adapter)
from ttcjax.models.prm import transformer_prm_fn  # pylint: disable=wrong-import-position

torch.set_num_threads(2)
ATOL = 1e-5  # float32 on both sides

# Qwen2.5's template without the tool branches.
QWEN_TEMPLATE = r"""{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'system' and loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""

# Llama 3.1's template without the tool branches (date header, trimmed turns).
LLAMA3_TEMPLATE = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}"""

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
PROBLEMS = ["Compute 2 + 3 * 4.", "What is 7 - 5?"]
# As a policy writes them: "\n\n" ends a step (merged into ".\n\n" or two "\n" tokens),
# the last step ends with the EOS token.
STEPS = [["First, 3 * 4 = 12.\n\n", "Then 2 + 12 = 14\n\n", "The answer is 14.{eos}"],
         ["We have 7 - 5 = 2.\n\n", "So the answer is 2{eos}"]]
CORPUS = PROBLEMS + [s for steps in STEPS for s in steps] + [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "system user assistant Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024"]

FAMILIES = {
    "qwen_math_prm": dict(
        special=["<|im_start|>", "<|im_end|>", "<extra_0>"], eos="<|im_end|>",
        config=dict(chat_template=QWEN_TEMPLATE, eos_token="<|im_end|>", bos_token=None)),
    "math_shepherd": dict(
        special=["<s>", "</s>"], added=["ки"], eos="</s>", bos="<s>",
        config=dict(bos_token="<s>", eos_token="</s>")),
    "rlhflow": dict(
        special=["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "ки"],  # ки only for the reference's position trick (search-and-learn's)
        eos="<|eot_id|>",
        config=dict(chat_template=LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>",
                    eos_token="<|eot_id|>")),
}
MODEL_VOCAB = 320


def _save_tokenizer(path, family, drop=()):
  spec = FAMILIES[family]
  return hf_models.save_bpe_tokenizer(
      path, CORPUS, special_tokens=[t for t in spec["special"] if t not in drop],
      added_tokens=[t for t in spec.get("added", []) + [".\n\n"] if t not in drop],
      tokenizer_config=spec["config"], bos_token=spec.get("bos"))


@pytest.fixture(scope="module")
def prms(tmp_path_factory):
  """family -> (path, torch model, adapter, prm config, params); built on first use."""
  root, built = tmp_path_factory.mktemp("prm_adapters"), {}

  def get(family):
    if family not in built:
      path = str(root / family)
      if family == "qwen_math_prm":
        model = hf_models.save_qwen2_prm(path, seed=11, vocab_size=MODEL_VOCAB)
      else:
        arch = "mistral" if family == "math_shepherd" else "llama"
        model = hf_models.save_causal_lm(arch, path, seed=12, vocab_size=MODEL_VOCAB)
      assert _save_tokenizer(path, family) <= MODEL_VOCAB
      built[family] = (path, model, *load_adapted_prm(path, family))
    return built[family]

  return get


def _policy_steps(family):
  eos = FAMILIES[family]["eos"]
  return [[s.format(eos=eos) for s in steps] for steps in STEPS]


def _official_steps():
  """The steps as the model cards pass them: split at the delimiter, no EOS."""
  return [[s.format(eos="").rstrip() for s in steps] for steps in STEPS]


# ------------------------------------------------------------------ torch references


def _reference(family, path, model, adapter, problem, steps):
  """(token ids, per-step scores) computed the way each model card does."""
  # Not AutoTokenizer: transformers 5 picks the class from config.json (Qwen2Tokenizer)
  # and swaps in that family's pre-tokenizer; the tiny tokenizer.json is the reference.
  tok = transformers.PreTrainedTokenizerFast.from_pretrained(path)
  plus, minus = adapter.positive_token_id, adapter.negative_token_id
  if family == "qwen_math_prm":  # Qwen2.5-Math-PRM model card
    messages = [{"role": "system", "content": QWEN_SYSTEM},
                {"role": "user", "content": problem},
                {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
    ids = tok.encode(tok.apply_chat_template(messages, tokenize=False))
    with torch.no_grad():
      probs = model.probabilities(torch.tensor([ids]))[0].numpy()
    return ids, probs[np.asarray(ids) == tok.convert_tokens_to_ids("<extra_0>")]
  if family == "math_shepherd":  # Math-Shepherd model card: f"{question} {output}"
    ids = tok.encode(f"{problem} " + "\n".join(f"{s} ки" for s in steps))
    positions = np.flatnonzero(np.asarray(ids) == tok.convert_tokens_to_ids("ки"))
    assert ids[0] == tok.convert_tokens_to_ids("<s>")
  else:  # RLHFlow: search-and-learn's RLHFFlow.score ("+" replies; "ки" marks positions)
    convs = [[], []]
    for k, step in enumerate(steps):
      for conv, reply in zip(convs, ("+", "ки")):
        conv += [{"role": "user", "content": f"{problem} {step}" if k == 0 else step},
                 {"role": "assistant", "content": reply}]
    ids, ids2 = (tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False).input_ids
                 for c in convs)
    positions = np.flatnonzero(np.asarray(ids2[1:]) == tok.convert_tokens_to_ids("ки"))
  with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, :, [plus, minus]]
  return ids, torch.softmax(logits, dim=-1)[positions, 0].numpy()


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_scores_match_reference(prms, family):
  path, model, adapter, config, params = prms(family)
  ours = adapter.score_solutions(params, config, PROBLEMS, _policy_steps(family))
  errors, all_ref = [], []
  for problem, policy_steps, steps, got in zip(PROBLEMS, _policy_steps(family),
                                               _official_steps(), ours):
    ids, reads = adapter.layout(problem, policy_steps)
    # Stripping the delimiter / EOS gives exactly the layout of the clean steps.
    assert (ids, reads) == adapter.layout(problem, steps)
    ref_ids, ref_scores = _reference(family, path, model, adapter, problem, steps)
    # One token sequence up to the last score read (after it the two layouts may end
    # differently: the rest of our suffix, the reference's closing tokens).
    common = min(len(ids), len(ref_ids))
    assert common > max(reads) and ids[:common] == ref_ids[:common], (
        adapter.tokenizer.decode(ids), adapter.tokenizer.decode(ref_ids))
    assert len(got) == len(steps) == len(ref_scores)
    errors.append(np.abs(np.asarray(got) - ref_scores).max())
    all_ref += list(ref_scores)
  error = max(errors)
  print(f"{family}: max |score - reference| = {error:.2e}")
  assert np.std(all_ref) > 1e-3, "reference scores are constant: the test would be weak"
  assert error <= ATOL, f"{family}: max abs diff {error:.2e} > {ATOL}"


def _padded(rows, pad):
  width = max(1, max(len(r) for r in rows))
  tokens = np.full((len(rows), width), pad, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  return tokens, np.array([len(r) for r in rows], np.int32)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_incremental_matches_whole_solutions(prms, family):
  """Prefill the PRM prompt, then feed the policy's step tokens through the wrapped
  PrmFn: one step per call (beam rounds) and all steps in one call (best-of-N)."""
  start = time.time()
  _, _, adapter, config, params = prms(family)
  whole = adapter.score_solutions(params, config, PROBLEMS, _policy_steps(family))
  step_tokens = [[adapter.step_ids(s) for s in steps] for steps in _policy_steps(family)]
  pad = adapter.tokenizer.pad_id
  inner = transformer_prm_fn(config)
  prompts, prompt_lengths = adapter.prompt_batch(PROBLEMS)
  total = max(sum(len(s) for s in steps) for steps in step_tokens)
  capacity = prompts.shape[1] + total + 4 * len(adapter.suffix_ids) + 8
  prefill = host_jit(inner)
  _, prefilled = prefill(params, jnp.asarray(prompts),
                         KVCache.init(config.backbone, len(PROBLEMS), capacity),
                         jnp.asarray(prompt_lengths))

  one_step = host_jit(adapter.wrap_prm_fn(inner))
  width = max(len(s) for steps in step_tokens for s in steps)
  cache, rounds = prefilled, max(len(s) for s in step_tokens)
  incremental = [[] for _ in PROBLEMS]
  for j in range(rounds):
    chunk = [steps[j] if j < len(steps) else [] for steps in step_tokens]
    tokens, num_new = _padded(chunk + [[0] * width], pad)
    scores, cache = one_step(params, jnp.asarray(tokens[:-1]), cache, jnp.asarray(num_new[:-1]))
    assert np.all(scores[num_new[:-1] == 0] == 0)  # rows without a step add nothing
    for row, n in enumerate(num_new[:-1]):
      if n:
        incremental[row].append(float(scores[row, n - 1]))

  rows = [sum(steps, []) for steps in step_tokens]
  tokens, num_new = _padded(rows, pad)
  step_end = np.zeros(tokens.shape, bool)
  for row, steps in enumerate(step_tokens):
    step_end[row, np.cumsum([len(s) for s in steps]) - 1] = True
  all_steps = host_jit(adapter.wrap_prm_fn(inner, max_steps_per_chunk=3))
  scores, _ = all_steps(params, jnp.asarray(tokens), prefilled, jnp.asarray(num_new),
                        jnp.asarray(step_end))
  one_chunk = [list(scores[row][step_end[row]]) for row in range(len(rows))]
  assert np.all(scores[~step_end] == 0)

  for name, got in (("one step per call", incremental), ("all steps in one call", one_chunk)):
    error = max(np.abs(np.asarray(g) - np.asarray(w)).max() for g, w in zip(got, whole))
    print(f"{family} {name}: max |incremental - whole| = {error:.2e}")
    assert [len(g) for g in got] == [len(w) for w in whole], name
    assert error <= ATOL, f"{family} {name}: max abs diff {error:.2e}"

  # Too small a step bound is loud: the 3rd step of row 0 has no suffix and scores NaN.
  two_steps = host_jit(adapter.wrap_prm_fn(inner, max_steps_per_chunk=2))
  scores, _ = two_steps(params, jnp.asarray(tokens), prefilled, jnp.asarray(num_new),
                        jnp.asarray(step_end))
  row0 = scores[0][step_end[0]]
  assert np.isnan(row0[2]) and np.allclose(row0[:2], whole[0][:2], atol=ATOL, rtol=0)
  print(f"{family}: incremental test {time.time() - start:.1f}s")


@pytest.mark.parametrize("family, missing, message", [
    ("qwen_math_prm", "<extra_0>", r"step separator '<extra_0>'"),
    ("math_shepherd", "ки", r"step tag 'ки'"),
    ("rlhflow", "<|start_header_id|>", r"chat-template token '<\|start_header_id\|>'"),
])
def test_tokenizer_without_family_tokens(tmp_path, family, missing, message):
  path = str(tmp_path / family)
  _save_tokenizer(path, family, drop=(missing,))
  with pytest.raises(ValueError, match=message + r".*tokenizer files shipped with the PRM"):
    load_prm_adapter(path, family)


def test_missing_chat_template(tmp_path):
  path = str(tmp_path / "no_template")
  hf_models.save_bpe_tokenizer(path, CORPUS, special_tokens=FAMILIES["rlhflow"]["special"],
                               tokenizer_config=dict(eos_token="<|eot_id|>"))
  with pytest.raises(ValueError, match="no chat template"):
    load_prm_adapter(path, "rlhflow")


def test_sentencepiece_style_shepherd_layout(tmp_path):
  """Mistral's tokenizer (Math-Shepherd's) marks word starts with "▁": the tag and the
  labels are "▁ки", "▁+", "▁-" (the model card reads encode("+ -")[1:]), and the
  suffix has no stray "▁" although it is encoded on its own."""
  path = str(tmp_path / "sentencepiece")
  hf_models.save_bpe_tokenizer(path, CORPUS + ["ки + - ки"] * 3,
                               special_tokens=["<unk>", "<s>", "</s>"], bos_token="<s>",
                               tokenizer_config=dict(bos_token="<s>", eos_token="</s>"),
                               vocab_size=700, sentencepiece=True)
  adapter = load_prm_adapter(path, "math_shepherd")
  tok = transformers.PreTrainedTokenizerFast.from_pretrained(path)
  assert tok.convert_ids_to_tokens(list(adapter.suffix_ids)) == ["\u2581ки", "<0x0A>"]
  assert adapter.read_offset == 0
  assert [adapter.positive_token_id, adapter.negative_token_id] == tok.encode("+ -")[1:]
  steps = _official_steps()[0]
  ids, reads = adapter.layout(PROBLEMS[0], _policy_steps("math_shepherd")[0])
  whole = tok.encode(f"{PROBLEMS[0]} " + "".join(f"{s} ки\n" for s in steps))
  assert tok.decode(ids) == tok.decode(whole)
  # After the first step the pieces tokenize as the whole text does; at the problem /
  # first step boundary "▁" + "Step" stands for the whole text's "▁Step" (documented).
  first_tag = whole.index(adapter.suffix_ids[0])
  assert ids[reads[0]:] == whole[first_tag:]


def test_prm_config_must_match_family(prms):
  _, _, shepherd, shepherd_config, _ = prms("math_shepherd")
  _, _, qwen, qwen_config, _ = prms("qwen_math_prm")
  hash(shepherd), hash(qwen)  # frozen value objects (usable as static arguments)
  with pytest.raises(ValueError, match="load it with load_adapted_prm"):
    shepherd.check_prm_config(qwen_config)
  swapped = dataclasses.replace(shepherd_config, positive_token_id=shepherd.negative_token_id,
                                negative_token_id=shepherd.positive_token_id)
  with pytest.raises(ValueError, match="load it with load_adapted_prm"):
    shepherd.check_prm_config(swapped)
  with pytest.raises(ValueError, match="load it with load_adapted_prm"):
    qwen.check_prm_config(shepherd_config)
