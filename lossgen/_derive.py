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
from ._classes import (
    HessBlock, LogSoftmax, class_gradient, class_hess, class_hvp, complements, log_softmax_forms,
    CLASS_FORMS, merge_sums, one_minus_exp,
)
from ._ir import Derivation, Rewrite
from ._rewrite import rewrite_expression

__all__ = ["derive"]


def _no_delta(e: sympy.Expr) -> sympy.Expr:
    """At a kink the derivative of a step is undefined: the 0 subgradient (as the oracle)."""
    return e.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)


def _derive_classes(d: Derivation) -> Derivation:
    """A loss over a class axis: derivatives by the chain rule over its reductions
    (lossgen._classes), each output then with b - logsumexp(b) as LogSoftmax(b)."""
    expr = merge_sums(d.textbook.replace(LogSoftmax, lambda b: LogSoftmax.textbook(b)))
    xs = [inp.symbol for inp in d.spec.differentiated]

    raw = [_no_delta(class_gradient(expr, x)) for x in xs]
    directions = {x: sympy.Symbol(f"v_{x.name}", real=True) for x in xs}

    nonneg = frozenset(
        item.symbol
        for item in (*d.spec.inputs, *d.spec.params)
        if getattr(item, "domain", None) is not None
        and item.domain.kind == "interval" and item.domain.lo >= 0
    )

    def stable(e):
        return complements(log_softmax_forms(e), nonneg)

    def block(h):  # the diagonal factored: p - p**2 -> p*(1 - p) -> -p*expm1(log p)
        diagonal, *pairs = h.args
        diagonal = log_softmax_forms(diagonal)
        pairs = [stable(a) for a in pairs]
        kept = [a for u, w in zip(pairs[0::2], pairs[1::2]) if u != 0 and w != 0 for a in (u, w)]
        return HessBlock(one_minus_exp(sympy.factor(diagonal)), *kept)

    hess = tuple(tuple(block(_no_delta(class_hess(g, x))) for x in xs) for g in raw)
    value = log_softmax_forms(expr)
    grad = tuple(stable(g) for g in raw)
    hvp = tuple(stable(_no_delta(class_hvp(g, directions))) for g in raw)
    emitted = [value, *grad, *hvp, *(h for row in hess for h in row)]
    records = [
        Rewrite(rule, before, after, reason)
        for cls, rule, before, after, reason in CLASS_FORMS
        if any(e.has(cls) for e in emitted)
    ]
    return replace(
        d, value=value, grad=grad, hess=hess, hvp=hvp, rewrites=d.rewrites + tuple(records)
    )


def derive(d: Derivation) -> Derivation:
    if d.spec.has_classes:
        return _derive_classes(d)
    expr = d.stable if d.stable is not None else d.textbook
    xs = [inp.symbol for inp in d.spec.differentiated]
    records = list(d.rewrites)

    def restabilize(derivative: sympy.Expr, where: str) -> sympy.Expr:
        derivative = _no_delta(derivative)
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
