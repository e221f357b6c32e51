"""Shared test settings.

float32 matmuls at full precision: a no-op on CPU, but on GPUs JAX's default may
use TF32 (about 1e-3 relative error), far looser than the 1e-5 the cache and
parity tests compare at.

XLA:CPU's backend optimisations off (`--xla_backend_optimization_level=0`, set
before the backend starts, so launchers the tests start inherit it; tests that set
XLA_FLAGS for a subprocess keep it): the suite's programs are compiled many times
and run briefly, so LLVM's optimisation passes cost more than they save. It changes the machine code, not
the HLO the tests check; benchmarks and experiments keep XLA's defaults.
"""

import os

import jax

_FLAG = "--xla_backend_optimization_level=0"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

jax.config.update("jax_default_matmul_precision", "highest")
