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

from ._classes import _ENTRY_JVP, _LAST_AXIS, _NS, ClassSum, SumOthers, _ClassPrimitive

__all__ = [
    "NORM_FORMS", "NormGap", "UnitDiff", "UnitDiffJvp", "drop_abs", "norm_gap_forms", "triangle",
    "unit_differences",
]


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
    red = _LAST_AXIS[backend]
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


def _helper_unit_diff(backend: str) -> str:
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    return (
        "def _unit_diff(p, q):\n"
        "    # p/|p| - q/|q| over the last axis (a zero vector's unit vector is 0, the norm's\n"
        "    # subgradient). Entry i where p_i and q_i have one sign: |p_i|/|p| - |q_i|/|q| is\n"
        "    # (p_i**2 |q|**2 - q_i**2 |p|**2)/(|p||q|(|p_i||q| + |q_i||p|)), the numerator\n"
        "    # ((p_i**2 - q_i**2)(S_p + S_q) + (p_i**2 + q_i**2)(S_q - S_p))/2 with S the sums of\n"
        "    # squares over the other entries and each difference of squares a product\n"
        "    # (p - q)(p + q): no difference of two near-equal unit vectors near a line\n"
        f"    n_p = {ns}.sqrt({ns}.sum(p * p, {red}))\n"
        f"    n_q = {ns}.sqrt({ns}.sum(q * q, {red}))\n"
        "    # (both scaled by the power of two of the larger norm: exact; no overflow in the\n"
        "    # fourth powers)\n"
        f"    scale = {ns}.exp2(-{ns}.frexp({ns}.maximum(n_p, n_q))[1].astype(p.dtype))\n"
        .replace(".astype(p.dtype)", ".to(p.dtype)" if backend == "torch" else ".astype(p.dtype)")
        + "    p, q, n_p, n_q = p * scale, q * scale, n_p * scale, n_q * scale\n"
        f"    p_hat = p / {ns}.where(n_p > 0, n_p, 1.0)\n"
        f"    q_hat = q / {ns}.where(n_q > 0, n_q, 1.0)\n"
        "    # (or p_i**2 S_q - q_i**2 S_p as it stands, whichever has the smaller terms: the\n"
        "    # products keep the digits where p and q are near, not where their sizes differ)\n"
        "    squares = (p - q) * (p + q)\n"
        "    s_p, s_q, s_d = _sum_others(p * p), _sum_others(q * q), _sum_others(squares)\n"
        "    plain_a, plain_b = p * p * s_q, q * q * s_p\n"
        "    near_a, near_b = squares * (s_p + s_q), (p * p + q * q) * s_d\n"
        f"    by_products = {ns}.abs(near_a) + {ns}.abs(near_b) < plain_a + plain_b\n"
        f"    num = {ns}.where(by_products, (near_a - near_b) / 2, plain_a - plain_b)\n"
        f"    den = n_p * n_q * ({ns}.abs(p) * n_q + {ns}.abs(q) * n_p)\n"
        "    same = p * q > 0\n"
        f"    near = {ns}.sign(p) * num / {ns}.where(same, den, 1.0)\n"
        f"    return {ns}.where(same, near, p_hat - q_hat)\n"
    )


def _helper_unit_diff_jvp(backend: str) -> str:
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    to = ".to(p.dtype)" if backend == "torch" else ".astype(p.dtype)"
    return (
        "def _unit_jvp(p, dp):\n"
        "    # d(p/|p|) along dp = (dp - (p.dp/|p|**2) p)/|p|, entry i as\n"
        "    # (dp_i S_i - p_i T_i)/|p|**3 with S_i, T_i the sums of p_j**2 and p_j dp_j over the\n"
        "    # other entries: no p_i**2 dp_i to cancel where p lies along an axis (0 for p = 0;\n"
        "    # p scaled by the power of two of its norm: exact, and |p|**3 does not overflow)\n"
        f"    n = {ns}.sqrt({ns}.sum(p * p, {red}))\n"
        f"    scale = {ns}.exp2(-{ns}.frexp(n)[1]{to})\n"
        "    p, n = p * scale, n * scale\n"
        "    across = dp * _sum_others(p * p) - p * _sum_others(p * dp)\n"
        f"    return {ns}.where(n > 0, across / {ns}.where(n > 0, n * n * n, 1.0) * scale, 0.0)\n"
        "\n\n"
        "def _unit_jvp_diff(p, q, d):\n"
        "    # (J(p) - J(q)) d, J(w) = (I - ww^T/|w|**2)/|w| the derivative of w/|w|, for p near q:\n"
        "    # entry i is d_i (S_i(p)/|p|**3 - S_i(q)/|q|**3) - (p_i T_i(p)/|p|**3 - q_i T_i(q)/|q|**3)\n"
        "    # (S_i, T_i the sums of w_j**2 and w_j d_j over the other entries), each difference\n"
        "    # of p and q taken through e = p - q: S_i(p) - S_i(q) the other entries' e (p + q),\n"
        "    # p_i T_i(p) - q_i T_i(q) = e_i T_i(p) + q_i T_i(e, d), and 1/|p|**3 - 1/|q|**3 from\n"
        "    # |q|**2 - |p|**2 = -sum(e (p + q)) (p and q scaled by the power of two of the larger\n"
        "    # norm: exact)\n"
        f"    n_p = {ns}.sqrt({ns}.sum(p * p, {red}))\n"
        f"    n_q = {ns}.sqrt({ns}.sum(q * q, {red}))\n"
        f"    scale = {ns}.exp2(-{ns}.frexp({ns}.maximum(n_p, n_q))[1]{to})\n"
        "    p, q, n_p, n_q = p * scale, q * scale, n_p * scale, n_q * scale\n"
        "    e = p - q\n"
        "    n3 = n_p * n_p * n_p\n"
        f"    gap = -{ns}.sum(e * (p + q), {red}) / (n_p + n_q)\n"
        "    r3 = gap * (n_p * n_p + n_p * n_q + n_q * n_q) / (n3 * n_q * n_q * n_q)\n"
        "    first = d * (_sum_others(e * (p + q)) / n3 + _sum_others(q * q) * r3)\n"
        "    second = (e * _sum_others(p * d) + q * _sum_others(e * d)) / n3\n"
        "    second = second + q * _sum_others(q * d) * r3\n"
        "    return (first - second) * scale\n"
        "\n\n"
        "def _unit_diff_jvp(p, q, dp, dq):\n"
        "    # the derivative of p/|p| - q/|q| along (dp, dq); where p = q (two of the points\n"
        "    # coincide) it is that of p/|p| along dp - dq, without two equal parts to cancel;\n"
        "    # where p and q are near (|p - q| at most half of each norm) J(p)(dp - dq) + (J(p) -\n"
        "    # J(q)) dq, the second with the differences of p and q through p - q\n"
        f"    same = {ns}.all(p == q, {red})\n"
        f"    n_e = {ns}.sqrt({ns}.sum((p - q) * (p - q), {red}))\n"
        f"    n_p = {ns}.sqrt({ns}.sum(p * p, {red}))\n"
        f"    n_q = {ns}.sqrt({ns}.sum(q * q, {red}))\n"
        f"    close = (2 * n_e <= n_p) & (2 * n_e <= n_q)\n"
        "    along = _unit_jvp(p, dp - dq)\n"
        f"    near = {ns}.where(same, along, along + _unit_jvp_diff(p, q, dq))\n"
        f"    return {ns}.where(close, near, _unit_jvp(p, dp) - _unit_jvp(q, dq))\n"
    )


class UnitDiff(_ClassPrimitive):
    """p/|p| - q/|q| over the last axis, per entry: where p_i and q_i have one sign, as
    (p_i**2 |q|**2 - q_i**2 |p|**2)/(|p||q|(|p_i||q| + |q_i||p|)) with the numerator from
    products (p - q)(p + q) and sums over the other entries, so two near-equal unit vectors
    are not subtracted (the gradient of a difference of distances near a line). A zero
    vector's unit vector is 0 (the norm's subgradient there)."""

    display = "unit_diff"
    nargs = 2
    lowering = {b: "_unit_diff({0}, {1})" for b in _NS}
    helpers = {b: _helper_unit_diff(b) + "\n\n" + SumOthers.helpers[b] for b in _NS}

    @classmethod
    def textbook(cls, p, q):
        def unit(w):
            return w / sympy.sqrt(ClassSum(w**2))

        return unit(p) - unit(q)


class UnitDiffJvp(_ClassPrimitive):
    """The derivative of UnitDiff(p, q) along (dp, dq): each direction's part across its
    vector over the vector's norm, entry i as (dp_i S_i - p_i T_i)/|p|**3 with S_i and T_i
    sums over the other entries (no p_i**2 dp_i to cancel where p lies along an axis). Where p
    and q are near (|p - q| at most half of each norm) it is J(p)(dp - dq) + (J(p) - J(q))dq,
    the second with each difference of p and q taken through p - q (S_i(p) - S_i(q) from
    (p - q)(p + q), 1/|p|**3 - 1/|q|**3 from |q|**2 - |p|**2): the two parts do not cancel
    where the directions are equal and p and q nearly so."""

    display = "unit_diff_jvp"
    nargs = 4
    lowering = {b: "_unit_diff_jvp({0}, {1}, {2}, {3})" for b in _NS}
    helpers = {b: _helper_unit_diff_jvp(b) + "\n\n" + SumOthers.helpers[b] for b in _NS}

    @classmethod
    def textbook(cls, p, q, dp, dq):
        def d_unit(w, dw):
            n = sympy.sqrt(ClassSum(w**2))
            return dw / n - w * ClassSum(w * dw) / n**3

        return d_unit(p, dp) - d_unit(q, dq)


def _jvp_unit_diff(node, d):
    p, q = node.args
    return UnitDiffJvp(p, q, d(p), d(q))


#: the Hessian-vector product of a stable gradient differentiates unit_diff by its own rule
_ENTRY_JVP[UnitDiff] = _jvp_unit_diff


def _unit_vector(term: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(k, p) where ``term`` is k*p/sqrt(sum(p**2)), k a number, p free of reductions."""
    factors = sympy.Mul.make_args(term)
    norms = [
        f for f in factors
        if f.is_Pow and f.exp == -sympy.S.Half and isinstance(f.base, ClassSum)
        and f.base.args[0].is_Pow and f.base.args[0].exp == 2
    ]
    if len(norms) != 1:
        return None
    p = norms[0].base.args[0].base
    if p.has(ClassSum):
        return None
    rest = sympy.Mul(*(f for f in factors if f is not norms[0]))
    k = sympy.simplify(rest / p)
    if not k.is_Number:
        return None
    return k, p


def unit_differences(expr: sympy.Expr) -> sympy.Expr:
    """k*p/|p| - k*q/|q| -> k*UnitDiff(p, q) among the terms of a sum (the gradient of a sum
    of distances: d/dx of |x - a| + |x - b| - ... is a sum of unit vectors, and near a line
    two of them nearly cancel)."""
    terms = list(sympy.Add.make_args(expr))
    units = [(i, _unit_vector(t)) for i, t in enumerate(terms)]
    units = [(i, u) for i, u in units if u is not None]
    used: set[int] = set()
    out = []
    for i, (k, p) in units:
        if i in used:
            continue
        for j, (m, q) in units:
            if j in used or j == i or m != -k:
                continue
            used |= {i, j}
            out.append(k * UnitDiff(p, q) if k > 0 else m * UnitDiff(q, p))
            break
    if not out:
        return expr
    return sympy.Add(*out, *(t for n, t in enumerate(terms) if n not in used))


#: (primitive, rule, before, after, reason), as lossgen._classes.CLASS_FORMS
NORM_FORMS = (
    (NormGap, "norm_gap", "|u| + |v| - |u + v|", "norm_gap(u, v)",
     "2*|u^v|**2/((|u||v| + u.v)(|u| + |v| + |u + v|)) where u.v > 0 (Lagrange's identity), "
     "|u^v| from the part of v across u: terms of one sign, no difference of near-equal norms"),
    (UnitDiff, "unit_diff", "p/|p| - q/|q|", "unit_diff(p, q)",
     "entry i, where p_i and q_i have one sign: (p_i**2 |q|**2 - q_i**2 |p|**2)/(|p||q|(|p_i||q| "
     "+ |q_i||p|)), the numerator from (p - q)(p + q) and sums over the other entries: the "
     "gradient of a difference of distances near a line without subtracting two near-equal "
     "unit vectors"),
    (UnitDiffJvp, "unit_diff_jvp", "d(p/|p| - q/|q|)", "unit_diff_jvp(p, q, dp, dq)",
     "entry i of each direction's part across its vector as (dp_i S_i - p_i T_i)/|p|**3, S_i "
     "and T_i sums over the other entries; where p and q are near, J(p)(dp - dq) + (J(p) - "
     "J(q))dq with the differences of p and q through p - q (the derivative of unit_diff, for "
     "the Hessian-vector product of the stable gradient)"),
)
