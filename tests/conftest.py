"""Shared test settings.

float32 matmuls at full precision: a no-op on CPU, but on GPUs JAX's default may
use TF32 (about 1e-3 relative error), far looser than the 1e-5 the cache and
parity tests compare at.
"""

import jax

jax.config.update("jax_default_matmul_precision", "highest")
