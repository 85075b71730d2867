"""JAX's plain pass (``_plain_first``): a module whose derivation scales products and sums in
log space (for XLA's flushing of subnormal numbers) first computes them plainly, and runs as
written only if the plain pass marked a point as one where the two may differ.

On every committed fixture grid, in float32 and float64, each point the plain pass leaves
unmarked must agree with the scaled result to a few ulps; and on ordinary training inputs the
plain pass must mark nothing (else the scaled forms run on every call, and the pass is cost).
"""

from __future__ import annotations

import numpy as np
import pytest

import lossgen
from lossgen._accuracy import generated_outputs
from lossgen._fixtures import load_fixture
from lossgen._grid import grid_names

from _support import FIXTURES, spec_paths

SPECS = {s.name: s for s in lossgen.load_specs(spec_paths())}
PLAIN_FIRST = sorted(n for n in SPECS if hasattr(lossgen.load(n, "jax"), "_plain_first"))
#: how far an unmarked plain result may be from the scaled one: a term the plain sum drops as
#: negligible (below eps / 256 of the sum) can move its rounding by an ulp, and XLA fuses the
#: two passes differently
ULPS = 4
#: grids left out, for time (each case runs every output twice, eagerly): 1000 classes, a few
#: rows with an extreme entry each (every row is marked) and a (C, C) Hessian per row that
#: takes half a minute a pass; 2 and 16 classes and 6-row batches, whose code is that of the
#: 3 and 17 classes and the 4- and 16-row batches
_LEFT_OUT = {"c1000", "c2", "c16", "b6"}


def _outputs(spec, module, grid_name, fixture, dtype, plain: bool) -> dict[str, np.ndarray]:
    """The module's outputs on the fixture's points in one pass: plain, or as written."""
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in fixture["columns"].items()}
    keep = np.ones(len(next(iter(columns.values()))), dtype=bool)
    with np.errstate(over="ignore"):  # (as graded: the points whose inputs ``dtype`` holds)
        for values in columns.values():
            keep &= values.astype(dtype).astype(np.float64) == values
    if not keep.any():
        pytest.skip(f"no point of the grid is exact in {dtype}")
    module._PLAIN.append(plain)  # (inside a pass, _plain_first calls the function as it is)
    try:
        return generated_outputs(spec, module, "jax", grid_name)({k: v[keep] for k, v in columns.items()}, dtype)
    finally:
        module._PLAIN.pop()


def _cases():
    for name in PLAIN_FIRST:
        for grid_name in grid_names(SPECS[name]):
            if grid_name in _LEFT_OUT:
                continue
            for dtype in ("float32", "float64"):
                yield pytest.param(name, grid_name, dtype, id=f"{name}-{grid_name}-{dtype}")


def test_the_pass_is_in_the_modules_that_scale():
    """Every JAX module that scales products or sums has the plain pass, and only those."""
    for name in SPECS:
        source = lossgen.load(name, "jax").__file__
        with open(source) as f:
            text = f.read()
        assert ("def _scaled_" in text) == (name in PLAIN_FIRST), name
    assert {"bce_with_logits", "sigmoid_focal_loss", "softmax_cross_entropy_index"} <= set(PLAIN_FIRST)


@pytest.mark.parametrize("name, grid_name, dtype", list(_cases()))
def test_unmarked_plain_points_agree_with_the_scaled_forms(name, grid_name, dtype):
    spec, module = SPECS[name], lossgen.load(name, "jax")
    fixture = load_fixture(FIXTURES, name, grid_name)
    assert fixture is not None, f"run `make fixtures` for {name}"
    plain = _outputs(spec, module, grid_name, fixture, dtype, plain=True)
    scaled = _outputs(spec, module, grid_name, fixture, dtype, plain=False)
    assert plain.keys() == scaled.keys()
    failures, compared = [], 0
    for label, got in plain.items():
        want = np.asarray(scaled[label])
        got = np.asarray(got)
        kept = ~np.isnan(got)
        compared += int(kept.sum())
        a, b = got[kept], want[kept]
        with np.errstate(invalid="ignore", over="ignore"):
            room = ULPS * np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(got.dtype))
            close = (a == b) | (np.abs(a.astype(np.float64) - b) <= room)
        for k in np.nonzero(~close)[0][:3]:
            failures.append(f"{label} at point {np.nonzero(kept)[0][k]}: plain {a[k]!r}, scaled {b[k]!r}")
    assert not failures, failures
    assert compared > 0  # (a pass that marks every point proves nothing here)


def _training_inputs(name, rng, n=4096):
    """Inputs as a training step sees them: logits of a few units, hard and soft labels."""
    logits = rng.standard_normal(n) * 3
    if name == "softmax_cross_entropy_index":
        return (logits.reshape(-1, 16), rng.integers(0, 16, n // 16)), {}
    labels = np.where(rng.random(n) < 0.5, rng.random(n) < 0.5, rng.random(n))
    params = {
        "sigmoid_focal_loss": {"alpha": 0.25, "gamma": rng.choice([0.0, 0.5, 2.0], n)},
    }.get(name, {})
    return (logits, labels.astype(np.float64)), params


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["bce_with_logits", "sigmoid_focal_loss", "softmax_cross_entropy_index"])
def test_the_plain_pass_holds_on_training_inputs(name, dtype):
    """On the benchmark's losses and a training step's inputs the plain pass marks no point,
    so value, grad and hess (hvp over a class axis) cost no scaled form."""
    import jax.numpy as jnp

    module = lossgen.load(name, "jax")
    (x, target), params = _training_inputs(name, np.random.default_rng(7))
    x = jnp.asarray(x, dtype=dtype)
    target = jnp.asarray(target) if target.dtype.kind == "i" else jnp.asarray(target, dtype=dtype)
    params = {k: jnp.asarray(v, dtype=dtype) if np.ndim(v) else v for k, v in params.items()}
    second = (lambda: module.hvp(x, target, x, **params)) if name.startswith("softmax") else (
        lambda: module.hess(x, target, **params)
    )
    module._PLAIN.append(True)
    try:
        results = {"value": module.value(x, target, **params), "grad": module.grad(x, target, **params),
                   "second": second()}
    finally:
        module._PLAIN.pop()
    marked = {k: int(np.isnan(np.asarray(v)).sum()) for k, v in results.items()}
    assert marked == dict.fromkeys(results, 0), marked
