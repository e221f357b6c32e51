"""MATH-500: Qwen2.5-Math-1.5B-Instruct searched with Qwen2.5-Math-PRM-7B (its value
head read at "<extra_0>" after each step), T = 0.8, top-p 1.0, N in 4..256, beam
width 4, 40 rounds, 2048 tokens.

Plan the memory first (no checkpoint needed; the shapes are presets):
  python -m experiments.memory_plan --config configs/math500/qwen_math1p5b_prm7b.py \
      --device_gb 80                                       # one 80 GB GPU
  python -m experiments.memory_plan --config configs/math500/qwen_math1p5b_prm7b.py \
      --device_gb 16 --data_shards 8 --model_shards 1      # TPU v5e-8, problems apart
  python -m experiments.memory_plan --config configs/math500/qwen_math1p5b_prm7b.py \
      --device_gb 16 --data_shards 2 --model_shards 4      # TPU v5e-8, weights split

Checkpoints are local Hugging Face directories; override the placeholders:
  --config.policy_dir=/data/Qwen2.5-Math-1.5B-Instruct --config.prm_dir=/data/Qwen2.5-Math-PRM-7B
Both use Qwen2.5's tokenizer, so the PRM scores inside the search
(`SearchRunner(..., prm_adapter=load_adapted_prm(prm_dir, "qwen_math_prm")[0])`).
"""

from configs.math500 import common

# Qwen2.5-Math-Instruct's chain-of-thought system prompt (its model card).
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def get_config(variant=None):
  return common.search_config(
      policy_dir="/ckpt/Qwen2.5-Math-1.5B-Instruct", policy_preset="qwen2.5-math-1.5b",
      prm_dir="/ckpt/Qwen2.5-Math-PRM-7B", prm_family="qwen_math_prm",
      system_prompt=SYSTEM_PROMPT, problems_per_batch=1, variant=variant)
