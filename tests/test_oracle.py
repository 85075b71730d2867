"""The oracle: rising precision, exact zeros, symbolic derivatives, and conditioning."""

from __future__ import annotations

import mpmath
import pytest

import lossgen
from lossgen.oracle import Oracle, format_mpf

SPEC = """
name: softplus_probe
summary: softplus, to probe the oracle.
references: [none]
inputs:
  x: {role: differentiated, domain: "(-oo, oo)"}
loss: softplus(x)
"""


@pytest.fixture(scope="module")
def oracle():
    return Oracle(lossgen.parse_spec_text(SPEC, "softplus_probe.yaml"))


def test_second_derivative_at_large_input_is_exact(oracle):
    # softplus''(100) = sigmoid(100) sigmoid(-100) = 3.72e-44; mpmath.diff at 60 digits gets -8e-31
    e = oracle.evaluate({"x": 100.0})
    truth = mpmath.exp(-100) / (1 + mpmath.exp(-100)) ** 2
    assert abs(e.values["hess[0][0]"] / truth - 1) < mpmath.mpf(10) ** -30


def test_precision_rises_until_two_agree(oracle):
    # 1 + e^-185 needs more than 256 bits: the oracle must not stop there
    e = oracle.evaluate({"x": -185.0})
    assert e.digits[0] >= 80 and e.digits[1] == 2 * e.digits[0]
    truth = mpmath.log1p(mpmath.exp(-185))
    assert abs(e.values["value"] / truth - 1) < mpmath.mpf(10) ** -30


def test_huge_inputs_get_thousands_of_digits(oracle):
    e = oracle.evaluate({"x": -1e4})
    assert e.digits[1] > 4000
    assert format_mpf(e.values["value"], 6).startswith("1.13548e-4343")


def test_exact_zero_and_kappa():
    spec = lossgen.parse_spec_text(
        SPEC.replace("softplus_probe", "sq_probe").replace("softplus(x)", "(x - y)**2")
        .replace('loss:', 'loss:').replace(
            '  x: {role: differentiated, domain: "(-oo, oo)"}',
            '  x: {role: differentiated, domain: "(-oo, oo)"}\n  y: {role: constant, domain: "(-oo, oo)"}',
        ),
        "sq_probe.yaml",
    )
    e = Oracle(spec).evaluate({"x": 0.75, "y": 0.75})
    assert e.values["value"] == 0 and e.values["grad[0]"] == 0
    assert e.kappas["value"] == mpmath.inf
    e = Oracle(spec).evaluate({"x": 2.0, "y": 1.0})
    # kappa of (x - y)**2 in x is |x * 2(x - y)| / (x - y)**2 = 4 at x = 2, y = 1
    assert e.kappas["value"] == 4 and e.kappas["hess[0][0]"] == 0


def _agree(a, b, digits=35):
    if mpmath.isinf(a) or mpmath.isinf(b) or a == 0 or b == 0:
        return a == b
    return abs(a - b) <= abs(b) * mpmath.mpf(10) ** -digits


CLASS_SPEC = """
name: focal_probe
summary: softmax focal loss, to probe the class-axis oracle.
references: [none]
inputs:
  x: {role: differentiated, domain: "(-oo, oo)", shape: classes}
  k: {role: constant, domain: "index", shape: scalar}
params:
  gamma: {default: 2, domain: "[0, oo)"}
define:
  p_t: pick(softmax(x), k)
loss: -(1 - p_t)**gamma * log(p_t)
"""


@pytest.mark.parametrize(
    "point",
    [
        {"x[0]": 0.5, "x[1]": -2.0, "x[2]": 3.25, "k": 1, "gamma": 0.5},
        {"x[0]": 40.0, "x[1]": -1e4, "x[2]": 0.0, "k": 0, "gamma": 2.0},
        {"x[0]": -3.0, "x[1]": 1e-8, "x[2]": 7.0, "k": 2, "gamma": 0.0},
    ],
)
def test_taylor_arithmetic_agrees_with_symbolic_derivatives(point):
    """The two ways of differentiating a written-out class-axis loss agree on value, gradient,
    Hessian-vector product and every condition number."""
    spec = lossgen.parse_spec_text(CLASS_SPEC, "focal_probe.yaml")
    point = {**point, "v[0]": 0.25, "v[1]": -1.5, "v[2]": 2.0}
    symbolic = Oracle(spec, 3, method="symbolic").evaluate(point)
    jets = Oracle(spec, 3, method="jets").evaluate(point)
    assert set(jets.values) == {"value"} | {f"{q}[{c}]" for q in ("grad", "hvp") for c in range(3)}
    for label, value in jets.values.items():
        assert _agree(value, symbolic.values[label]), label
        assert _agree(jets.kappas[label], symbolic.kappas[label], 25), label


def test_taylor_arithmetic_conventions():
    """Abs at 0 and a tied Max have the 0 derivative, as sign(0) = Heaviside(0) = 0 give."""
    import sympy

    from lossgen import _jets

    x, y = sympy.symbols("x y", real=True)
    at = {x: mpmath.mpf(0), y: mpmath.mpf(0)}
    for expr in (sympy.Abs(x), sympy.Max(x, y), sympy.Max(x, 0)):
        jet = _jets.evaluate(expr, at, [x, y], [mpmath.mpf(1), mpmath.mpf(1)])
        assert jet.p[0] == 0 and not any(jet.p[1]) and not any(jet.q[1])
    jet = _jets.evaluate(sympy.Max(x, y), {x: mpmath.mpf(2), y: mpmath.mpf(1)}, [x, y], [1, 3])
    assert list(jet.p[1]) == [1, 0] and jet.q[0] == 1
