"""Shared helpers for the tests: calling a generated module of any backend on numpy data."""

from __future__ import annotations

from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BACKENDS = ("numpy", "jax", "torch")
DTYPES = ("float32", "float64")
#: the generated modules' own imports, per backend (to run a lowering or a helper on its own)
NAMESPACES = {
    "numpy": "import numpy as np\nfrom scipy import special as _special",
    "jax": "import math\nimport jax\nimport jax.numpy as jnp\nimport jax.scipy.special",
    "torch": "import torch",
}


def spec_paths() -> list[Path]:
    return sorted((ROOT / "specs").glob("*.yaml"))
