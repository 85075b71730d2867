import os

# Deterministic, CPU-only, float64-capable JAX for the whole suite.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
