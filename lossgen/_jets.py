"""Exact derivatives of a written-out expression by Taylor arithmetic in mpmath.

The oracle of a loss over a class axis needs, at each point, the value, the gradient, the
Hessian (for the condition number of each gradient entry), the Hessian-vector product and the
derivatives of that product (for its condition number). Differentiating the written-out
expression symbolically makes all of these expressions, each a sum over the classes, and their
size grows as C**4: at C = 16 SymPy takes hours. Here the expression is evaluated once per point
on truncated Taylor polynomials instead: every node carries

    P(d) + t*Q(d),    P, Q quadratic in the displacement d of the differentiated entries,

that is the value f, gradient g and Hessian H of the node (P) and those of its derivative in
the direction v, g.v, H v and T v (Q; T the third derivative). Each operation is the exact
chain rule on these coefficients, in mpmath at the working precision: nothing is differenced
numerically, and the cost is O(C**2) per node.

Conventions are the oracle's (sign(0) = Heaviside(0) = 0, DiracDelta = 0): a Max or Min whose
leading arguments tie, and Abs at 0, have the 0 derivative.
"""

from __future__ import annotations

import functools
import operator

import mpmath
import numpy as np
import sympy

__all__ = ["Jet", "evaluate"]


def _quadratic_product(a, b):
    """The product of two quadratic Taylor polynomials (value, gradient, Hessian), truncated."""
    a0, a1, a2 = a
    b0, b1, b2 = b
    outer = np.outer(a1, b1)
    return a0 * b0, a0 * b1 + b0 * a1, a0 * b2 + b0 * a2 + outer + outer.T


class Jet:
    """f, g, H of a node (the P part) and g.v, H v, (T v) (the Q part)."""

    __slots__ = ("p", "q")

    def __init__(self, p, q):
        self.p, self.q = p, q

    @classmethod
    def variable(cls, value, i: int, direction) -> "Jet":
        n = len(direction)
        g = np.array([mpmath.mpf(0)] * n, dtype=object)
        g[i] = mpmath.mpf(1)
        zero_h = np.full((n, n), mpmath.mpf(0), dtype=object)
        zero_g = np.array([mpmath.mpf(0)] * n, dtype=object)
        return cls((value, g, zero_h), (direction[i], zero_g, zero_h))

    @property
    def value(self):
        return self.p[0]

    def scaled(self, c) -> "Jet":
        return Jet(tuple(c * x for x in self.p), tuple(c * x for x in self.q))

    def shifted(self, c) -> "Jet":
        return Jet((self.p[0] + c, *self.p[1:]), self.q)

    def plus(self, other: "Jet") -> "Jet":
        return Jet(
            tuple(x + y for x, y in zip(self.p, other.p)),
            tuple(x + y for x, y in zip(self.q, other.q)),
        )

    def times(self, other: "Jet") -> "Jet":
        p = _quadratic_product(self.p, other.p)
        q = [
            x + y
            for x, y in zip(_quadratic_product(self.p, other.q), _quadratic_product(self.q, other.p))
        ]
        return Jet(p, tuple(q))

    def through(self, d0, d1, d2, d3) -> "Jet":
        """phi(self), for phi with derivatives d0..d3 at self's value."""
        _, p1, p2 = self.p
        square = np.outer(p1, p1)
        p = (d0, d1 * p1, d1 * p2 + d2 * square)
        slope = (d1, d2 * p1, d2 * p2 + d3 * square)
        return Jet(p, _quadratic_product(slope, self.q))

    def constant(self) -> "Jet":
        """The value alone, with every derivative 0."""
        zero = mpmath.mpf(0)
        return Jet(
            (self.p[0], self.p[1] * zero, self.p[2] * zero),
            (zero, self.q[1] * zero, self.q[2] * zero),
        )


def _value(x):
    return x.value if isinstance(x, Jet) else x


def _add(a, b):
    if isinstance(a, Jet):
        return a.plus(b) if isinstance(b, Jet) else a.shifted(b)
    return b.shifted(a) if isinstance(b, Jet) else a + b


def _mul(a, b):
    if isinstance(a, Jet):
        return a.times(b) if isinstance(b, Jet) else a.scaled(b)
    return b.scaled(a) if isinstance(b, Jet) else a * b


def _power(base, exponent):
    if isinstance(exponent, Jet):
        return _exp(_mul(exponent, _log(base)))
    if not isinstance(base, Jet):
        return base**exponent
    u, c = base.value, exponent
    derivatives, coefficient = [], mpmath.mpf(1)
    for k in range(4):
        # (a coefficient of 0, as for u**2 differentiated thrice, never evaluates 0**-1)
        derivatives.append(coefficient * u ** (c - k) if coefficient != 0 else mpmath.mpf(0))
        coefficient *= c - k
    return base.through(*derivatives)


def _exp(u):
    if not isinstance(u, Jet):
        return mpmath.exp(u)
    e = mpmath.exp(u.value)
    return u.through(e, e, e, e)


def _log(u):
    if not isinstance(u, Jet):
        return mpmath.log(u)
    r = 1 / u.value
    return u.through(mpmath.log(u.value), r, -r * r, 2 * r * r * r)


def _sign(x):
    return mpmath.mpf(0) if x == 0 else mpmath.mpf(1 if x > 0 else -1)


def _abs(u):
    if not isinstance(u, Jet):
        return abs(u)
    return _mul(_sign(u.value), u)


def _extreme(args, better):
    """Max (better = operator.gt) or Min of the arguments, with the 0 derivative at a tie."""
    best = args[0]
    tied = False
    for a in args[1:]:
        if better(_value(a), _value(best)):
            best, tied = a, False
        elif _value(a) == _value(best):
            tied = True
    if tied and isinstance(best, Jet):
        return best.constant()
    return best


@functools.lru_cache(maxsize=None)
def _unary_derivatives(func):
    """mpmath functions of z giving func(z) and its first three derivatives."""
    z = sympy.Dummy("z", real=True)
    body = func(z)
    exprs = [body]
    for _ in range(3):
        exprs.append(sympy.diff(exprs[-1], z))
    return sympy.lambdify([z], exprs, modules=[_CONVENTIONS, "mpmath"])


def _heaviside(x, *_):
    return mpmath.mpf(1) if x > 0 else mpmath.mpf(0)


_CONVENTIONS = {
    "Heaviside": _heaviside,
    "sign": _sign,
    "DiracDelta": lambda *a: mpmath.mpf(0),
}

_RELATIONS = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


class _Evaluator:
    def __init__(self, values: dict, variables: dict, direction):
        self.values = values  # symbol -> mpf, the constants
        self.variables = variables  # symbol -> index among the differentiated entries
        self.direction = direction
        self.memo: dict = {}

    def __call__(self, node):
        try:
            return self.memo[node]
        except KeyError:
            pass
        result = self._evaluate(node)
        self.memo[node] = result
        return result

    def _evaluate(self, node):
        if node.is_Symbol:
            if node in self.variables:
                i = self.variables[node]
                return Jet.variable(self.values[node], i, self.direction)
            return self.values[node]
        if node.is_Integer:
            return mpmath.mpf(int(node))
        if node.is_Rational:
            return mpmath.mpf(int(node.p)) / int(node.q)
        if node.is_Number or node.is_NumberSymbol:
            return mpmath.mpf(str(node.evalf(mpmath.mp.dps + 10)))
        if node.is_Add:
            return functools.reduce(_add, (self(a) for a in node.args))
        if node.is_Mul:
            return functools.reduce(_mul, (self(a) for a in node.args))
        if node.is_Pow:
            return _power(self(node.base), self(node.exp))
        if isinstance(node, sympy.exp):
            return _exp(self(node.args[0]))
        if isinstance(node, sympy.log) and len(node.args) == 1:
            return _log(self(node.args[0]))
        if isinstance(node, sympy.Piecewise):
            for expr, condition in node.args:
                if self._holds(condition):
                    return self(expr)
            return mpmath.nan
        if isinstance(node, sympy.KroneckerDelta):
            a, b = (self(x) for x in node.args)
            return mpmath.mpf(1 if _value(a) == _value(b) else 0)
        if isinstance(node, sympy.Abs):
            return _abs(self(node.args[0]))
        if isinstance(node, sympy.Max):
            return _extreme([self(a) for a in node.args], operator.gt)
        if isinstance(node, sympy.Min):
            return _extreme([self(a) for a in node.args], operator.lt)
        if isinstance(node, (sympy.Heaviside, sympy.sign)):
            return _CONVENTIONS[type(node).__name__](_value(self(node.args[0])))
        if isinstance(node, sympy.DiracDelta):
            return mpmath.mpf(0)
        if isinstance(node, sympy.Function) and len(node.args) == 1:
            u = self(node.args[0])
            f = _unary_derivatives(node.func)
            if not isinstance(u, Jet):
                return f(u)[0]
            return u.through(*f(u.value))
        raise TypeError(f"no Taylor arithmetic for {type(node).__name__}: {node}")

    def _holds(self, condition) -> bool:
        if condition is sympy.true:
            return True
        if condition is sympy.false:
            return False
        if isinstance(condition, sympy.And):
            return all(self._holds(c) for c in condition.args)
        if isinstance(condition, sympy.Or):
            return any(self._holds(c) for c in condition.args)
        if isinstance(condition, sympy.Not):
            return not self._holds(condition.args[0])
        if isinstance(condition, sympy.core.relational.Relational):
            lhs, rhs = (_value(self(a)) for a in condition.args)
            return bool(_RELATIONS[condition.rel_op](lhs, rhs))
        raise TypeError(f"no truth value for {condition}")


def evaluate(expr: sympy.Expr, values: dict, xs: list, direction: list) -> Jet:
    """The Jet of ``expr`` at ``values`` (symbol -> mpf) in the variables ``xs``, with the
    Hessian-vector product along ``direction`` (one mpf per variable)."""
    direction = np.array(direction, dtype=object)
    evaluator = _Evaluator(values, {x: i for i, x in enumerate(xs)}, direction)
    result = evaluator(expr)
    if not isinstance(result, Jet):  # the expression does not depend on xs at this point
        result = Jet.variable(mpmath.mpf(0), 0, direction).scaled(mpmath.mpf(0)).shifted(result)
    return result
