"""Shared helpers for the tests: calling a generated module of any backend on numpy data."""

from __future__ import annotations

from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
BACKENDS = ("numpy", "jax", "torch")
DTYPES = ("float32", "float64")


def spec_paths() -> list[Path]:
    return sorted((ROOT / "specs").glob("*.yaml"))
