"""The backend tables: every spec function and primitive prints and evaluates right everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy

from lossgen._backends import BACKENDS, UnprintableError, print_expr
from lossgen._functions import CLASS_FUNCTIONS, SPEC_FUNCTIONS
from lossgen._primitives import (
    PRIMITIVES, ErfcScaled, LogQuotient, LogRatio, LogTanh, ScaledSum, SqrtDifference, to_textbook,
)

from lossgen._accuracy import to_backend, to_numpy

from _support import NAMESPACES

x, y, z = sympy.symbols("x y z", real=True)


def _evaluate(expr, backend, point):
    namespace: dict = {}
    exec(NAMESPACES[backend], namespace)  # the generated modules' own imports
    for primitive in PRIMITIVES:  # and the helpers the lowerings call
        if backend in primitive.helpers:
            exec(primitive.helpers[backend], namespace)
    for name, value in point.items():
        namespace[name] = to_backend(value, backend, "float64")
    return float(to_numpy(eval(print_expr(expr, backend), namespace)))


def _cases():
    for name, fn in SPEC_FUNCTIONS.items():
        if name in CLASS_FUNCTIONS:  # over a class axis or a batch: test_classes.py, test_batch.py
            continue
        args = (x, y, z)[: fn.arity[0]]
        yield name, fn.build(*args)
    # a primitive whose arguments are tied (log_ratio takes b, a and b - a) gets them so
    tied = {
        LogRatio: (x, y, x - y),
        LogQuotient: (x, y, x - y),
        SqrtDifference: (x, y, x - y**2),
        ScaledSum: (x, x, 1, 0, y, y, 1, 0),
        ErfcScaled: (x, sympy.Float(-0.7071067811865476), sympy.Float(0.5)),
        LogTanh: (x, sympy.log(x)),
    }
    for primitive in PRIMITIVES:
        args = tied.get(primitive) or (x, y, z)[: max(primitive.nargs)]
        yield primitive.__name__, primitive(*args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, expr", list(_cases()), ids=[c[0] for c in _cases()])
def test_every_function_lowers_correctly(name, expr, backend):
    point = {"x": 0.7, "y": 0.3, "z": -0.4}
    truth = float(to_textbook(expr).subs({x: point["x"], y: point["y"], z: point["z"]}).evalf(30))
    got = _evaluate(expr, backend, point)
    assert math.isclose(got, truth, rel_tol=1e-13, abs_tol=1e-300), (print_expr(expr, backend), got, truth)


@pytest.mark.parametrize("backend", BACKENDS)
def test_printer_raises_on_unknown_nodes(backend):
    with pytest.raises(UnprintableError):
        print_expr(sympy.besselj(0, x), backend)
    with pytest.raises(UnprintableError):
        print_expr(sympy.Integral(x, x), backend)


def test_precedence_and_literals():
    expr = -(x - y) ** 2 / (2 * (x + y)) + sympy.Rational(1, 3) * x
    code = print_expr(expr, "numpy")
    value = eval(code, {"x": 0.5, "y": 0.25, "np": np})
    truth = float(expr.subs({x: 0.5, y: 0.25}))
    assert math.isclose(value, truth, rel_tol=1e-15), code
