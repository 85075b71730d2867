"""Every generated value/grad/hess against the committed oracle fixtures, with the project's metric.

On the moderate grid (|x| <= 2, where even the textbook formula is accurate) every point of every
output must be within 4 bits of what its conditioning forces, in every backend and dtype, with no
NaN or Inf where the rounded truth is finite.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossgen
from lossgen import metrics
from lossgen._fixtures import load_fixture

from _support import BACKENDS, DTYPES, FIXTURES, call, spec_paths

SPECS = lossgen.load_specs(spec_paths())
BEYOND_BITS = 4.0


def _outputs(spec, module, columns, backend, dtype):
    """label -> flat numpy array, for every quantity the oracle knows."""
    n = len(spec.differentiated)
    value = call(module, "value", spec, columns, backend, dtype)
    grad = call(module, "grad", spec, columns, backend, dtype)
    hess = call(module, "hess", spec, columns, backend, dtype)
    if n == 1:
        grad, hess = (grad,), ((hess,),)
    out = {"value": value}
    out.update({f"grad[{i}]": g for i, g in enumerate(grad)})
    out.update({f"hess[{i}][{j}]": h for i, row in enumerate(hess) for j, h in enumerate(row)})
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_moderate_grid_within_conditioning(spec, backend, dtype):
    data = load_fixture(FIXTURES, spec.name, "moderate")
    assert data is not None, f"run `make fixtures` for {spec.name}"
    assert not data["refused"], f"the oracle refused points {data['refused'][:5]}"
    module = lossgen.load(spec.name, backend)
    columns = data["columns"]
    outputs = _outputs(spec, module, columns, backend, dtype)
    failures = []
    for label, got in outputs.items():
        assert got.shape == (len(columns[spec.inputs[0].name]),), (label, got.shape)
        assert got.dtype == np.dtype(dtype), (label, got.dtype)
        bits, beyond, summary = metrics.error_report(
            got, data["truth"][label], dtype, kappa=data["kappa"][label]
        )
        if summary.nonfinite or summary.max_beyond > BEYOND_BITS:
            k = summary.worst_beyond
            point = {name: column[k] for name, column in columns.items()}
            failures.append(
                f"{label}: {summary.nonfinite} NaN/Inf, max {summary.max_beyond:.1f} bits beyond "
                f"conditioning at {point}: got {got[k]!r}, truth {data['truth'][label][k]}"
            )
    assert not failures, "\n".join(failures)
