"""Values the oracle gives where a textbook formula is 0*inf or 1/0 at an end of its domain.

A KL divergence's t*log(t) is 0*(-inf) at t = 0 in any arithmetic, mpmath's included, where its
value (the limit, and the convention 0*log(0) = 0 of information theory) is 0; its derivatives
there are truly infinite: log(t) + 1 = -inf, 1/t = +inf. ``zero_log_zero`` writes each such
product as ``XLogX(t)``, whose derivatives ``LogPlusOne`` and ``Reciprocal`` carry those
infinities instead of raising on log(0) and 1/0. ``CONVENTIONS`` maps their names to mpmath
functions for lambdify.
"""

from __future__ import annotations

import mpmath
import sympy

__all__ = ["CONVENTIONS", "LogPlusOne", "Reciprocal", "XLogX", "zero_log_zero"]


class Reciprocal(sympy.Function):
    """1/t for t >= 0, +inf at t = 0."""

    nargs = 1

    def fdiff(self, argindex=1):
        return -Reciprocal(self.args[0]) ** 2


class LogPlusOne(sympy.Function):
    """log(t) + 1 for t >= 0, -inf at t = 0: the derivative of t*log(t)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return Reciprocal(self.args[0])


class XLogX(sympy.Function):
    """t*log(t) for t >= 0, 0 at t = 0."""

    nargs = 1

    def fdiff(self, argindex=1):
        return LogPlusOne(self.args[0])


def _reciprocal(t):
    return mpmath.inf if t == 0 else 1 / t


def _log_plus_one(t):
    return mpmath.log(t) + 1


def _xlogx(t):
    return mpmath.mpf(0) if t == 0 else t * mpmath.log(t)


CONVENTIONS = {"Reciprocal": _reciprocal, "LogPlusOne": _log_plus_one, "XLogX": _xlogx}


def zero_log_zero(expr: sympy.Expr, symbols) -> sympy.Expr:
    """Each product t*(... + c*log(t) + ...), t one of ``symbols`` (inputs that can be 0),
    with t*log(t) written as XLogX(t)."""
    symbols = [s for s in symbols if expr.has(sympy.log(s))]
    if not symbols:
        return expr

    def visit(node):
        if node.is_Atom:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if not node.is_Mul:
            return node
        for t in symbols:
            if t not in node.args or not node.has(sympy.log(t)):
                continue
            terms = []
            for term in sympy.Add.make_args(sympy.expand_mul(node / t)):
                c = term / sympy.log(t)
                if term.has(sympy.log(t)) and not c.has(sympy.log(t)):
                    terms.append(c * XLogX(t))
                else:
                    terms.append(t * term)
            return sympy.Add(*terms)
        return node

    return visit(expr)
