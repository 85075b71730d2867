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
numerically, and the cost is O(C**2) per node. For many classes a first-order Jet (P and Q
linear: value, gradient, g.v and H v) costs O(C) per node.

Conventions are the oracle's (sign(0) = Heaviside(0) = 0, DiracDelta = 0): a Max or Min whose
leading arguments tie, and Abs at 0, have the 0 derivative.
"""

from __future__ import annotations

import functools
import operator

import mpmath
import numpy as np
import sympy

from ._conventions import CONVENTIONS

__all__ = ["Jet", "SparseJet", "evaluate"]


def _times0(a, b):
    """a*b, with 0*inf = 0: a coefficient that is exactly 0 is a derivative that is exactly 0
    (a node that does not depend on that entry), whatever it is multiplied by (the infinite
    derivative of t*log(t) at t = 0, lossgen._conventions)."""
    return mpmath.mpf(0) if a == 0 or b == 0 else a * b


_TIMES0 = np.frompyfunc(_times0, 2, 1)


def _infinite(a) -> bool:
    if isinstance(a, np.ndarray):
        return any(mpmath.isinf(e) for e in a.flat)
    return mpmath.isinf(a)


#: arrays known to be all 0, by identity (a node linear in the entries has a zero Hessian, and
#: an entry's gradient has one nonzero): operations on them are skipped, so that the cost of a
#: node follows what it depends on, not the square of the number of entries
_ZERO_IDS: set[int] = set()
_ZERO_ARRAYS: dict[tuple, np.ndarray] = {}


def _zeros(shape: tuple) -> np.ndarray:
    if shape not in _ZERO_ARRAYS:
        z = np.full(shape, mpmath.mpf(0), dtype=object)
        z.flags.writeable = False
        _ZERO_ARRAYS[shape] = z
        _ZERO_IDS.add(id(z))
    return _ZERO_ARRAYS[shape]


def _is_zero(a) -> bool:
    return isinstance(a, np.ndarray) and id(a) in _ZERO_IDS


def _scale(c, a):
    """c*a for a scalar c and an array (or scalar) a, with 0*inf = 0."""
    if _is_zero(a):
        return a
    if _infinite(c) or (c == 0 and _infinite(a)):
        return _TIMES0(c, a) if isinstance(a, np.ndarray) else _times0(c, a)
    return c * a


def _sum(*arrays):
    """The sum of arrays, skipping the known zeros."""
    kept = [a for a in arrays if not _is_zero(a)]
    if not kept:
        return arrays[0]
    return functools.reduce(operator.add, kept)


def _support(a) -> np.ndarray:
    return np.array([i for i, e in enumerate(a) if e != 0], dtype=int)


def _outer(a, b):
    if _is_zero(a) or _is_zero(b):
        return _zeros((len(a), len(b)))
    ia, ib = _support(a), _support(b)
    if len(ia) == 0 or len(ib) == 0:
        return _zeros((len(a), len(b)))
    sa, sb = a[ia], b[ib]
    block = _TIMES0.outer(sa, sb) if _infinite(sa) or _infinite(sb) else np.outer(sa, sb)
    if len(ia) == len(a) and len(ib) == len(b):
        return block
    out = np.full((len(a), len(b)), mpmath.mpf(0), dtype=object)
    out[np.ix_(ia, ib)] = block
    return out


def _product(a, b):
    """The product of two quadratic Taylor polynomials (value, gradient, Hessian), truncated."""
    a0, a1, a2 = a
    b0, b1, b2 = b
    outer = _outer(a1, b1)
    return (
        _scale(a0, b0),
        _sum(_scale(a0, b1), _scale(b0, a1)),
        _sum(_scale(a0, b2), _scale(b0, a2), outer, outer if _is_zero(outer) else outer.T),
    )


class Jet:
    """f, g, H of a node (the P part) and g.v, H v, (T v) (the Q part)."""

    __slots__ = ("p", "q")

    def __init__(self, p, q):
        self.p, self.q = p, q

    @classmethod
    def variable(cls, value, i: int, direction) -> "Jet":
        n = len(direction)
        zero = mpmath.mpf(0)
        g = np.array([zero] * n, dtype=object)
        g[i] = mpmath.mpf(1)
        zero_g, zero_h = _zeros((n,)), _zeros((n, n))
        return cls((value, g, zero_h), (direction[i], zero_g, zero_h))

    @property
    def value(self):
        return self.p[0]

    def scaled(self, c) -> "Jet":
        return Jet(tuple(_scale(c, x) for x in self.p), tuple(_scale(c, x) for x in self.q))

    def shifted(self, c) -> "Jet":
        return Jet((self.p[0] + c, *self.p[1:]), self.q)

    def plus(self, other: "Jet") -> "Jet":
        return Jet(
            tuple(_sum(x, y) for x, y in zip(self.p, other.p)),
            tuple(_sum(x, y) for x, y in zip(self.q, other.q)),
        )

    def times(self, other: "Jet") -> "Jet":
        p = _product(self.p, other.p)
        q = [_sum(x, y) for x, y in zip(_product(self.p, other.q), _product(self.q, other.p))]
        return Jet(p, tuple(q))

    def through(self, d0, d1, d2, d3) -> "Jet":
        """phi(self), for phi with derivatives d0..d3 at self's value."""
        _, p1, p2 = self.p
        square = _outer(p1, p1)
        p = (d0, _scale(d1, p1), _sum(_scale(d1, p2), _scale(d2, square)))
        slope = (d1, _scale(d2, p1), _sum(_scale(d2, p2), _scale(d3, square)))
        return Jet(p, _product(slope, self.q))

    def constant(self) -> "Jet":
        """The value alone, with every derivative 0."""
        zero = mpmath.mpf(0)
        return Jet(
            (self.p[0], *(_zeros(a.shape) for a in self.p[1:])),
            (zero, *(_zeros(a.shape) for a in self.q[1:])),
        )


class _Vec:
    """A vector as a lazy linear combination: a unit vector (``index``), or sum c_k*v_k over
    other _Vec (``terms``). Every gradient is a linear combination of the unit vectors of the
    entries, and many nodes share one (the softmax denominator's, in each of C terms): a dict
    per node would cost C per node and C**2 per sum over the classes; this costs the number of
    terms, and ``dense`` adds it up once, from the root down (as reverse mode does)."""

    __slots__ = ("index", "terms")

    def __init__(self, index=None, terms=()):
        self.index, self.terms = index, terms

    def dense(self, n: int) -> list:
        order, seen, stack = [], set(), [(self, False)]
        while stack:  # a topological order, by an iterative depth-first search
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for _, child in node.terms)
        weight = {id(self): mpmath.mpf(1)}
        out = [mpmath.mpf(0)] * n
        for node in reversed(order):
            w = weight.pop(id(node), None)
            if w is None:
                continue
            if node.index is not None:
                out[node.index] += w
            for c, child in node.terms:
                weight[id(child)] = weight[id(child)] + w * c if id(child) in weight else w * c
        return out


def _combined(*terms):
    """sum of c*v over the (c, v) pairs (v a _Vec, or None for 0), or None for 0."""
    kept = tuple((c, v) for c, v in terms if v is not None and c != 0)
    if not kept:
        return None
    if len(kept) == 1 and kept[0][0] == 1:
        return kept[0][1]
    return _Vec(terms=kept)


def _scaled(v, c):
    return _combined((c, v))


class SparseJet:
    """A first-order Jet whose vectors are lazy linear combinations (_Vec): with many classes a
    dense vector per node would make a sum over the classes cost C**2. p = (f, g), q = (g.v,
    H v)."""

    __slots__ = ("p", "q")

    def __init__(self, p, q):
        self.p, self.q = p, q

    @classmethod
    def variable(cls, value, i: int, direction) -> "SparseJet":
        return cls((value, _Vec(index=i)), (direction[i], None))

    @property
    def value(self):
        return self.p[0]

    def scaled(self, c) -> "SparseJet":
        return SparseJet(
            (c * self.p[0], _scaled(self.p[1], c)), (c * self.q[0], _scaled(self.q[1], c))
        )

    def shifted(self, c) -> "SparseJet":
        return SparseJet((self.p[0] + c, self.p[1]), self.q)

    def plus(self, other: "SparseJet") -> "SparseJet":
        return SparseJet.total([self, other])

    @staticmethod
    def total(jets: list) -> "SparseJet":
        one = mpmath.mpf(1)
        return SparseJet(
            (mpmath.fsum(j.p[0] for j in jets), _combined(*((one, j.p[1]) for j in jets))),
            (mpmath.fsum(j.q[0] for j in jets), _combined(*((one, j.q[1]) for j in jets))),
        )

    def times(self, other: "SparseJet") -> "SparseJet":
        (a0, a1), (c0, c1) = self.p, self.q
        (b0, b1), (d0, d1) = other.p, other.q
        # (a + t c)(b + t d) = ab + t (a d + c b), each truncated to first order in x
        return SparseJet(
            (a0 * b0, _combined((a0, b1), (b0, a1))),
            (a0 * d0 + c0 * b0, _combined((a0, d1), (d0, a1), (c0, b1), (b0, c1))),
        )

    def through(self, d0, d1, d2, d3) -> "SparseJet":
        (_, p1), (q0, q1) = self.p, self.q
        # phi'(P)*Q with phi'(P) = (d1, d2*p1)
        return SparseJet((d0, _scaled(p1, d1)), (d1 * q0, _combined((d1, q1), (d2 * q0, p1))))

    def constant(self) -> "SparseJet":
        return SparseJet((self.p[0], None), (mpmath.mpf(0), None))

    def dense(self, n: int) -> tuple:
        """(f, g, g.v, H v) with the vectors as lists of n entries."""
        def vector(v):
            return [mpmath.mpf(0)] * n if v is None else v.dense(n)

        return self.p[0], vector(self.p[1]), self.q[0], vector(self.q[1])


def _value(x):
    return x.value if isinstance(x, _JETS) else x


_JETS = (Jet, SparseJet)


def _add(a, b):
    if isinstance(a, _JETS):
        return a.plus(b) if isinstance(b, _JETS) else a.shifted(b)
    return b.shifted(a) if isinstance(b, _JETS) else a + b


def _mul(a, b):
    # an exact 0 factor (a one-hot entry away from the label) removes the term, derivatives too
    if (not isinstance(a, _JETS) and a == 0) or (not isinstance(b, _JETS) and b == 0):
        return mpmath.mpf(0)
    if isinstance(a, _JETS):
        return a.times(b) if isinstance(b, _JETS) else a.scaled(b)
    return b.scaled(a) if isinstance(b, _JETS) else a * b


def _power(base, exponent):
    if isinstance(exponent, _JETS):
        return _exp(_mul(exponent, _log(base)))
    if not isinstance(base, _JETS):
        return base**exponent
    u, c = base.value, exponent
    derivatives, coefficient = [], mpmath.mpf(1)
    for k in range(4):
        # (a coefficient of 0, as for u**2 differentiated thrice, never evaluates 0**-1)
        derivatives.append(coefficient * u ** (c - k) if coefficient != 0 else mpmath.mpf(0))
        coefficient *= c - k
    return base.through(*derivatives)


def _exp(u):
    if not isinstance(u, _JETS):
        return mpmath.exp(u)
    e = mpmath.exp(u.value)
    return u.through(e, e, e, e)


def _log(u):
    if not isinstance(u, _JETS):
        return mpmath.log(u)
    r = 1 / u.value
    return u.through(mpmath.log(u.value), r, -r * r, 2 * r * r * r)


def _sign(x):
    return mpmath.mpf(0) if x == 0 else mpmath.mpf(1 if x > 0 else -1)


def _abs(u):
    if not isinstance(u, _JETS):
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
    if tied and isinstance(best, _JETS):
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
    **CONVENTIONS,
}

_RELATIONS = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


class _Evaluator:
    def __init__(self, values: dict, variables: dict, direction, order: int):
        self.order = order
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
                if self.order == 1:
                    return SparseJet.variable(self.values[node], i, self.direction)
                return Jet.variable(self.values[node], i, self.direction)
            return self.values[node]
        if node.is_Integer:
            return mpmath.mpf(int(node))
        if node.is_Rational:
            return mpmath.mpf(int(node.p)) / int(node.q)
        if node.is_Number or node.is_NumberSymbol:
            return mpmath.mpf(str(node.evalf(mpmath.mp.dps + 10)))
        if node.is_Add:
            terms = [self(a) for a in node.args]
            jets = [t for t in terms if isinstance(t, SparseJet)]
            if len(jets) > 2:  # one pass over the sparse vectors, not a sum of partial sums
                rest = [t for t in terms if not isinstance(t, SparseJet)]
                return SparseJet.total(jets).shifted(mpmath.fsum(rest)) if rest else SparseJet.total(jets)
            return functools.reduce(_add, terms)
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
            if not isinstance(u, _JETS):
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


def evaluate(expr: sympy.Expr, values: dict, xs: list, direction: list, order: int = 2):
    """The Jet of ``expr`` at ``values`` (symbol -> mpf) in the variables ``xs``, with the
    Hessian-vector product along ``direction`` (one mpf per variable); for ``order=1`` a
    SparseJet (no Hessian, no third derivative)."""
    direction = np.array(direction, dtype=object) if order == 2 else list(direction)
    evaluator = _Evaluator(values, {x: i for i, x in enumerate(xs)}, direction, order)
    result = evaluator(expr)
    if not isinstance(result, _JETS):  # the expression does not depend on xs at this point
        if order == 1:
            return SparseJet((result, None), (mpmath.mpf(0), None))
        zero = Jet.variable(mpmath.mpf(0), 0, direction).scaled(mpmath.mpf(0))
        result = zero.shifted(result)
    return result
