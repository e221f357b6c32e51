"""Hugging Face import: logits, padded batches, greedy decoding and PRM scores match
transformers on tiny random models; malformed checkpoints fail with clear errors."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # pylint: disable=wrong-import-position

try:
  from tests import hf_models  # pylint: disable=wrong-import-position
except ImportError:
  import hf_models  # pylint: disable=wrong-import-position

from ttcjax.models.cache import KVCache  # pylint: disable=wrong-import-position
from ttcjax.models.hf_import import (load_hf_checkpoint, load_hf_config,  # pylint: disable=wrong-import-position
                                     load_hf_prm)
from ttcjax.models.prm import token_scores  # pylint: disable=wrong-import-position
from ttcjax.models.transformer import forward  # pylint: disable=wrong-import-position

torch.set_num_threads(2)

# float32 on both sides; the only differences are summation orders of the matmuls and
# softmaxes (~1e-7 relative per op, a few 1e-7 after the layers). Errors are measured
# relative to the largest |logit| (~3 here) because individual logits pass near zero,
# where an elementwise rtol is meaningless.
REL_TOL = 1e-4
PROMPT_LEN, NEW_TOKENS = 12, 32

_forward = jax.jit(forward, static_argnames=("config", "logits"))
_token_scores = jax.jit(token_scores, static_argnames=("config",))


def _rel_err(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _tokens(vocab: int, shape, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, vocab, size=shape).astype(np.int32)


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def lms(root):
  """arch -> (checkpoint dir, torch model, ttcjax config, ttcjax params)."""
  out = {}
  for arch in hf_models.ARCHS:
    path = str(root / arch)
    model = hf_models.save_causal_lm(arch, path)
    config, params = load_hf_checkpoint(path)
    out[arch] = (path, model, config, params)
  return out


def test_config_mapping(lms):
  llama = lms["llama"][2]
  assert llama.rope_scaling is not None and llama.rope_scaling.rope_type == "llama3"
  assert (llama.rope_scaling.factor, llama.rope_scaling.low_freq_factor,
          llama.rope_scaling.high_freq_factor,
          llama.rope_scaling.original_max_position_embeddings) == (8.0, 1.0, 4.0, 64)
  assert (llama.num_heads, llama.num_kv_heads, llama.attention_bias) == (4, 2, False)
  qwen = lms["qwen2"][2]
  assert qwen.attention_bias and qwen.tie_word_embeddings and qwen.rope_theta == 1e6
  assert "lm_head" not in lms["qwen2"][3]
  mistral = lms["mistral"][2]
  assert (mistral.sliding_window, mistral.head_dim) == (16, 24)
  assert all(c.param_dtype == "float32" for _, _, c, _ in lms.values())


@pytest.mark.parametrize("arch", hf_models.ARCHS)
def test_logits_match_transformers(lms, arch):
  _, model, config, params = lms[arch]
  tokens = _tokens(config.vocab_size, (2, 24))
  ours = _forward(params, config=config, tokens=jnp.asarray(tokens)).logits
  err = _rel_err(ours, _torch_logits(model, tokens))
  print(f"{arch}: max |logit error| / max |logit| = {err:.2e}")
  assert err <= REL_TOL


def test_parity_test_is_sensitive(lms):
  """Dropping llama3 rope scaling or Mistral's window changes logits far beyond REL_TOL."""
  tokens = _tokens(256, (2, 24)) % 128
  for arch, change in (("llama", {"rope_scaling": None}), ("mistral", {"sliding_window": None})):
    _, model, config, params = lms[arch]
    wrong = _forward(params, config=config.replace(**change), tokens=jnp.asarray(tokens)).logits
    assert _rel_err(wrong, _torch_logits(model, tokens)) > 100 * REL_TOL, arch


@pytest.mark.parametrize("arch", hf_models.ARCHS)
def test_padded_batch_matches_rows_alone(lms, arch):
  _, model, config, params = lms[arch]
  lengths = np.array([24, 13, 5], np.int32)
  tokens = _tokens(config.vocab_size, (3, 24), seed=1)
  for row, n in enumerate(lengths):
    tokens[row, n:] = 0  # right padding
  ours = np.asarray(_forward(params, config=config, tokens=jnp.asarray(tokens),
                             num_new=jnp.asarray(lengths)).logits)
  for row, n in enumerate(lengths):
    theirs = _torch_logits(model, tokens[row:row + 1, :n])[0]
    assert _rel_err(ours[row, :n], theirs) <= REL_TOL, (arch, row)


def _greedy(params, config, prompts: np.ndarray, lengths: np.ndarray, steps: int) -> np.ndarray:
  cache = KVCache.init(config, prompts.shape[0], prompts.shape[1] + steps)
  out = _forward(params, config=config, tokens=jnp.asarray(prompts), cache=cache,
                 num_new=jnp.asarray(lengths), logits="last")
  generated = []
  for step in range(steps):
    token = jnp.argmax(out.logits, axis=-1).astype(jnp.int32)
    generated.append(token)
    if step + 1 < steps:
      out = _forward(params, config=config, tokens=token[:, None], cache=out.cache,
                     logits="last")
  return np.stack([np.asarray(t) for t in generated], axis=1)


@pytest.mark.parametrize("arch", hf_models.ARCHS)
def test_greedy_decoding_matches_generate(lms, arch):
  """Prompts of different lengths share one right-padded prefill; 32 steps each.

  Rows reach 39 and 44 tokens, well past Mistral's 16-token window, so the window
  is exercised in the cache path too (llama3 rope scaling changes every position).
  """
  _, model, config, params = lms[arch]
  lengths = np.array([PROMPT_LEN, 7], np.int32)
  # Seed 8 gives varied continuations (random tiny models tend to fall into loops).
  prompts = _tokens(config.vocab_size, (2, PROMPT_LEN), seed=8)
  prompts[1, lengths[1]:] = 0
  ours = _greedy(params, config, prompts, lengths, NEW_TOKENS)
  assert model.generation_config.eos_token_id is None  # generate cannot stop early
  for row, n in enumerate(lengths):
    with torch.no_grad():
      theirs = model.generate(
          torch.tensor(prompts[row:row + 1, :n], dtype=torch.long),
          attention_mask=torch.ones((1, int(n)), dtype=torch.long), do_sample=False,
          max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, eos_token_id=None,
          pad_token_id=0)[0, n:].numpy()
    assert theirs.shape == (NEW_TOKENS,)
    assert len(set(theirs.tolist())) >= 5, "degenerate continuation: the test would be weak"
    np.testing.assert_array_equal(ours[row], theirs, err_msg=f"{arch} row {row}")


def test_sharded_checkpoint_loads_identically(lms, root):
  path, model, config, params = lms["llama"]
  sharded = str(root / "llama_sharded")
  hf_models.save_model(model, sharded, max_shard_size="40KB")
  shards = [f for f in os.listdir(sharded) if f.endswith(".safetensors")]
  assert len(shards) > 1 and os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
  config2, params2 = load_hf_checkpoint(sharded)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  assert not os.path.exists(os.path.join(path, "model.safetensors.index.json"))


def test_bf16_checkpoint(lms, root):
  _, model, config, _ = lms["qwen2"]
  path = str(root / "qwen2_bf16")
  hf_models.save_model(model, path, dtype=torch.bfloat16)
  config16, params16 = load_hf_checkpoint(path)
  assert config16.param_dtype == "bfloat16" and config16.dtype == "bfloat16"
  assert config16.replace(param_dtype="float32", dtype="float32") == config
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params16))
  # Bit-exact: the bf16 values torch wrote are the ones we read.
  want = model.model.layers[0].self_attn.q_proj.weight.detach().bfloat16().float().numpy().T
  got = np.asarray(params16["layers_0"]["self_attn"]["q_proj"]["kernel"], np.float32)
  np.testing.assert_array_equal(got, want)
  config32, params32 = load_hf_checkpoint(path, dtype="float32")
  assert config32 == config
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params32))
  # A bf16 forward stays close to the float32 model (loose: bf16 weights and activations).
  tokens = _tokens(config.vocab_size, (1, 16), seed=3)
  ours = _forward(params16, config=config16, tokens=jnp.asarray(tokens)).logits
  assert _rel_err(ours, _torch_logits(model, tokens)) < 0.05


def test_value_prm_matches_torch(root):
  path = str(root / "qwen2_prm")
  prm = hf_models.save_qwen2_prm(path, seed=4)
  config, params = load_hf_prm(path)
  assert (config.kind, config.num_labels, config.head_hidden) == ("value", 2, 64)
  assert set(params) == {"backbone", "head"}
  tokens = _tokens(config.backbone.vocab_size, (2, 24), seed=5)
  ours, _ = _token_scores(params, config=config, tokens=jnp.asarray(tokens))
  with torch.no_grad():
    theirs = prm.probabilities(torch.tensor(tokens, dtype=torch.long)).numpy()
  print(f"value PRM: max |score error| = {np.abs(np.asarray(ours) - theirs).max():.2e}")
  assert theirs.std() > 1e-2  # the head is not constant, so the comparison means something
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_token_logit_prm_matches_torch(lms, arch):
  path, model, _, _ = lms[arch]
  plus, minus = 5, 7
  config, params = load_hf_prm(path, positive_token_id=plus, negative_token_id=minus)
  assert config.kind == "token_logit" and set(params) == {"backbone"}
  tokens = _tokens(config.backbone.vocab_size, (2, 24), seed=6)
  ours, _ = _token_scores(params, config=config, tokens=jnp.asarray(tokens))
  logits = torch.tensor(_torch_logits(model, tokens))
  theirs = torch.sigmoid(logits[..., plus] - logits[..., minus]).numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------- bad input


def _copy(lms, root, name: str, arch: str = "llama") -> str:
  dst = str(root / name)
  shutil.copytree(lms[arch][0], dst)
  return dst


def _edit_config(path: str, **changes) -> None:
  file = os.path.join(path, "config.json")
  with open(file) as f:
    hf = json.load(f)
  hf.update(changes)
  with open(file, "w") as f:
    json.dump(hf, f)


def _edit_weights(path: str, edit) -> None:
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  edit(tensors)
  save_file(tensors, file, metadata={"format": "pt"})


def test_unsupported_architecture(lms, root):
  path = _copy(lms, root, "gpt2")
  _edit_config(path, architectures=["GPT2LMHeadModel"])
  with pytest.raises(ValueError, match=r"Unsupported architecture.*GPT2LMHeadModel"):
    load_hf_checkpoint(path)


def test_missing_tensor(lms, root):
  path = _copy(lms, root, "missing_tensor")
  _edit_weights(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
    load_hf_checkpoint(path)


def test_unexpected_tensor(lms, root):
  path = _copy(lms, root, "extra_tensor")
  # Rotary buffers (stored by old checkpoints) are recomputed, so they are skipped.
  _edit_weights(path, lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}))
  load_hf_checkpoint(path)
  _edit_weights(path, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(16)}))
  with pytest.raises(ValueError, match=r"does not use.*q_norm"):
    load_hf_checkpoint(path)


def test_shape_mismatch(lms, root):
  path = _copy(lms, root, "bad_shape")
  _edit_config(path, intermediate_size=100)
  with pytest.raises(ValueError, match=r"down_proj\.weight' has shape \(64, 96\).*implies \(64, 100\)"):
    load_hf_checkpoint(path)


def test_missing_shard(lms, root):
  path = str(root / "llama_missing_shard")
  hf_models.save_model(lms["llama"][1], path, max_shard_size="40KB")
  with open(os.path.join(path, "model.safetensors.index.json")) as f:
    shard = sorted(set(json.load(f)["weight_map"].values()))[-1]
  os.remove(os.path.join(path, shard))
  with pytest.raises(ValueError, match=shard.replace(".", r"\.")):
    load_hf_checkpoint(path)


def test_unsupported_config_features(lms, root):
  path = _copy(lms, root, "yarn")
  _edit_config(path, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4})
  with pytest.raises(ValueError, match="yarn"):
    load_hf_config(path)
  path = _copy(lms, root, "qwen_window", arch="qwen2")
  _edit_config(path, use_sliding_window=True, sliding_window=8)
  with pytest.raises(ValueError, match="sliding-window"):
    load_hf_config(path)
  with pytest.raises(ValueError, match="positive_token_id"):
    load_hf_prm(lms["llama"][0])
  with pytest.raises(ValueError, match="No config.json"):
    load_hf_config(str(root / "does_not_exist"))


def test_rope_theta_formats(lms, root):
  """transformers 4 writes rope_theta / rope_scaling at top level, 5 nests rope_parameters."""
  path = _copy(lms, root, "tf4_config")
  with open(os.path.join(path, "config.json")) as f:
    hf = json.load(f)
  params = hf.pop("rope_parameters")
  hf["rope_theta"] = params.pop("rope_theta")
  hf["rope_scaling"] = dict(params, rope_type=None, type=params["rope_type"])
  hf["torch_dtype"] = hf.pop("dtype")
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f)
  assert load_hf_config(path) == lms["llama"][2]
