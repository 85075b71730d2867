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


def beyond_bound(looser: dict, key: tuple, default: float) -> float:
    """The per-point bound (bits beyond conditioning) for one (loss, backend, dtype) cell.

    ``looser`` holds the cells known to miss the project's bound at a few points, each with the
    bits it does reach and the measured cause; every other point of such a cell still has to meet
    the looser figure, and `assert_looser_still_needed` fails once the cell meets the default.
    """
    entry = looser.get(key)
    return default if entry is None else entry[0]


def numpy_has_avx512() -> bool:
    """Whether numpy dispatches its float32 exp/log to the AVX-512 kernels on this CPU.

    Those kernels and the AVX2 ones round differently by an ulp here and there, so a cell
    that cancels at a point can miss the bound on one CPU and meet it on another.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512F"))


def assert_looser_still_needed(looser: dict, key: tuple, default: float, worst: float) -> None:
    """Fail once a LOOSER cell meets the default bound.

    An entry may carry a third item, a function saying whether the excess shows on this machine
    (e.g. `numpy_has_avx512`); where it says no, the cell is held to the looser bound only.
    """
    entry = looser.get(key)
    if entry is None or (len(entry) > 2 and not entry[2]()):
        return
    assert worst > default, (
        f"{key} is now within {default} bits beyond conditioning (worst {worst:.1f}): "
        "drop it from the test's LOOSER table"
    )
