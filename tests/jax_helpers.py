"""Helpers shared by the JAX tests: fast-compiling jit, random parameter trees."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

# The test programs are tiny, so compiling dominates their cost; XLA's backend
# optimisation level 0 roughly halves it (results are the same computation).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def host_jit(fn=None, **jit_kwargs):
  """jax.jit whose results come back as numpy (no eager op compiles in the asserts)."""
  if fn is None:
    return functools.partial(host_jit, **jit_kwargs)
  jitted = jax.jit(fn, compiler_options=FAST_COMPILE, **jit_kwargs)
  return functools.wraps(fn)(lambda *args, **kwargs: jax.device_get(jitted(*args, **kwargs)))


def random_tree(init_fn, seed: int, std: float = 0.2):
  """A parameter tree shaped like init_fn(key)'s, redrawn from numpy (no per-op compiles).

  Norm weights are drawn around 1, everything else around 0, so that a wrongly
  wired norm or bias shows in the outputs.
  """
  shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    is_norm = jax.tree_util.keystr(path).endswith("['weight']")
    value = (1.0 if is_norm else 0.0) + std * rng.standard_normal(leaf.shape)
    return jnp.asarray(value.astype(leaf.dtype))

  return jax.tree_util.tree_map_with_path(draw, shapes)
