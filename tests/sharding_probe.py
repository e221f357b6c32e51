"""Runs one beam search unsharded and on an 8-device CPU mesh; prints the differences,
and how a cache written under the 4 x 2 mesh is laid out.

Run as a subprocess (the device count must be set before JAX starts):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.sharding_probe
"""

import json

import jax
import numpy as np

from ttcjax import parallel
from ttcjax.models.cache import KVCache, map_rows
from ttcjax.models.config import TransformerConfig
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.transformer import forward, init_params
from ttcjax.sweep.runner import SearchRunner
from ttcjax.tasks.arith import arithmetic, testbed


def main():
  config = TransformerConfig(vocab_size=testbed.tokenizer().vocab_size, hidden_size=32,
                             num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32,
                             max_position_embeddings=128)
  prm = PrmConfig(config, head_hidden=8)
  models = ((config, init_params(config, jax.random.PRNGKey(0))),
            (prm, init_prm_params(prm, jax.random.PRNGKey(1))))
  problems = testbed.evaluation_problems(1)[:8]
  caps = dict(max_prompt_tokens=32, max_step_tokens=8, max_solution_tokens=24, max_steps=4,
              max_rounds=3)
  answer = lambda text: arithmetic.canonical_answer(arithmetic.extract_answer(text))
  results = {}
  for name, mesh in (("single", None), ("data8", parallel.make_mesh(data=8)),
                     ("data4_model2", parallel.make_mesh(data=4, model=2))):
    runner = SearchRunner(*models, testbed.tokenizer(), answer, mesh=mesh, **caps)
    results[name] = runner.search("beam", [p.prompt for p in problems], list(range(8)), budget=4,
                                  rng=jax.random.PRNGKey(3), beam_width=2)
  base = results["single"]
  report = {"devices": jax.device_count()}
  for name in ("data8", "data4_model2"):
    other = results[name]
    report[name] = {
        "texts_equal": other.texts == base.texts,
        "max_score_diff": float(np.abs(other.step_scores - base.step_scores).max()),
    }
  mesh = parallel.make_mesh(data=4, model=2)
  cache = parallel.shard_caches(KVCache.init(config, 8, 16), mesh)
  tokens = parallel.shard_batch(np.ones((8, 4), np.int32), mesh)

  @jax.jit
  def write(params, tokens, cache):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      cache = forward(params, config, tokens, cache, logits="none").cache
      return map_rows(lambda x: x[::-1], cache)  # a fork: rows swapped within the batch
  written = write(parallel.shard_params(models[0][1], mesh), tokens, cache)
  report["cache_spec"] = {"placed": str(cache.keys[0].sharding.spec),
                          "written": str(written.keys[0].sharding.spec)}
  print(json.dumps(report))


if __name__ == "__main__":
  main()
