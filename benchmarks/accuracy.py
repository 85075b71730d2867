"""Accuracy benchmark: every spec on its extreme grid, lossgen's generated code beside the
textbook formula autodiffed in torch and jax and beside the libraries people use.

Prints, per spec x implementation x dtype x output: mean and max bits of error, max bits beyond
conditioning, and the count of NaN/Inf where the rounded truth is finite. Run: `make report`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import lossgen  # noqa: E402
from lossgen._accuracy import autodiff_outputs, generated_outputs, grade, naive_function  # noqa: E402
from lossgen._fixtures import load_fixture  # noqa: E402


def _library_rows(spec):
    """Library implementations of the same loss, where the library is installed."""
    rows = {}
    if spec.name in ("sigmoid_focal_loss", "bce_with_logits"):
        try:
            import torch
            import torch.nn.functional as F

            if spec.name == "sigmoid_focal_loss":

                def torchvision_focal(x, y, alpha, gamma):
                    # torchvision.ops.sigmoid_focal_loss, formula as published there
                    p = torch.sigmoid(x)
                    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
                    p_t = p * y + (1 - p) * (1 - y)
                    loss = ce * ((1 - p_t) ** gamma)
                    return (alpha * y + (1 - alpha) * (1 - y)) * loss

                rows["torchvision formula (torch)"] = ("torch", torchvision_focal)
            else:

                def torch_bce(x, y, pos_weight):
                    return F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction="none")

                rows["F.binary_cross_entropy_with_logits"] = ("torch", torch_bce)
        except ImportError:
            print(f"  (torch not installed: no torch library row for {spec.name})")
        try:
            import optax

            if spec.name == "sigmoid_focal_loss":
                rows[f"optax {optax.__version__} sigmoid_focal_loss"] = (
                    "jax", lambda x, y, alpha, gamma: optax.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma)
                )
        except ImportError:
            print(f"  (optax not installed: no optax row for {spec.name})")
    return rows


def _print_rows(name, grades):
    for g in grades:
        s = g.summary
        print(
            f"  {name:<44} {g.dtype:<8} {g.output:<6} {s.mean_bits:8.2f} {s.max_bits:8.1f} "
            f"{s.max_beyond:8.1f} {s.nonfinite:6d}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="spec names (default: all)")
    parser.add_argument("--grid", default="extreme", help="fixture grid (default: extreme)")
    args = parser.parse_args(argv)
    specs = lossgen.load_specs(sorted((ROOT / "specs").glob("*.yaml")))
    if args.names:
        specs = [s for s in specs if s.name in args.names]
    header = f"  {'implementation':<44} {'dtype':<8} {'output':<6} {'mean':>8} {'max':>8} {'beyond':>8} {'NaN':>6}"
    for spec in specs:
        fixture = load_fixture(ROOT / "tests" / "fixtures", spec.name, args.grid)
        if fixture is None:
            print(f"{spec.name}: no {args.grid} fixture; run `make fixtures`")
            continue
        n = len(next(iter(fixture["columns"].values())))
        print(f"\n{spec.name} ({args.grid} grid, {n} points; bits of error, float64 and float32)")
        print(header)
        rows = {f"lossgen {b}": generated_outputs(spec, lossgen.load(spec.name, b), b) for b in ("numpy", "jax", "torch")}
        if len(spec.differentiated) == 1:
            for backend in ("torch", "jax"):
                rows[f"textbook formula, {backend} autodiff"] = autodiff_outputs(
                    spec, naive_function(spec, backend), backend
                )
            for label, (backend, fn) in _library_rows(spec).items():
                rows[label] = autodiff_outputs(spec, fn, backend)
        for label, implementation in rows.items():
            for dtype in ("float64", "float32"):
                _print_rows(label, grade(implementation, fixture, dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
