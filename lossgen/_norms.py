"""Differences of Euclidean norms over the last axis: the triangle inequality as a sign fact,
and a form of |u| + |v| - |u + v| that keeps its digits where u and v point the same way.

A norm is written ``sqrt(sum(u**2))``. Where a loss holds |u| + |v| - |u + v| (up to the signs
of u and v, which a norm ignores), the triangle inequality makes it >= 0 on every input:

- ``drop_abs``: abs(|u| + |v| - |u + v|) is the expression itself, on the whole domain. The
  loss's derivatives are the inner expression's, also where it is 0 (three points on a line),
  where abs would have no derivative;
- ``norm_gap_forms``: the difference is ``NormGap(u, v)``. Near a line the three norms agree to
  many digits and their difference has none left; with Lagrange's identity
  |u|**2*|v|**2 - (u.v)**2 = |u^v|**2 it is 2*|u^v|**2/((|u||v| + u.v)(|u| + |v| + |u + v|)),
  a quotient of terms of one sign, |u^v| as |u| times the part of v across u.
"""

from __future__ import annotations

import itertools

import sympy

from ._classes import _NS, ClassSum, _ClassPrimitive

__all__ = ["NORM_FORMS", "NormGap", "drop_abs", "norm_gap_forms", "triangle"]


def _norm(term: sympy.Expr) -> tuple[int, sympy.Expr] | None:
    """(s, u) where ``term`` is s*sqrt(sum(u**2)), s = +-1."""
    coeff, rest = term.as_coeff_Mul()
    if coeff not in (1, -1) or not (rest.is_Pow and rest.exp == sympy.S.Half):
        return None
    total = rest.base
    if not isinstance(total, ClassSum):
        return None
    body = total.args[0]
    if not (body.is_Pow and body.exp == 2):
        return None
    return int(coeff), body.base


def _split(expr: sympy.Expr):
    """(u, v, the other terms) where the terms of ``expr`` hold |u| + |v| - |u + v|."""
    terms = list(sympy.Add.make_args(expr))
    norms = [(k, _norm(t)) for k, t in enumerate(terms)]
    plus = [(k, n[1]) for k, n in norms if n is not None and n[0] == 1]
    minus = [(k, n[1]) for k, n in norms if n is not None and n[0] == -1]
    for (i, u), (j, v) in itertools.combinations(plus, 2):
        for k, w in minus:
            for su, sv in itertools.product((1, -1), repeat=2):
                if sympy.expand(w - (su * u + sv * v)) == 0 or sympy.expand(w + su * u + sv * v) == 0:
                    rest = sympy.Add(*(t for m, t in enumerate(terms) if m not in (i, j, k)))
                    return su * u, sv * v, rest
    return None


def triangle(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(u, v) where ``expr`` is |u| + |v| - |u + v| (>= 0 by the triangle inequality)."""
    found = _split(expr) if expr.is_Add else None
    if found is None or found[2] != 0:
        return None
    return found[0], found[1]


def drop_abs(expr: sympy.Expr) -> sympy.Expr:
    """abs(e) -> e wherever e is |u| + |v| - |u + v|: the absolute value is the identity on
    the domain, and the loss's derivatives are e's (also at e = 0)."""
    if not expr.has(sympy.Abs):
        return expr
    return expr.replace(
        lambda n: isinstance(n, sympy.Abs) and triangle(n.args[0]) is not None,
        lambda n: n.args[0],
    )


def norm_gap_forms(expr: sympy.Expr) -> sympy.Expr:
    """|u| + |v| - |u + v| -> NormGap(u, v) wherever a sum holds the three norms."""

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if node.is_Add:
            found = _split(node)
            if found is not None:
                u, v, rest = found
                return rest + NormGap(u, v)
        return node

    return visit(expr)


def _helper_norm_gap(backend: str) -> str:
    ns = _NS[backend]
    red = "dim=-1, keepdim=True" if backend == "torch" else "axis=-1, keepdims=True"
    return (
        "def _norm_gap(u, v):\n"
        "    # |u| + |v| - |u + v| >= 0 (the triangle inequality), as\n"
        "    # 2*(|u||v| - u.v)/(|u| + |v| + |u + v|); where u.v > 0, |u||v| - u.v is\n"
        "    # |u^v|**2/(|u||v| + u.v) (Lagrange's identity), |u^v| = |u|*|v - (u.v/|u|**2)*u|:\n"
        "    # no difference of near-equal numbers where u and v point nearly the same way\n"
        f"    nu = {ns}.sqrt({ns}.sum(u * u, {red}))\n"
        f"    nv = {ns}.sqrt({ns}.sum(v * v, {red}))\n"
        f"    nw = {ns}.sqrt({ns}.sum((u + v) * (u + v), {red}))\n"
        f"    dot = {ns}.sum(u * v, {red})\n"
        "    along = dot > 0\n"
        f"    c = {ns}.where(along, dot, 0.0) / {ns}.where(along, nu * nu, 1.0)\n"
        "    across = v - c * u\n"
        f"    wedge = nu * nu * {ns}.sum(across * across, {red})\n"
        f"    gap = {ns}.where(along, wedge / {ns}.where(along, nu * nv + dot, 1.0), nu * nv - dot)\n"
        "    den = nu + nv + nw\n"
        f"    return {ns}.where(den > 0, 2 * gap / {ns}.where(den > 0, den, 1.0), 0.0)\n"
    )


class NormGap(_ClassPrimitive):
    """|u| + |v| - |u + v| over the last axis, one number per row, >= 0: the triangle
    inequality's slack, exact in relative terms where the three points are near a line (the
    textbook difference of norms loses all its digits there)."""

    display = "norm_gap"
    nargs = 2
    lowering = {b: "_norm_gap({0}, {1})" for b in _NS}
    helpers = {b: _helper_norm_gap(b) for b in _NS}

    @classmethod
    def textbook(cls, u, v):
        def norm(w):
            return sympy.sqrt(ClassSum(w**2))

        return norm(u) + norm(v) - norm(u + v)


#: (primitive, rule, before, after, reason), as lossgen._classes.CLASS_FORMS
NORM_FORMS = (
    (NormGap, "norm_gap", "|u| + |v| - |u + v|", "norm_gap(u, v)",
     "2*|u^v|**2/((|u||v| + u.v)(|u| + |v| + |u + v|)) where u.v > 0 (Lagrange's identity), "
     "|u^v| from the part of v across u: terms of one sign, no difference of near-equal norms"),
)
