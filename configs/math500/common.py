"""Fields shared by the MATH-500 search configs (open policies and published PRMs).

Every path is local: checkpoints are directories in Hugging Face layout that the user
downloaded (the "/ckpt/..." placeholders are to be overridden), and `data_path` is
relative to the repository root unless absolute.
"""

import ml_collections

DATA_PATH = "../shared/data/math500_test.jsonl"


def search_config(*, policy_dir: str, policy_preset: str, prm_dir: str, prm_family: str,
                  system_prompt: str, problems_per_batch: int,
                  mesh: tuple[int, int] = (1, 1)) -> ml_collections.ConfigDict:
  """A MATH-500 search: sampling as Snell et al. / search-and-learn, caps, mesh.

  Args:
    policy_dir, prm_dir: local checkpoint directories (placeholders to override).
    policy_preset: the policy's shape in `ttcjax.models.config.PRESETS` (for planning
      memory without the checkpoint).
    prm_family: a `ttcjax.models.prm_adapters.ADAPTERS` family (its published shape in
      `ttcjax.memory_plan.PUBLISHED_PRMS`).
    system_prompt: the policy's system turn.
    problems_per_batch: problems per search call (a multiple of the data shards).
    mesh: (data, model) shards.
  """
  c = ml_collections.ConfigDict()
  c.policy_dir = policy_dir
  c.policy_preset = policy_preset
  c.prm_dir = prm_dir
  c.prm_family = prm_family
  c.data_path = DATA_PATH
  c.system_prompt = system_prompt
  c.seed = 0
  c.temperature = 0.8
  c.top_p = 1.0
  c.budgets = (4, 16, 64, 256)
  c.beam_width = 4
  c.strategies = ("best_of_n", "beam", "dvts")
  # Prompts: the longest MATH-500 problem is 1,733 characters (about 600 tokens) before
  # the chat template and system turn. Steps end at "\n\n" or 512 tokens; solutions at
  # 2048 tokens (search-and-learn's max_tokens); S = 40 score columns; 40 rounds.
  c.caps = dict(max_prompt_tokens=1024, max_prm_prompt_tokens=1024, max_step_tokens=512,
                max_solution_tokens=2048, max_steps=40, max_rounds=40)
  c.step_delimiter = "\n\n"
  c.dtype = "bfloat16"  # parameters and KV caches
  c.problems_per_batch = problems_per_batch
  c.mesh = dict(data=mesh[0], model=mesh[1])
  return c
