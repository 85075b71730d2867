"""The derive pass: gradient and Hessian by differentiating the stabilized expression.

Differentiating the rewritten form (not the textbook one) keeps every derivative inside the
vocabulary of stable primitives, each of which knows its own derivative. The chain rule can
still build sums that cancel (d/dx of a logaddexp weight is w * (a' - w a' - (1 - w) b')), so
each derivative goes through the rule base once more ("re-stabilized"); its rewrites are
recorded beside those of the value.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ._analyse import Analysis
from ._ir import Derivation
from ._rewrite import rewrite_expression

__all__ = ["derive"]


def derive(d: Derivation) -> Derivation:
    expr = d.stable if d.stable is not None else d.textbook
    xs = [inp.symbol for inp in d.spec.differentiated]
    records = list(d.rewrites)

    def restabilize(derivative: sympy.Expr, where: str) -> sympy.Expr:
        # at a kink the derivative of a step is undefined: the 0 subgradient (as the oracle)
        derivative = derivative.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)
        # b**g / b**2 -> b**(g - 2): one power of the base, not a product that underflows first
        derivative = sympy.powsimp(derivative, combine="exp", deep=True)
        out, done = rewrite_expression(d, derivative, Analysis())
        records.extend(replace(r, reason=f"{r.reason} [in {where}]") for r in done)
        return out

    raw_grad = [sympy.diff(expr, x) for x in xs]
    grad = tuple(restabilize(g, "grad") for g in raw_grad)
    hess = tuple(
        tuple(restabilize(sympy.diff(g, x), "hess") for x in xs) for g in raw_grad
    )
    return replace(d, value=expr, grad=grad, hess=hess, rewrites=tuple(records))
