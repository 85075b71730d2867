"""Leading-order behaviour of subterms at the domain boundaries, by SymPy series.

Each differentiated input approaches each end of its domain through a variable t -> 0+
(x -> oo is x = -log t, x -> -oo is x = log t, p -> 1 is p = 1 - t, p -> 0 is p = t, ...). A
term behaves there like ``coeff * t**exponent * log(t)**logs``, with the exponent left symbolic
in the parameters, so that "diverges" and "vanishes" come with their parameter conditions
(``gamma - 2 < 0``). Constant inputs are looked at generically and at the finite ends of
their domains (labels 0 and 1 behave differently from soft labels).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy

from ._primitives import Primitive, to_textbook
from ._types import Input, Spec

__all__ = ["Behaviour", "Boundary", "Scenario", "boundaries", "leading", "scenarios"]

T = sympy.Symbol("t", positive=True)
_LOG_T = sympy.Symbol("log_t", negative=True)


@dataclass(frozen=True)
class Boundary:
    """One end of one differentiated input's domain, approached as t -> 0+."""

    input: Input
    label: str
    value: sympy.Expr
    #: a finite end inside the domain (closed): the input takes that value exactly, where a
    #: log that only tends to -oo on the way is -inf
    attained: bool = False


@dataclass(frozen=True)
class Scenario:
    """Values given to constant inputs (an empty mapping: all generic)."""

    values: tuple[tuple[sympy.Symbol, sympy.Expr], ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{s} = {v}" for s, v in self.values)


def boundaries(spec: Spec) -> list[Boundary]:
    out = []
    for inp in spec.differentiated:
        d, x = inp.domain, inp.symbol
        if d.kind != "interval":
            continue
        if d.hi is sympy.oo:
            out.append(Boundary(inp, f"{x} -> oo", -sympy.log(T) if d.lo is -sympy.oo else 1 / T))
        elif d.hi.is_finite:
            out.append(Boundary(inp, f"{x} -> {d.hi}", d.hi - T, d.hi_closed))
        if d.lo is -sympy.oo:
            out.append(Boundary(inp, f"{x} -> -oo", sympy.log(T)))
        elif d.lo.is_finite:
            out.append(Boundary(inp, f"{x} -> {d.lo}", d.lo + T, d.lo_closed))
    return out


def scenarios(spec: Spec) -> list[Scenario]:
    """Every combination of {each finite domain end, generic} over the constant inputs."""
    choices = []
    for inp in spec.inputs:
        if inp.role != "constant":
            continue
        d = inp.domain
        if d.kind == "set":
            options = [(inp.symbol, e) for e in d.elements]
        elif d.kind == "interval":
            ends = [e for e in (d.lo, d.hi) if e.is_finite]
            options = [None] + [(inp.symbol, e) for e in ends]
        else:
            options = [None]
        choices.append(options)
    out = []
    for combo in itertools.product(*choices):
        out.append(Scenario(tuple(c for c in combo if c is not None)))
    return out or [Scenario(())]


@dataclass(frozen=True)
class Behaviour:
    """``coeff * t**exponent * log(t)**logs`` as t -> 0+; ``None`` fields when unknown."""

    coeff: sympy.Expr
    exponent: sympy.Expr
    logs: int

    def vanishes(self) -> sympy.Basic:
        """A condition (SymPy boolean) under which the term tends to 0."""
        if self.coeff == 0:
            return sympy.true
        return sympy.Or(self.exponent > 0, sympy.And(sympy.Eq(self.exponent, 0), self.logs < 0))

    def diverges(self) -> sympy.Basic:
        if self.coeff == 0:
            return sympy.false
        return sympy.Or(self.exponent < 0, sympy.And(sympy.Eq(self.exponent, 0), self.logs > 0))


def _top_log(factor: sympy.Expr) -> sympy.Expr:
    """A sum of terms c*log(T)**k (c free of log(T)) -> its terms of the largest k, which lead
    as T -> 0 (log(T) - x: log(T)); any other factor as it is."""
    if not factor.is_Add or not factor.has(_LOG_T):
        return factor
    powers = []
    for term in factor.args:
        k = sum(
            int(e) for b, e in (f.as_base_exp() for f in sympy.Mul.make_args(term)) if b == _LOG_T
            and e.is_Integer
        )
        if (term / _LOG_T**k).has(_LOG_T):
            return factor
        powers.append(k)
    top = max(powers)
    return sympy.Add(*(t for t, k in zip(factor.args, powers) if k == top))


def _parse_leading(term: sympy.Expr) -> Behaviour | None:
    term = sympy.Mul(*(_top_log(f) for f in sympy.Mul.make_args(term.subs(sympy.log(T), _LOG_T))))
    term = sympy.powsimp(sympy.factor(term), force=True)
    coeff, exponent = term.as_coeff_exponent(T)
    if coeff.has(T):
        return None
    logs = 0
    for factor in sympy.Mul.make_args(coeff):
        base, power = factor.as_base_exp()
        if base == _LOG_T:
            if not power.is_Integer:
                return None
            logs += int(power)
        elif factor.has(_LOG_T):
            return None
    coeff = coeff.subs(_LOG_T, 1)
    return Behaviour(coeff=coeff, exponent=sympy.simplify(exponent), logs=logs)


_CACHE: dict = {}


def _substitute(expr: sympy.Expr, values: dict) -> sympy.Expr:
    """Give constant inputs their scenario values, with log 0 = -oo (not SymPy's zoo)."""
    if not values:
        return expr
    expr = expr.replace(
        lambda node: isinstance(node, sympy.log) and node.args[0].subs(values) == 0,
        lambda node: sympy.S.NegativeInfinity,
    )
    return expr.subs(values)


def _beyond_exp_of_log(expr: sympy.Expr) -> bool:
    """Whether ``expr`` holds exp(a) with a beyond linear in log(t)."""
    for node in expr.atoms(sympy.exp, sympy.tanh, sympy.sinh, sympy.cosh):
        arg = node.args[0].subs(sympy.log(T), _LOG_T)
        if arg.has(_LOG_T) and not (
            arg.is_polynomial(_LOG_T) and sympy.degree(arg, _LOG_T) <= 1
        ):
            return True
    return False


def leading(expr: sympy.Expr, boundary: Boundary, scenario: Scenario) -> Behaviour | None:
    """The leading behaviour of ``expr`` at ``boundary`` in ``scenario``, or None if unknown."""
    key = (expr, boundary.input.symbol, boundary.value, scenario.values)
    if key in _CACHE:
        return _CACHE[key]
    result = None
    try:
        plain = _substitute(expr, dict(scenario.values))
        plain = to_textbook(plain) if plain.has(Primitive) else plain
        plain = plain.subs(boundary.input.symbol, boundary.value)
        if plain.has(sympy.erf, sympy.erfc) or _beyond_exp_of_log(plain):
            # SymPy's series do not finish on erf/erfc, or on exp of a power of log(t) (a cubic
            # in a logit); erf's complements are rewritten by an always-rule instead
            raise NotImplementedError
        if not plain.has(T):
            result = Behaviour(coeff=sympy.simplify(plain), exponent=sympy.Integer(0), logs=0)
        else:
            result = _parse_leading(plain.as_leading_term(T))
    except (NotImplementedError, ValueError, TypeError, AttributeError, ZeroDivisionError, sympy.PoleError):
        result = None
    _CACHE[key] = result
    return result
