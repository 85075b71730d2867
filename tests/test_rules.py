"""Every rule of the rule base: its example rewrites as stated, and both sides agree exactly."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy

from lossgen._primitives import to_textbook
from lossgen._rules import RULES, Context
from lossgen._types import Domain, Input, Spec


def _spec_for(symbols, ranges) -> Spec:
    """A throwaway spec declaring the example's symbols with the example's ranges."""
    inputs = []
    for s in sorted(symbols, key=str):
        lo, hi = ranges[s]
        role = "differentiated" if str(s) in ("u", "p") else "constant"
        domain = Domain(f"[{lo}, {hi}]", "interval", sympy.nsimplify(lo), sympy.nsimplify(hi), True, True)
        inputs.append(Input(str(s), role, domain, "scalar", s))
    return Spec(
        name="rule", summary="", references=(), inputs=tuple(inputs), params=(), define=(),
        loss=sympy.Integer(0), path="<rule>", source_hash="",
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_example_rewrites_as_stated(rule):
    lhs, rhs, ranges = rule.example
    spec = _spec_for(lhs.free_symbols, ranges)
    ctx = Context(spec, vanishing=lambda node: ["boundary"], near_one=lambda node: ["boundary"])
    assert rule.apply(lhs, ctx) == rhs


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_holds_on_its_domain(rule):
    """Both sides of the example agree to 40 digits at sampled points of the stated ranges."""
    lhs, rhs, ranges = rule.example
    symbols = sorted(lhs.free_symbols | rhs.free_symbols, key=str)
    left = sympy.lambdify(symbols, to_textbook(lhs), "mpmath")
    right = sympy.lambdify(symbols, to_textbook(rhs), "mpmath")
    rng = np.random.default_rng(7)
    with mpmath.workdps(400):
        for _ in range(25):
            point = [mpmath.mpf(float(rng.uniform(*ranges[s]))) for s in symbols]
            a, b = left(*point), right(*point)
            assert abs(a - b) <= mpmath.mpf(10) ** -40 * max(abs(a), abs(b), mpmath.mpf(10) ** -300), (
                rule.name, point, a, b,
            )


def test_rule_names_are_unique_and_documented():
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert rule.identity and rule.holds and rule.reason


def test_sign_of_an_affine_term_over_its_input_domain():
    """1 + pred > 0 for pred in (-1, oo) (what lets log_difference fire for msle); 1 + pred
    on [-1, oo) may be 0, and 2 - pred on (-1, oo) has no sign."""
    from lossgen._signs import NEG, NONNEG, POS, sign

    pred = sympy.Symbol("pred", real=True)

    def spec(text, lo, hi, lo_closed):
        domain = Domain(text, "interval", lo, hi, lo_closed, False)
        return Spec(
            name="s", summary="", references=(), params=(), define=(), path="<s>", source_hash="",
            inputs=(Input("pred", "differentiated", domain, "scalar", pred),), loss=pred,
        )

    open_ = spec("(-1, oo)", sympy.Integer(-1), sympy.oo, False)
    closed = spec("[-1, oo)", sympy.Integer(-1), sympy.oo, True)
    assert sign(1 + pred, open_) == POS
    assert sign(1 + pred, closed) == NONNEG
    assert sign(-1 - pred, open_) == NEG
    assert sign(2 - pred, open_) is None
