"""Sign facts about subterms over the declared domains: which are >= 0, which are > 0.

Structural rules (sigmoid and exp are positive, log_sigmoid negative, products and sums of
signed terms) plus one exact fallback: a function of the inputs and parameters with bounded
domains that is affine in each of them separately attains its extremes at the corners of their
domain box (``1 - y``, ``alpha*y + (1 - alpha)*(1 - y)`` and, for a probability input p,
``p*(1 - y) + y*(1 - p)`` are >= 0 for p, y, alpha in [0, 1]).
"""

from __future__ import annotations

import itertools

import sympy

from ._primitives import Exp, LogSigmoid, Sigmoid, Softplus
from ._types import Spec

__all__ = ["affine", "sign"]

POS, NONNEG, NEG, NONPOS = "pos", "nonneg", "neg", "nonpos"
_FLIP = {POS: NEG, NONNEG: NONPOS, NEG: POS, NONPOS: NONNEG, None: None}


def _times(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    negative = (a in (NEG, NONPOS)) != (b in (NEG, NONPOS))
    strict = a in (POS, NEG) and b in (POS, NEG)
    if negative:
        return NEG if strict else NONPOS
    return POS if strict else NONNEG


def _plus(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return None
    if a in (POS, NONNEG) and b in (POS, NONNEG):
        return POS if POS in (a, b) else NONNEG
    if a in (NEG, NONPOS) and b in (NEG, NONPOS):
        return NEG if NEG in (a, b) else NONPOS
    return None


def _box(spec: Spec) -> dict[sympy.Symbol, list[sympy.Expr]]:
    """Corner values of every input and parameter with a bounded domain."""
    corners = {}
    for inp in spec.inputs:
        d = inp.domain
        if d.kind == "interval" and d.lo.is_finite and d.hi.is_finite:
            corners[inp.symbol] = [d.lo, d.hi]
        elif inp.role == "constant" and d.kind == "set":
            corners[inp.symbol] = list(d.elements)
    for p in spec.params:
        d = p.domain
        if d is not None and d.kind == "interval" and d.lo.is_finite and d.hi.is_finite:
            corners[p.symbol] = [d.lo, d.hi]
    return corners


def _corner_sign(expr: sympy.Expr, spec: Spec) -> str | None:
    box = _box(spec)
    free = sorted(expr.free_symbols, key=str)
    if not free or any(s not in box for s in free):
        return None
    if any(sympy.degree(expr, s) > 1 for s in free if expr.is_polynomial(s)) or not expr.is_polynomial(*free):
        return None
    values = [expr.subs(dict(zip(free, corner))) for corner in itertools.product(*(box[s] for s in free))]
    if all(v > 0 for v in values):
        return POS
    if all(v >= 0 for v in values):
        return NONNEG
    if all(v < 0 for v in values):
        return NEG
    if all(v <= 0 for v in values):
        return NONPOS
    return None


def _domain_of(symbol: sympy.Symbol, spec: Spec):
    """The declared domain of an input or parameter symbol (None for a categorical one)."""
    for inp in spec.inputs:
        if inp.symbol == symbol:
            return inp.domain
    return next((p.domain for p in spec.params if p.symbol == symbol), None)


def _symbol_sign(symbol: sympy.Symbol, spec: Spec) -> str | None:
    domain = _domain_of(symbol, spec)
    if domain is None or domain.kind == "index":
        return None
    if domain.kind == "set":
        values = domain.elements
        lo, hi, lo_closed, hi_closed = min(values), max(values), True, True
    else:
        lo, hi, lo_closed, hi_closed = domain.lo, domain.hi, domain.lo_closed, domain.hi_closed
    if lo > 0 or (lo == 0 and not lo_closed):
        return POS
    if lo >= 0:
        return NONNEG
    if hi < 0 or (hi == 0 and not hi_closed):
        return NEG
    if hi <= 0:
        return NONPOS
    return None


def affine(expr: sympy.Expr, s_form: sympy.Expr, sbar_form: sympy.Expr):
    """``expr`` as a0 + a1*s, where s = s_form and sbar_form = 1 - s (sigmoid(u) and
    sigmoid(-u), say); None if it is not affine in s."""
    s = sympy.Dummy("s")
    flat = expr.subs(sbar_form, 1 - s).subs(s_form, s)
    if flat.has(s_form) or flat.has(sbar_form):
        return None
    a1 = sympy.expand(sympy.diff(flat, s))
    if a1.has(s):
        return None
    return flat.subs(s, 0), a1


def _sigmoid_affine_sign(expr: sympy.Expr, spec: Spec) -> str | None:
    """a0 + a1*s with s = sigmoid(u) in (0, 1): the sign of both ends a0 and a0 + a1."""
    args = {node.args[0] for node in expr.atoms(Sigmoid)}
    u = next(iter(args))
    if any(a not in (u, -u) for a in args):
        return None
    parts = affine(expr, Sigmoid(u), Sigmoid(-u))
    if parts is None:
        return None
    a0, a1 = parts
    ends = [sign(sympy.factor(a0), spec), sign(sympy.factor(a0 + a1), spec)]
    if all(e in (POS, NONNEG) for e in ends):
        return POS if POS in ends else NONNEG
    if all(e in (NEG, NONPOS) for e in ends):
        return NEG if NEG in ends else NONPOS
    return None


def _affine_sign(expr: sympy.Expr, symbol: sympy.Symbol, spec: Spec) -> str | None:
    """The sign of c + k*s over the interval domain of s (1 + pred > 0 for pred > -1)."""
    if not expr.is_polynomial(symbol) or sympy.degree(expr, symbol) != 1:
        return None
    domain = _domain_of(symbol, spec)
    if domain is None or domain.kind != "interval":
        return None
    k = expr.coeff(symbol, 1)
    if not k.is_Number or k == 0:
        return None
    ends = [(domain.lo, domain.lo_closed), (domain.hi, domain.hi_closed)]
    values = [(expr.subs(symbol, end), closed) for end, closed in ends]
    low = min(values, key=lambda vc: vc[0])
    if low[0] > 0 or (low[0] == 0 and not low[1]):
        return POS
    if low[0] >= 0:
        return NONNEG
    high = max(values, key=lambda vc: vc[0])
    if high[0] < 0 or (high[0] == 0 and not high[1]):
        return NEG
    if high[0] <= 0:
        return NONPOS
    return None


def sign(expr: sympy.Expr, spec: Spec) -> str | None:
    """"pos", "nonneg", "neg", "nonpos", or None when unknown, over the declared domains."""
    if expr.is_Number:
        if expr > 0:
            return POS
        return NONNEG if expr == 0 else NEG
    if expr.is_Symbol:
        return _symbol_sign(expr, spec)
    if isinstance(expr, (Sigmoid, Softplus, Exp, sympy.exp)):
        return POS
    if isinstance(expr, LogSigmoid):
        return NEG
    if isinstance(expr, sympy.Abs):
        return NONNEG
    if expr.is_Pow:
        base, exponent = expr.args
        base_sign = sign(base, spec)
        if base_sign == POS:
            return POS
        if exponent.is_Integer and int(exponent) % 2 == 0:
            return NONNEG
        if base_sign == NONNEG:
            return NONNEG
        return _corner_sign(expr, spec)
    if expr.is_Add and expr.has(Sigmoid):
        result = _sigmoid_affine_sign(expr, spec)
        if result is not None:
            return result
    if expr.is_Add and len(expr.free_symbols) == 1:
        result = _affine_sign(expr, next(iter(expr.free_symbols)), spec)
        if result is not None:
            return result
    if expr.is_Mul or expr.is_Add:
        combine = _times if expr.is_Mul else _plus
        result = sign(expr.args[0], spec)
        for arg in expr.args[1:]:
            result = combine(result, sign(arg, spec))
        return result if result is not None else _corner_sign(expr, spec)
    return _corner_sign(expr, spec)
