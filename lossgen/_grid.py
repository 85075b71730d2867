"""Deterministic test grids per spec, built from the declared domains.

Every grid value is exactly representable in float32 (dyadic fractions), so float32 and
float64 runs evaluate the same mathematical point.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import sympy

from ._types import Domain, Spec

__all__ = ["GRIDS", "grid"]

_R = Fraction


def _interval_values(domain: Domain, candidates: list[Fraction]) -> list[Fraction]:
    lo, hi = domain.lo, domain.hi

    def inside(v: Fraction) -> bool:
        value = sympy.Rational(v.numerator, v.denominator)
        above = value > lo or (domain.lo_closed and value == lo)
        below = value < hi or (domain.hi_closed and value == hi)
        return bool(above and below)

    return [v for v in candidates if inside(v)]


def _finite(value: sympy.Expr) -> bool:
    return bool(value.is_finite)


def _span(domain: Domain, far: list[Fraction], near_edge: list[Fraction]) -> list[Fraction]:
    """Candidate points of an interval: ``far`` when it is unbounded, else offsets from its ends."""
    lo, hi = domain.lo, domain.hi
    if not _finite(lo) and not _finite(hi):
        return far
    if _finite(lo) and _finite(hi):
        a, b = Fraction(str(lo)), Fraction(str(hi))
        return [a + (b - a) * t for t in near_edge]
    if _finite(lo):
        a = Fraction(str(lo))
        return [a + abs(t) for t in far if t >= 0]
    b = Fraction(str(hi))
    return [b - abs(t) for t in far if t >= 0]


def _differentiated_moderate(domain: Domain) -> list[Fraction]:
    far = [_R(k, 8) for k in range(-16, 17)]
    near_edge = [_R(1, 64), _R(1, 8), _R(1, 4), _R(3, 8), _R(1, 2), _R(5, 8), _R(3, 4), _R(7, 8), _R(63, 64)]
    return _interval_values(domain, _span(domain, far, near_edge))


def _constant(domain: Domain) -> list[Fraction]:
    far = [_R(-3, 2), _R(0), _R(3, 4), _R(2)]
    near_edge = [_R(0), _R(1, 4), _R(7, 8), _R(1)]
    return _interval_values(domain, _span(domain, far, near_edge))


def _param(domain: Domain, default: float) -> list[Fraction]:
    far = [_R(0), _R(1, 2), _R(1), _R(4)]
    near_edge = [_R(0), _R(1, 4), _R(1, 2), _R(1)]
    values = set(_interval_values(domain, _span(domain, far, near_edge)))
    values.add(Fraction(default))
    return sorted(values)


def _set_values(domain: Domain) -> list[Fraction]:
    return [Fraction(str(e)) for e in domain.elements]


def _columns(spec: Spec, differentiated, param) -> dict[str, list[float]]:
    """Every combination of the per-input and per-parameter axes, as columns."""
    axes: list[tuple[str, list[Fraction]]] = []
    for inp in spec.inputs:
        if inp.domain.kind == "set":
            values = _set_values(inp.domain)
        elif inp.role == "differentiated":
            values = differentiated(inp.domain)
        else:
            values = _constant(inp.domain)
        axes.append((inp.name, values))
    for p in spec.params:
        if p.choices is None:
            axes.append((p.name, param(p.domain, p.default)))
    names = [name for name, _ in axes]
    rows = list(itertools.product(*(values for _, values in axes)))
    return {name: [float(row[k]) for row in rows] for k, name in enumerate(names)}


def moderate(spec: Spec) -> dict[str, list[float]]:
    """Columns of a grid on moderate inputs (|x| <= 2), every combination of the axes."""
    return _columns(spec, _differentiated_moderate, _param)


#: logits where float breaks: tiny, around sigmoid's rounding to 1 (17, 37), the float32 and
#: float64 exp overflow and underflow points (88.7, 103.9; 709.8, 745.1), and far out
_EXTREME_REALS = sorted(
    {_R(0), _R(1, 2**20), _R(1, 1024), _R(1, 8)}
    | {_R(v) for v in (1, 2, 3, 5, 8, 12, 17, 20, 30, 37, 40, 50, 88, 89, 100, 104, 200, 500)}
    | {_R(v) for v in (709, 710, 745, 746, 1000, 5000, 10000)}
)


def _differentiated_extreme(domain: Domain) -> list[Fraction]:
    far = sorted({-v for v in _EXTREME_REALS} | set(_EXTREME_REALS))
    near = [_R(1, 2**k) for k in (126, 100, 64, 40, 24, 16, 8, 4, 2, 1)]
    near_edge = near + [1 - _R(1, 2**k) for k in (2, 4, 8, 12, 16, 20, 24)]
    return _interval_values(domain, _span(domain, far, near_edge))


def _param_extreme(domain: Domain, default: float) -> list[Fraction]:
    far = [_R(0), _R(1, 4), _R(1, 2), _R(1), _R(3, 2), _R(2), _R(3), _R(4)]
    near_edge = [_R(1, 4), _R(1, 2)]
    values = set(_interval_values(domain, _span(domain, far, near_edge)))
    values.add(Fraction(default))
    return sorted(values)


def extreme(spec: Spec) -> dict[str, list[float]]:
    """Columns of a grid on extreme inputs: logits to +-1e4 dense where float breaks,
    probabilities within 2**-126 of 0 and 2**-24 of 1, special parameter values."""
    return _columns(spec, _differentiated_extreme, _param_extreme)


#: grid name -> builder; each grid has its own committed fixture file per spec
GRIDS = {"moderate": moderate, "extreme": extreme}


def grid(spec: Spec, name: str = "moderate") -> dict[str, list[float]]:
    return GRIDS[name](spec)
