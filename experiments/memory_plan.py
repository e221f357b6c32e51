"""Prints the per-device memory a MATH-500 search config needs, and whether it fits.

  python -m experiments.memory_plan --config configs/math500/llama1b_rlhflow8b.py
  python -m experiments.memory_plan --config configs/math500/qwen_math1p5b_prm7b.py \
      --device_gb 16 --data_shards 2 --model_shards 4

One line per (strategy, budget): parameters, KV caches and the activation allowance
per device (`ttcjax.sweep.memory_plan`), whether the config's problems per call fit, and the
most that would. Models are the config's presets at its dtype; no checkpoint is read.
A device holds --device_gb GiB of which --usable_fraction is counted usable (XLA's
code and scratch, the runtime's reserve; on GPU raise XLA_PYTHON_CLIENT_MEM_FRACTION
from its default 0.75 to use that much).
"""

from absl import app, flags
from ml_collections import config_flags

from ttcjax.sweep import memory_plan
from ttcjax.models.config import get_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/math500 config file.")
_DEVICE_GB = flags.DEFINE_float("device_gb", 80.0, "Memory of one device, GiB.")
_USABLE = flags.DEFINE_float("usable_fraction", memory_plan.USABLE_FRACTION,
                             "Share of a device's memory to plan with.")
_DATA_SHARDS = flags.DEFINE_integer("data_shards", 0, "Data axis (0: the config's mesh).")
_MODEL_SHARDS = flags.DEFINE_integer("model_shards", 0, "Model axis (0: the config's mesh).")
flags.mark_flags_as_required(["config"])


def plans(config, data_shards: int, model_shards: int):
  """(strategy, budget, problems per call, plan) for every setting of the config."""
  policy = get_config(config.policy_preset, param_dtype=config.dtype, dtype=config.dtype)
  prm, suffix_length = memory_plan.published_prm(config.prm_family, config.dtype)
  problems = -(-config.problems_per_batch // data_shards) * data_shards  # whole problems per shard
  for spec in config.strategies:  # every budget: a study's difficulty stage runs best-of-N
    label = spec.get("label", spec["name"])
    for budget in config.budgets:
      yield label, budget, problems, memory_plan.plan_search_memory(
          policy, prm, strategy=spec["name"], budget=budget, problems_per_batch=problems,
          prm_suffix_length=suffix_length, lookahead_steps=spec.get("lookahead_steps", 0),
          data_shards=data_shards, model_shards=model_shards, **config.caps)


def main(argv):
  del argv
  config = _CONFIG.value
  data = _DATA_SHARDS.value or config.mesh.data
  model = _MODEL_SHARDS.value or config.mesh.model
  usable = int(_DEVICE_GB.value * memory_plan.GIB * _USABLE.value)
  gib = lambda x: f"{x / memory_plan.GIB:.2f}"
  print(f"{config.policy_preset} + {config.prm_family} PRM ({config.dtype}) on {data} (data) x "
        f"{model} (model) devices of {_DEVICE_GB.value:g} GiB, {gib(usable)} GiB usable; caps "
        f"{dict(config.caps)}")
  header = ("strategy", "N", "problems", "rows/dev", "params", "KV", "activations", "total GiB",
            "fits", "max problems")
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
  first_failure = {}
  for strategy, budget, problems, plan in plans(config, data, model):
    fits = plan.total <= usable
    if not fits:
      first_failure.setdefault(strategy, plan)
    most = memory_plan.max_problems_per_batch(plan, usable)
    print(f"| {strategy} | {budget} | {problems} | {plan.rows_per_device} | {gib(plan.params)} | "
          f"{gib(plan.kv)} | {gib(plan.activations)} ({plan.activation_pass}) | "
          f"{gib(plan.total)} | {'yes' if fits else 'NO'} | {most} |")
  for strategy, plan in first_failure.items():
    try:
      memory_plan.check_fits(plan, usable)
    except ValueError as err:
      print(f"\n{strategy}, N={plan.request['budget']}: {err}")


if __name__ == "__main__":
  app.run(main)
