"""The derive pass: gradient and Hessian by differentiating the stabilized expression.

Differentiating the rewritten form (not the textbook one) keeps every derivative inside the
vocabulary of stable primitives, each of which knows its own derivative.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ._ir import Derivation

__all__ = ["derive"]


def derive(d: Derivation) -> Derivation:
    expr = d.stable if d.stable is not None else d.textbook
    xs = [inp.symbol for inp in d.spec.differentiated]
    grad = tuple(sympy.diff(expr, x) for x in xs)
    hess = tuple(tuple(sympy.diff(g, x) for x in xs) for g in grad)
    return replace(d, value=expr, grad=grad, hess=hess)
