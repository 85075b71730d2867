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
    REDUCTIONS,
    ClassSum, HessBlock, LogSoftmax, LogSoftmaxComplement, LogSumExp, SumOthers, class_gradient,
    class_hess, class_hvp, complements, corner_pairs, diagonal_from_hvp, entrywise_of, factored, log_softmax_forms, CLASS_FORMS,
    merge_sums, one_minus_exp, picked_forms, ratio_complement, relative_entropy_forms,
    sigmoid_differences,
)
from ._norms import NORM_FORMS, norm_gap_forms, unit_differences
from ._primitives import Exp
from ._ir import Derivation, Rewrite
from ._rewrite import rewrite_expression

__all__ = ["derive"]


def _no_delta(e: sympy.Expr) -> sympy.Expr:
    """At a kink the derivative of a step is undefined: the 0 subgradient (as the oracle)."""
    return e.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)


def _coincident_guard(e: sympy.Expr) -> sympy.Expr:
    """0 where a sum of squares in a denominator is 0 (a distance's derivatives at coincident
    points: the 0 subgradient, and 0 for the undefined second derivative), never 0/0. Term
    by term where the terms have different such sums: the derivative of |a - x| + |x - b| at
    a = x is the second distance's (the first's subgradient is 0)."""
    if e.is_Add:
        guarded = [_guard_one(t) for t in e.args]
        if any(isinstance(t, sympy.Piecewise) for t in guarded):
            conditions = {t.args[0].cond for t in guarded if isinstance(t, sympy.Piecewise)}
            if len(conditions) > 1 or not all(isinstance(t, sympy.Piecewise) for t in guarded):
                return sympy.Add(*guarded)
    return _guard_one(e)


def _guard_one(e: sympy.Expr) -> sympy.Expr:
    sums = sorted(
        {
            node.base for node in e.atoms(sympy.Pow)
            if isinstance(node.base, ClassSum) and node.exp.is_negative
            and node.base.args[0].is_Pow and node.base.args[0].exp.is_even
        },
        key=sympy.default_sort_key,
    )
    if not sums or e.is_zero:
        return e
    return sympy.Piecewise((0, sympy.Or(*(sympy.Eq(s, 0) for s in sums))), (e, True))


def _sum_minus_entry(expr: sympy.Expr) -> sympy.Expr | None:
    """(c1*sum(f1) + c2*sum(f2) + r)/den with c1*f1 + c2*f2 + r losing terms per entry ->
    (c1*sum_others(f1) + c2*sum_others(f2) + (c1*f1 + c2*f2 + r))/den, each f as written in
    its sum. The entry's own part of each sum cancels symbolically: a distance's Hessian
    diagonal (|u|**2 - u_i**2)/|u|**3, and its Hessian-vector product
    (|u|**2 w_i - u_i (u.w))/|u|**3, cancel where u_i is most of |u|; what is left cancels only
    as far as the data do (the wedge u_j w_i - u_i w_j)."""
    if expr.has(LogSoftmax, LogSumExp, Exp, sympy.exp):
        return None  # the softmax forms have their own (lossgen._classes.complements)
    numerator, denominator = sympy.fraction(sympy.together(expr))
    sums = sorted(numerator.atoms(ClassSum), key=sympy.default_sort_key)
    if not sums:
        return None
    totals = [sympy.Dummy(f"total{k}") for k in range(len(sums))]
    held = numerator.xreplace(dict(zip(sums, totals)))
    if not held.is_polynomial(*totals) or sympy.Poly(held, *totals).total_degree() != 1:
        return None
    flat = sympy.expand(held)
    coeffs = [flat.coeff(t) for t in totals]
    if any(c.has(*totals) for c in coeffs):
        return None
    rest = sympy.expand(
        flat - sum(c * t for c, t in zip(coeffs, totals)) + sum(c * s.args[0] for c, s in zip(coeffs, sums))
    )
    before = sympy.expand(flat - sum(c * t for c, t in zip(coeffs, totals)))
    if len(sympy.Add.make_args(rest)) >= len(sympy.Add.make_args(before)) + len(sums):
        return None  # the entries' own parts do not cancel
    out = sum(c * SumOthers(s.args[0]) for c, s in zip(coeffs, sums) if c != 0) + sympy.factor(rest)
    return out / denominator


def _entry_rules(d: Derivation, expr: sympy.Expr) -> tuple[sympy.Expr, list[Rewrite]]:
    """The rule base applied to the bodies of the sums that hold no reduction (an
    elementwise term summed over the axis, beside other reductions: the cross-entropy of
    dice_bce), as the elementwise passes apply it to a whole loss."""
    from ._rewrite import rewrite_expression

    records: list[Rewrite] = []

    def body(node):
        inner = node.args[0]
        if any(isinstance(n, REDUCTIONS) for n in sympy.preorder_traversal(inner)):
            return node
        # (a rational function of stable primitives has nothing for the rules to answer)
        if not inner.has(sympy.log, sympy.exp) and not any(
            not p.exp.is_Integer for p in inner.atoms(sympy.Pow)
        ):
            return node
        stable, done = rewrite_expression(d, inner, Analysis())
        records.extend(replace(r, reason=f"{r.reason} [in a sum's term]") for r in done)
        return ClassSum(stable)

    out = expr.replace(lambda n: isinstance(n, ClassSum), body)
    return out, records


def _derive_classes(d: Derivation) -> Derivation:
    """A loss over a class axis: derivatives by the chain rule over its reductions
    (lossgen._classes), a picked probability first in log space (``picked_forms``), each
    output then with b - logsumexp(b) as LogSoftmax(b)."""
    expr = picked_forms(d.textbook).replace(LogSoftmax, lambda b: LogSoftmax.textbook(b))
    expr, entry_records = _entry_rules(d, merge_sums(expr))
    xs = [inp.symbol for inp in d.spec.differentiated]

    raw = [_no_delta(class_gradient(expr, x)) for x in xs]
    directions = {x: sympy.Symbol(f"v_{x.name}", real=True) for x in xs}

    nonneg = frozenset(
        item.symbol
        for item in (*d.spec.inputs, *d.spec.params)
        if getattr(item, "domain", None) is not None
        and item.domain.kind == "interval" and item.domain.lo >= 0
    )

    from ._types import AXIS_SHAPES

    entries = frozenset(i.symbol for i in d.spec.inputs if i.shape in AXIS_SHAPES)

    def joined(e):  # exp(a)*exp(b) -> exp(a + b) where a factor can overflow while the
        # product does not (exp(-L) of a log_softmax_complement L)
        return sympy.powsimp(e, combine="exp", deep=True) if expr.has(LogSoftmaxComplement) else e

    def stable(e, shifts=None):
        return complements(log_softmax_forms(joined(e)), nonneg, entries, shifts)

    constants = frozenset(
        i.symbol for i in d.spec.inputs
        if i.role == "constant" and i.domain.kind == "interval" and i.domain.lo >= 0 and i.domain.hi <= 1
    )
    cornered: dict = {}  # x -> the pairs at the corners of y, where corner_pairs applies

    def block(h, g, x):  # the diagonal factored: p - p**2 -> p*(1 - p) -> -p*expm1(log p)
        diagonal, *pairs = h.args
        corners = corner_pairs(pairs, constants, entries) if len(xs) == 1 else None
        if corners is not None:
            pairs = cornered[x] = corners
        pairs = [stable(a) for a in pairs]
        kept = [a for u, w in zip(pairs[0::2], pairs[1::2]) if u != 0 and w != 0 for a in (u, w)]
        if expr.has(LogSoftmaxComplement):
            # (a sum of products of exponentials that cancel: the diagonal is taken from the
            # Hessian-vector product's stable form instead, at v = e_c)
            along = stable(_no_delta(class_hvp(g, {x: directions[x]})))
            unit = diagonal_from_hvp(along, directions[x])
            if unit is not None:
                from_hvp.append(True)
                return HessBlock(unit, *kept)
        diagonal = log_softmax_forms(diagonal)
        others = _sum_minus_entry(diagonal)
        diagonal = others if others is not None else one_minus_exp(sympy.factor(diagonal))
        return HessBlock(_coincident_guard(diagonal), *(_coincident_guard(a) for a in kept))

    shifts: list = []
    # (a difference of two unit vectors, the gradient of a difference of distances: as one
    # form that keeps its digits near a line, with the 0 subgradient built in)
    paired = tuple(unit_differences(g) for g in raw)
    grad = tuple(_coincident_guard(stable(g, shifts)) for g in paired)
    from_hvp: list[bool] = []
    extra_records: list[Rewrite] = []
    hess = tuple(tuple(block(_no_delta(class_hess(g, x)), g, x) for x in xs) for g in raw)
    value = norm_gap_forms(relative_entropy_forms(log_softmax_forms(expr)))
    complemented = ratio_complement(value, constants)
    if complemented != value:
        value = complemented
        extra_records.append(Rewrite(
            "ratio_complement", "c - N/D", "(c*D - N)/D, one sum",
            "the numerator merged into one sum over the axis, its body affine in a target y in "
            "[0, 1] as a0*(1 - y) + (a0 + a1)*y: terms of one sign, no difference of two "
            "numbers near c where the ratio is near it",
        ))
    def entrywise(e):
        others = _sum_minus_entry(e)
        return e if others is None else others

    # where b - sum(p*b) dropped what is one number per row (a difference of two
    # log-softmaxes is the difference of their arguments there), the Hessian-vector product
    # is the derivative of the stable gradient, by the stable forms' own rules: it has no such
    # difference either
    sources = grad if shifts or paired != tuple(raw) else raw
    hvp = tuple(
        _coincident_guard(entrywise(stable(_no_delta(class_hvp(g, directions))))) for g in sources
    )
    if cornered:
        # the block's direct part times v, and the pairs at the corners of y applied to v:
        # H v = (d - sum_k u_k w_k) v + sum_k u_k sum(w_k v)
        ((x, pairs),) = cornered.items()
        v = directions[x]
        direct = _no_delta(class_hvp(raw[0], {x: v})).replace(
            lambda n: isinstance(n, REDUCTIONS) and n.has(v), lambda n: sympy.S.Zero
        )
        # (the direct part factored: p*a*(p - a)*(...) for p = sigmoid(x), a = sigmoid(-x),
        # and p - a as tanh(x/2), which keeps its digits near x = 0)
        direct = sigmoid_differences(factored(direct))
        applied = sum((u * ClassSum(w * v) for u, w in zip(pairs[0::2], pairs[1::2])), sympy.S.Zero)
        hvp = (_coincident_guard(stable(direct + applied)),)
        extra_records.append(Rewrite(
            "corner_pairs", "sum_k u_k w_k^T, affine in y_i and y_j", "sum over the corners of y",
            "the off-diagonal Hessian entries written at y in {0, 1} (b_1 = y, b_0 = 1 - y), "
            "each corner's row factor one sum of one sign (one_signed): hard targets keep one "
            "corner per pair, no difference of numbers near 1 where the ratio is near 1",
        ))
    emitted = [value, *grad, *hvp, *(h for row in hess for h in row)]
    records = [
        Rewrite(rule, before, after, reason)
        for cls, rule, before, after, reason in (*CLASS_FORMS, *NORM_FORMS)
        if any(e.has(cls) for e in emitted)
    ]
    records += extra_records + entry_records
    if d.spec.loss.has(sympy.Abs) and not d.textbook.has(sympy.Abs):
        records.insert(0, Rewrite(
            "triangle_abs", "abs(|u| + |v| - |u + v|)", "|u| + |v| - |u + v|",
            "the triangle inequality: the slack is >= 0 on every input, so abs is the identity "
            "and the derivatives are the slack's, also where it is 0 (lossgen._norms.drop_abs)",
        ))
    if from_hvp:
        records.append(Rewrite(
            "hess_diagonal_from_hvp", "d/dx_c of the gradient entry c", "hvp(..., e_c) entry c",
            "the Hessian-vector product's stable forms at v = e_c (diagonal_from_hvp): the "
            "diagonal differentiated directly sums products of exponentials that cancel",
        ))
    return replace(
        d, value=value, grad=grad, hess=hess, hvp=hvp, rewrites=d.rewrites + tuple(records)
    )


def derive(d: Derivation) -> Derivation:
    if d.spec.has_classes:
        split = entrywise_of(d.spec, d.stable)
        if split is None:
            return _derive_classes(d)
        return _derive_entrywise(d, *split)
    expr = d.stable if d.stable is not None else d.textbook
    return replace(d, **_elementwise(d, expr))


def _derive_entrywise(d: Derivation, coeff: sympy.Expr, body: sympy.Expr) -> Derivation:
    """c*sum(b), b elementwise: b's derivatives entry by entry, a diagonal Hessian block, and
    the Hessian-vector product as the diagonal times v (no C*C work anywhere)."""
    parts = _elementwise(d, body)
    xs = [inp.symbol for inp in d.spec.differentiated]
    directions = [sympy.Symbol(f"v_{x.name}", real=True) for x in xs]

    def block(h):
        if h.is_zero or h.free_symbols & set(xs):
            return HessBlock(coeff * h)
        # a constant diagonal (-1: the cross block of t*x) takes the block's shape from the
        # entries, through an off-diagonal pair 0 * x^T
        return HessBlock(coeff * h, sympy.S.Zero, xs[0])

    return replace(
        d,
        value=coeff * ClassSum(parts["value"]),
        grad=tuple(coeff * g for g in parts["grad"]),
        hess=tuple(tuple(block(h) for h in row) for row in parts["hess"]),
        hvp=tuple(
            coeff * sympy.Add(*(h * v for h, v in zip(row, directions))) for row in parts["hess"]
        ),
        rewrites=parts["rewrites"],
    )


def _elementwise(d: Derivation, expr: sympy.Expr) -> dict:
    """value, grad, hess (and the rewrites so far) of an elementwise expression."""
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
    return {"value": expr, "grad": grad, "hess": hess, "rewrites": tuple(records)}
