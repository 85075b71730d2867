"""Shared helpers for the tests: calling a generated module of any backend on numpy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lossgen

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BACKENDS = ("numpy", "jax", "torch")
DTYPES = ("float32", "float64")


def spec_paths() -> list[Path]:
    return sorted((ROOT / "specs").glob("*.yaml"))


def to_backend(array, backend: str, dtype: str):
    array = np.asarray(array, dtype=dtype)
    if backend == "numpy":
        return array
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    import torch

    return torch.from_numpy(array.copy())


def to_numpy(result):
    if isinstance(result, tuple):
        return tuple(to_numpy(r) for r in result)
    if hasattr(result, "detach"):
        return result.detach().cpu().numpy()
    return np.asarray(result)


def call(module, function: str, spec: lossgen.Spec, columns: dict, backend: str, dtype: str, **extra):
    """Call ``module.function`` with grid columns: inputs positional, params by keyword as arrays."""
    inputs = [to_backend(columns[i.name], backend, dtype) for i in spec.inputs]
    params = {
        p.name: to_backend(columns[p.name], backend, dtype) for p in spec.params if p.name in columns
    }
    args = inputs + [to_backend(v, backend, dtype) for v in extra.get("positional", ())]
    return to_numpy(getattr(module, function)(*args, **params))
