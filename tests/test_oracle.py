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
