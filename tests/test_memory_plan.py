"""The memory plan: every part against numbers computed by hand, and clear refusals."""

import pytest

from ttcjax.sweep import memory_plan
from ttcjax.models.cache import KVCache
from ttcjax.models.config import get_config
from ttcjax.models.prm import PrmConfig

# "tiny": vocab 64, hidden 32, 2 layers, 4 heads, 2 KV heads (head_dim 8),
# intermediate 48, untied, float32.
TINY = get_config("tiny")
TINY_PRM = PrmConfig(TINY, kind="value", num_labels=1, head_hidden=8)
CAPS = dict(max_prompt_tokens=16, max_step_tokens=8, max_solution_tokens=32, max_steps=4,
            max_rounds=6)
# Per layer: q, o 32x32 + k, v 32x16 + MLP 3 x 32x48 + two norms of 32 = 7744;
# x 2 layers + embedding 64x32 + output head 64x32 + final norm 32 = 19616.
POLICY_BYTES = 19616 * 4
# The value PRM never builds the output head (-2048) and adds 32x8 + 8 + 8x1 + 1 = 273.
PRM_BYTES = (19616 - 2048 + 273) * 4
KV_ROW = 2 * 2 * 2 * 8 * 49 * 4  # layers x (k, v) x kv heads x head_dim x (16 + 32 + 1) x 4


def plan(**changes):
  args = dict(strategy="beam", budget=8, problems_per_batch=4, data_shards=2, **CAPS)
  args.update(changes)
  return memory_plan.plan_search_memory(TINY, TINY_PRM, **args)


def test_beam_plan_by_hand():
  p = plan()
  assert (p.policy_params, p.prm_params) == (POLICY_BYTES, PRM_BYTES)
  assert TINY.num_params * 4 == POLICY_BYTES and TINY_PRM.num_params * 4 == PRM_BYTES
  # 4 problems over 2 data shards: 2 per device, 16 rows, and the batch's 2 empty rows
  # stay alive: 18 rows of each model; a fork holds the larger model's 16 rows twice
  # (here the two are the same size).
  assert (p.rows_per_device, p.policy_capacity, p.prm_capacity, p.kv_copies) == (16, 49, 49, 2)
  assert p.policy_kv == p.prm_kv == 18 * KV_ROW == 225_792
  assert p.kv_extra == 16 * KV_ROW and p.kv == 52 * KV_ROW
  assert p.kv_row_bytes == 3 * KV_ROW
  # The largest pass: the PRM's 8-token step on 16 rows: float32 scores 16x4x8x49x4,
  # MLP 16x8x48x3x4, hidden 16x8x32x4x4.
  assert p.activation_pass == "PRM chunk of 8 tokens"
  assert p.activations == 100_352 + 73_728 + 65_536
  assert p.total == POLICY_BYTES + PRM_BYTES + 52 * KV_ROW + 239_616 == 1_041_732
  assert "rows per device" in p.describe() and "total" in p.describe()


def test_kv_rows_are_what_a_cache_allocates():
  assert KVCache.init(TINY, 3, 49).num_bytes == 3 * memory_plan.kv_bytes_per_row(TINY, 49)
  bf16 = TINY.replace(dtype="bfloat16")
  assert KVCache.init(bf16, 3, 49).num_bytes == 3 * memory_plan.kv_bytes_per_row(bf16, 49)


def test_model_shards_split_kv_heads_where_they_divide():
  config = TINY  # 2 KV heads
  whole = memory_plan.kv_bytes_per_row(config, 49)
  assert memory_plan.kv_bytes_per_row(config, 49, model_shards=2) == whole // 2
  assert memory_plan.kv_bytes_per_row(config, 49, model_shards=4) == whole  # replicated


def test_best_of_n_with_a_prm_adapter_by_hand():
  p = plan(strategy="best_of_n", budget=4, problems_per_batch=2, data_shards=1,
           max_prm_prompt_tokens=24, prm_suffix_length=3)
  # The PRM's cache: its prompt 24 + 32 + 1, and 3 suffix slots for each of S = 4 steps.
  assert (p.policy_capacity, p.prm_capacity, p.kv_copies, p.rows_per_device) == (49, 69, 1, 8)
  assert p.policy_kv == 10 * KV_ROW == 125_440
  assert p.prm_kv == 10 * (2 * 2 * 2 * 8 * 69 * 4) == 176_640
  assert p.kv_extra == 0  # dense rows: both models' caches may be live at once
  shared = plan(strategy="best_of_n", budget=4, problems_per_batch=2, data_shards=1,
                max_prm_prompt_tokens=24, prm_suffix_length=3, share_prompt_cache=True)
  # Shared prompts: the PRM's rows are made after sampling, when the policy's are dead.
  assert shared.kv_extra == -8 * (KV_ROW // 49 * 33)
  # One PRM pass over the whole solution and S suffixes: 32 + 4 x 3 = 44 tokens.
  assert p.activation_pass == "PRM chunk of 44 tokens"
  assert p.activations == 8 * 4 * 44 * 69 * 4 + 8 * 44 * 48 * 12 + 8 * 44 * 32 * 16 == 771_584


def test_lookahead_chunk_and_bfloat16():
  p = plan(strategy="lookahead", lookahead_steps=2, prm_suffix_length=3,
           max_prm_prompt_tokens=16)
  # Suffix slots: one per round (6) plus the rollout's 2; the rollout's chunk: 2 steps
  # and 2 suffixes.
  assert p.prm_capacity == 49 + 3 * 8 and p.activation_pass == "PRM chunk of 22 tokens"
  bf16 = memory_plan.plan_search_memory(
      TINY.replace(param_dtype="bfloat16", dtype="bfloat16"),
      PrmConfig(TINY.replace(param_dtype="bfloat16", dtype="bfloat16"), head_hidden=8),
      strategy="beam", budget=8, problems_per_batch=4, data_shards=2, **CAPS)
  assert bf16.policy_params == POLICY_BYTES // 2 and bf16.policy_kv == 18 * KV_ROW // 2
  # bfloat16 probabilities beside the float32 scores: 6 bytes per score.
  assert bf16.activations == 16 * 4 * 8 * 49 * 6 + 73_728 // 2 + 65_536 // 2


def test_shared_prompts_by_hand():
  p = plan(share_prompt_cache=True)
  # Rows hold 32 + 1 slots; the 16-slot prompts of the 2 problems sit twice (the empty
  # argument and the filled cache).
  row, prompt = KV_ROW // 49 * 33, KV_ROW // 49 * 16
  assert p.policy_kv == p.prm_kv == 16 * row + 4 * prompt
  assert p.kv_extra == 16 * row and p.kv_row_bytes == 3 * row
  assert p.policy_capacity == 49  # positions a row reaches, the prompt's included


def test_paged_rows_by_hand():
  """Rows in pages of 16: a row's pool share is its table (33 own slots -> 3 pages) plus
  one page, and a fork copies no cache."""
  p = plan(share_prompt_cache=True, kv_page_size=16)
  row, prompt = KV_ROW // 49 * 64, KV_ROW // 49 * 16
  assert p.policy_kv == p.prm_kv == 16 * row + 4 * prompt
  assert p.kv_extra == 0 and p.kv_copies == 1 and p.kv_row_bytes == 2 * row
  with pytest.raises(ValueError, match="share_prompt_cache"):
    plan(kv_page_size=16)


def test_model_shards_split_matrices_and_kv_heads():
  p = plan(model_shards=2)
  # Every matrix has an even dimension; the five norm vectors (160) stay whole.
  assert p.policy_params == ((19616 - 160) // 2 + 160) * 4
  # PRM: backbone matrices 17408 / 2, norms 160, head kernels (32x8, 8x1) / 2, biases 9.
  assert p.prm_params == (17408 // 2 + 160 + 264 // 2 + 9) * 4
  assert 2 * p.kv == plan().kv  # caches split their 2 KV heads over the model axis
  assert plan(model_shards=4).kv == plan().kv  # 4 does not divide them: replicated


def test_published_prm_shapes():
  config, suffix = memory_plan.published_prm("qwen_math_prm")
  assert suffix == 1 and config.kind == "value" and config.num_labels == 2
  # Qwen2.5-Math-7B's 7,615,616,512 without its output head (152064 x 3584), plus the
  # Linear(3584, 3584) -> Linear(3584, 2) head.
  assert config.num_params == 7_615_616_512 - 152064 * 3584 + 3584 * 3584 + 3584 + 3584 * 2 + 2
  rlhflow, suffix = memory_plan.published_prm("rlhflow")
  assert suffix == 11 and rlhflow.backbone.num_params == 8_030_261_248
  with pytest.raises(ValueError, match="No published shape"):
    memory_plan.published_prm("orm")


def test_check_fits_and_its_suggestions():
  p = plan()
  assert memory_plan.check_fits(p, p.total) is p
  # Half the problems fit: the message says which parts and how many problems.
  with pytest.raises(ValueError, match=r"KV caches.*problems_per_batch=2 fits"):
    memory_plan.check_fits(p, plan(problems_per_batch=2).total)
  assert memory_plan.max_problems_per_batch(p, plan(problems_per_batch=2).total + 1) == 2
  # float32 models are told about bfloat16.
  with pytest.raises(ValueError, match="bfloat16"):
    memory_plan.check_fits(p, plan(problems_per_batch=2).total)
  # One problem per device does not fit: a smaller budget does.
  one = plan(problems_per_batch=2)
  with pytest.raises(ValueError, match=r"its 8 rows stay on one device.*budget of at most 4 fits"):
    memory_plan.check_fits(one, plan(problems_per_batch=2, budget=4).total)
  # The parameters alone do not fit: model shards.
  with pytest.raises(ValueError, match="model_shards=2 or more"):
    memory_plan.check_fits(p, POLICY_BYTES + PRM_BYTES - 1)


def test_bad_requests_are_refused():
  with pytest.raises(ValueError, match="multiple of data_shards"):
    plan(problems_per_batch=3)
  with pytest.raises(ValueError, match="budget must be positive"):
    plan(budget=0)


def test_launcher_prints_the_plan_of_a_math500_config():
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, "-m", "experiments.memory_plan",
       "--config", "configs/math500/qwen_math1p5b_prm7b.py", "--device_gb", "80"],
      cwd=root, capture_output=True, text=True, timeout=300, check=True).stdout
  # Qwen2.5-Math-1.5B + PRM-7B in bfloat16: 16.07 GiB of parameters on one device.
  assert "| beam | 64 | 1 | 64 | 16.07 |" in out and "| yes |" in out
  assert "| best_of_n | 256 | 1 | 256 | 16.07 |" in out  # fits: prompts shared, 8 PRM rows a pass
  assert "beam, N=256: The search needs" in out  # the first setting that does not fit


@pytest.mark.parametrize("strategy,shared,page_size", [("best_of_n", True, 0), ("beam", True, 0),
                                                       ("beam", True, 16)])
def test_plan_against_xla_on_a_small_config(strategy, shared, page_size):
  """The plan's total and its cost per row against XLA's compiled memory (arguments +
  temporaries) of the real search code, compiled for the CPU without allocating."""
  from experiments.memory_check import compile_search
  config = get_config("tiny", hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=32,
                      intermediate_size=128, num_layers=4, vocab_size=512)
  prm = PrmConfig(config, kind="value", num_labels=1, head_hidden=16)
  caps = dict(max_prompt_tokens=64, max_prm_prompt_tokens=64, max_step_tokens=32,
              max_solution_tokens=256, max_steps=8, max_rounds=8, prm_rows_per_pass=8)
  xla, plans = {}, {}
  for budget in (16, 64):
    analysis = compile_search(config, prm, 0, strategy, budget, 1, caps, shared, page_size)[0]
    xla[budget] = analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
    plans[budget] = memory_plan.plan_search_memory(
        config, prm, strategy=strategy, budget=budget, problems_per_batch=1,
        share_prompt_cache=shared, kv_page_size=page_size, **caps)
  for budget in (16, 64):
    assert 0.85 <= plans[budget].total / xla[budget] <= 1.15, (budget, plans[budget].total,
                                                              xla[budget])
  per_row = (xla[64] - xla[16]) / 48
  assert 0.85 <= plans[64].kv_row_bytes / per_row <= 1.15, (plans[64].kv_row_bytes, per_row)
