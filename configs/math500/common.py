"""Fields shared by the MATH-500 configs (open policies and published PRMs).

One config serves the sweep (`experiments.search`), the study (`experiments.reproduce`)
and the memory plan (`experiments.memory_plan`). Every path is local: checkpoints are
directories in Hugging Face layout that the user downloaded (the "/ckpt/..."
placeholders are to be overridden), and `data_path` is relative to the repository root
unless absolute.
"""

import ml_collections

from configs import study_analysis

DATA_PATH = "../shared/data/math500_test.jsonl"


def search_config(*, policy_dir: str, policy_preset: str, prm_dir: str, prm_family: str,
                  system_prompt: str, problems_per_batch: int,
                  mesh: tuple[int, int] = (1, 1),
                  variant: str | None = None) -> ml_collections.ConfigDict:
  """A MATH-500 study: sampling as Snell et al. / search-and-learn, caps, mesh.

  Args:
    policy_dir, prm_dir: local checkpoint directories (placeholders to override).
    policy_preset: the policy's shape in `ttcjax.models.config.PRESETS` (for planning
      memory without the checkpoint).
    prm_family: a `ttcjax.models.prm_adapters.ADAPTERS` family (its published shape in
      `ttcjax.sweep.memory_plan.PUBLISHED_PRMS`).
    system_prompt: the policy's system turn (None: ttcjax's default instruction).
    problems_per_batch: problems per search call (a multiple of the data shards).
    mesh: (data, model) shards.
    variant: None (the full size) or "quick" (20 problems, budgets 4 and 16).
  """
  c = ml_collections.ConfigDict()
  c.task = "math500"
  c.policy_dir = policy_dir
  c.policy_preset = policy_preset
  c.policy_eos_token = ml_collections.config_dict.placeholder(str)  # None: the tokenizer's
  c.prm_dir = prm_dir
  c.prm_family = prm_family
  c.data_path = DATA_PATH
  c.num_problems = ml_collections.config_dict.placeholder(int)  # None: every problem
  # The prompt: the policy's chat template (plain text without one), this system turn,
  # and few_shot worked examples (built in, or the first of few_shot_path's solutions;
  # Snell et al. used 4 from MATH's training split).
  c.system_prompt = system_prompt
  c.use_chat_template = True
  c.few_shot = 0
  c.few_shot_path = ml_collections.config_dict.placeholder(str)
  c.seeds = (0,)
  c.temperature = 0.8
  c.top_p = 1.0
  c.budgets = (4, 16, 64, 256)
  c.strategies = [
      dict(name="best_of_n", max_budget_only=True),
      dict(name="beam", beam_width=4, label="beam"),
      dict(name="dvts", beam_width=4, label="dvts"),
  ]
  # Prompts: the longest MATH-500 problem is 1,733 characters (about 600 tokens) before
  # the chat template and system turn. Steps end at "\n\n" or 512 tokens; solutions at
  # 2048 tokens (search-and-learn's max_tokens); S = 40 score columns; 40 rounds. The PRM
  # scores at most 8 rows per pass (best-of-N's whole-solution pass would otherwise
  # hold [N, heads, 2048, capacity] attention scores at once). Each problem's prompt
  # is cached once and read by its N rows (`SharedPrefixCache`): rows hold only what
  # they generate; a batch's prompts are padded to the shortest of 128/256/512/1024
  # tokens that holds them (`prompt_buckets`).
  c.caps = dict(max_prompt_tokens=1024, max_prm_prompt_tokens=1024, max_step_tokens=512,
                max_solution_tokens=2048, max_steps=40, max_rounds=40, prm_rows_per_pass=8,
                share_prompt_cache=True, prompt_buckets=True)
  c.step_delimiter = "\n\n"
  c.dtype = "bfloat16"  # parameters and KV caches
  c.problems_per_batch = problems_per_batch
  c.mesh = dict(data=mesh[0], model=mesh[1])
  # GiB per device for the memory check before a run, of which 90% is planned with (0:
  # what the accelerator reports; a CPU is not checked).
  c.device_gb = 0.0
  # The study (experiments.reproduce). The FLOPs-matched exchange runs against a larger
  # policy's greedy answers when large_policy_dir is set; pretraining_tokens is D_pretrain
  # of the pair.
  study_analysis.set_analysis_fields(c)
  c.large_policy_dir = ""
  c.pretraining_tokens = 0.0
  study_analysis.set_variant(c, variant, dict(num_problems=20, budgets=(4, 16),
                                               difficulty_samples=4, cv_repeats=10))
  return c
