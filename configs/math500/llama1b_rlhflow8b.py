"""MATH-500: Llama-3.2-1B-Instruct searched with RLHFlow's Llama3.1-8B-PRM-Deepseek-Data,
the setup of Hugging Face's search-and-learn (its system prompt, T = 0.8, top-p 1.0,
N in 4..256, beam width 4, 40 rounds, 2048 tokens).

Plan the memory first (no checkpoint needed; the shapes are presets):
  python -m experiments.memory_plan --config configs/math500/llama1b_rlhflow8b.py \
      --device_gb 80                                       # one 80 GB GPU
  python -m experiments.memory_plan --config configs/math500/llama1b_rlhflow8b.py \
      --device_gb 16 --data_shards 8 --model_shards 1      # TPU v5e-8, problems apart
  python -m experiments.memory_plan --config configs/math500/llama1b_rlhflow8b.py \
      --device_gb 16 --data_shards 2 --model_shards 4      # TPU v5e-8, weights split

Checkpoints are local Hugging Face directories; override the placeholders:
  --config.policy_dir=/data/Llama-3.2-1B-Instruct \
  --config.prm_dir=/data/Llama3.1-8B-PRM-Deepseek-Data
Both use Llama 3's tokenizer, so the PRM scores inside the search
(`SearchRunner(..., prm_adapter=load_adapted_prm(prm_dir, "rlhflow")[0])`).
"""

from configs.math500 import common

# search-and-learn's system prompt for Llama 3.2 Instruct (recipes/*.yaml).
SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\n"
    "Provide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\n"
    "Use this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n"
    "[Brief explanation and calculations]\n\n"
    "...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem.")


def get_config(variant=None):
  return common.search_config(
      policy_dir="/ckpt/Llama-3.2-1B-Instruct", policy_preset="llama-3.2-1b",
      prm_dir="/ckpt/Llama3.1-8B-PRM-Deepseek-Data", prm_family="rlhflow",
      system_prompt=SYSTEM_PROMPT, problems_per_batch=1, variant=variant)
