"""Deterministic test grids per spec, built from the declared domains.

Every grid value is exactly representable in float32 (dyadic fractions), so float32 and
float64 runs evaluate the same mathematical point.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import sympy

from ._types import AXIS_SHAPES, Domain, Spec

__all__ = ["CLASS_GRIDS", "GRIDS", "grid", "grid_names"]

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
    values.add(Fraction(_float32(default)))  # the default, as float32 rounds it
    return sorted(values)


def _set_values(domain: Domain) -> list[Fraction]:
    return [Fraction(str(e)) for e in domain.elements]


def _thin(values: list[Fraction], default: Fraction, count: int) -> list[Fraction]:
    """A parameter's values, fewer of them when a spec has many parameters (the grid is their
    product): with three or more, the ends of the range, its middle, and the default."""
    if count < 3 or len(values) <= 3:
        return values
    keep = {values[0], values[len(values) // 2], values[-1], default}
    return sorted(keep)


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
            values = param(p.domain, p.default)
            axes.append((p.name, _thin(values, Fraction(_float32(p.default)), len(spec.params))))
    names = [name for name, _ in axes]
    rows = list(itertools.product(*(values for _, values in axes)))
    return {name: [float(row[k]) for row in rows] for k, name in enumerate(names)}


def moderate(spec: Spec) -> dict[str, list[float]]:
    """Columns of a grid on moderate inputs (|x| <= 2), every combination of the axes."""
    return _columns(spec, _differentiated_moderate, _param)


#: logits where float breaks: tiny, around sigmoid's rounding to 1 (17, 37), the float16 (11.1),
#: float32 and float64 exp overflow and underflow points (88.7, 103.9; 709.8, 745.1), far out
_EXTREME_REALS = sorted(
    {_R(0), _R(1, 2**20), _R(1, 1024), _R(1, 8)}
    | {_R(v) for v in (1, 2, 3, 5, 8, 11, 12, 17, 20, 30, 37, 40, 50, 88, 89, 100, 104, 200, 500)}
    | {_R(v) for v in (709, 710, 745, 746, 1000, 5000, 10000)}
)


def _differentiated_extreme(domain: Domain) -> list[Fraction]:
    far = sorted({-v for v in _EXTREME_REALS} | set(_EXTREME_REALS))
    near = [_R(1, 2**k) for k in (126, 100, 64, 40, 24, 16, 8, 4, 2, 1)]
    near_edge = near + [1 - _R(1, 2**k) for k in (2, 4, 8, 12, 16, 20, 24)]
    return _interval_values(domain, _span(domain, far, near_edge))


def _param_extreme(domain: Domain, default: float) -> list[Fraction]:
    far = [_R(0), _R(1, 4), _R(1, 2), _R(1), _R(3, 2), _R(2), _R(3), _R(4)]
    # the ends of a bounded range too (clip = 0, alpha = 1, q = 1), where they are in it
    near_edge = [_R(0), _R(1, 4), _R(1, 2), _R(1)]
    values = set(_interval_values(domain, _span(domain, far, near_edge)))
    values.add(Fraction(_float32(default)))  # the default, as float32 rounds it
    return sorted(values)


def extreme(spec: Spec) -> dict[str, list[float]]:
    """Columns of a grid on extreme inputs: logits to +-1e4 dense where float breaks,
    probabilities within 2**-126 of 0 and 2**-24 of 1, special parameter values."""
    return _columns(spec, _differentiated_extreme, _param_extreme)


_RANDOM_POINTS = 512


def _float32(value: float) -> float:
    import numpy as np

    return float(np.float32(value))


def random(spec: Spec) -> dict[str, list[float]]:
    """Random samples drawn the way ML values are distributed, seeded by the spec's name:
    logits uniform over [-100, 100] and [-20, 20] and with log-uniform magnitudes in
    [1e-8, 1e4]; probabilities uniform and log-uniformly close to 0 and 1; soft labels
    uniform; parameters from the extreme grid's values. Every value is a float32."""
    import zlib

    import numpy as np

    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
    n = _RANDOM_POINTS
    columns: dict[str, list[float]] = {}
    for inp in spec.inputs:
        d = inp.domain
        if d.kind == "set":
            values = rng.choice([float(e) for e in d.elements], n)
        elif inp.role == "constant":
            grid_values = [float(v) for v in _constant(d)]
            lo, hi = float(max(d.lo, -4)), float(min(d.hi, 4))
            values = np.where(rng.random(n) < 0.5, rng.choice(grid_values, n), rng.uniform(lo, hi, n))
        elif d.lo == -sympy.oo and d.hi == sympy.oo:
            sign = rng.choice([-1.0, 1.0], n)
            values = np.concatenate([
                rng.uniform(-100, 100, n // 2),
                rng.uniform(-20, 20, n // 4),
                sign[: n - n // 2 - n // 4] * 10 ** rng.uniform(-8, 4, n - n // 2 - n // 4),
            ])
        elif d.lo == 0 and d.hi == 1:
            third = n // 3
            values = np.concatenate([
                rng.uniform(0, 1, third),
                10 ** rng.uniform(-30, 0, third),
                1 - 10 ** rng.uniform(-7, 0, n - 2 * third),
            ])
        elif d.lo.is_finite and d.hi is sympy.oo:
            values = float(d.lo) + 10 ** rng.uniform(-6, 4, n)
        else:
            values = rng.choice([float(v) for v in _differentiated_extreme(d)], n)
        values = [_float32(v) for v in values]
        if d.kind == "interval":  # rounding to float32 may land on an open end
            lo, hi = float(d.lo), float(d.hi)
            values = [
                v for v in values
                if (lo < v or (d.lo_closed and lo == v)) and (v < hi or (d.hi_closed and v == hi))
            ] or values
            values = (values * (n // len(values) + 1))[:n]
        columns[inp.name] = values
    for p in spec.params:
        if p.choices is None:
            columns[p.name] = [float(v) for v in rng.choice([float(v) for v in _param_extreme(p.domain, p.default)], n)]
    return columns


def _logit_rows(n: int) -> list[list[float]]:
    """Rows of n logits: moderate ones (|x| <= 2), then one large entry (the first or the
    last) at the float32 and float64 exp overflow points and at +-1e4, two tied large
    entries, alternating signs, ramps and seeded normal draws."""
    import numpy as np

    rows = [[0.0] * n, [2.0 ** -10 * (c % 3) for c in range(n)]]
    rows += [[((c * 7) % 9 - 4) / 2 for c in range(n)], [1.0 if c == 0 else -1.0 for c in range(n)]]
    for big in (1.0, 20.0, 40.0, 88.0, 709.0, 1e4):
        rows.append([big if c == 0 else 0.0 for c in range(n)])
        rows.append([-big if c == 0 else 0.0 for c in range(n)])
    for big in (20.0, 1e4):
        rows.append([big if c == n - 1 else float(c % 2) for c in range(n)])
        rows.append([big if c < 2 else 0.0 for c in range(n)])  # a tie for the largest
        rows.append([big * (1 if c % 2 == 0 else -1) for c in range(n)])
        rows.append([_float32(-big + 2 * big * c / max(n - 1, 1)) for c in range(n)])
    rng = np.random.default_rng(n)
    for scale in (1.0, 10.0, 100.0):
        rows.append([_float32(v) for v in rng.normal(0, scale, n)])
    return rows


def _few_logit_rows(n: int) -> list[list[float]]:
    """A handful of rows for many classes (graded norm-wise): zeros, a ramp, one entry at 1e4
    above the rest, two tied at 1e4, alternating +-1e4, and a seeded normal draw of scale 10."""
    import numpy as np

    rng = np.random.default_rng(n)
    return [
        [0.0] * n,
        [_float32(-2 + 4 * c / (n - 1)) for c in range(n)],
        [1e4 if c == 0 else 0.0 for c in range(n)],
        [1e4 if c < 2 else float(c % 2) for c in range(n)],
        [1e4 * (1 if c % 2 == 0 else -1) for c in range(n)],
        [_float32(v) for v in rng.normal(0, 10, n)],
    ]


def _target_rows(n: int) -> list[list[float]]:
    """Distributions over n classes, exact in float32: one-hot at the first and at the last
    class, half and half with zeros elsewhere, and halving weights 1/2, 1/4, ... (the rest
    on the last class)."""
    halving = [2.0 ** -(c + 1) for c in range(n - 1)]
    halving.append(1.0 - sum(halving))
    return [
        [1.0 if c == 0 else 0.0 for c in range(n)],
        [1.0 if c == n - 1 else 0.0 for c in range(n)],
        [0.5 if c < 2 else 0.0 for c in range(n)],
        halving,
    ]


def _three_points(rows: list[list[float]]) -> list[tuple[list[float], ...]]:
    """Triples (a, x, b) of vectors for a loss of three points: apart; two of them
    coincident, and all three; x halfway between a and b (on a line), and moved off it by a
    few 2**-20 per entry (near a line, where differences of distances cancel)."""
    k = len(rows)
    triples = []
    # (every third row: the oracle's derivatives in three points cost the square of their
    # number of coordinates)
    for i, r in list(enumerate(rows))[::3]:
        o1, o2 = rows[(i + 5) % k], rows[(i + 11) % k]
        triples += [(r, o1, o2), (r, r, o2), (r, o1, o1)]
    near = [r for r in rows if max(abs(a) for a in r) <= 4]
    for i, a in enumerate(near):
        b = near[(i + 2) % len(near)]
        if a == b:
            continue
        mid = [_float32((p + q) / 2) for p, q in zip(a, b)]
        off = [_float32(m + 2.0 ** -20 * ((c * 5) % 7 - 3)) for c, m in enumerate(mid)]
        far = [_float32(p + 1000.0) for p in a], [_float32(m + 1000.0) for m in off], [_float32(q + 1000.0) for q in b]
        triples += [(a, a, a), (a, mid, b), (a, off, b), far]
    return triples


def classes(spec: Spec, n: int) -> dict[str, list[float]]:
    """Rows for a loss over a class axis with n classes: each logit row with each target row
    (or class index: the first class, the last, and -100 for an ignored row), a direction v
    for the Hessian-vector product (alternating signs, magnitudes 1/(c + 2)), and the parameters at their defaults
    (a second value for every other row, where the domain has one). Columns ``x[c]`` hold
    entry c of input x."""
    logits = _logit_rows(n) if n < NORMWISE_FROM else _few_logit_rows(n)
    # a fixed direction with both signs and no exact cancellation over any run of entries
    v = [_float32((-1) ** c / (c + 2)) for c in range(n)]
    differentiated = list(spec.differentiated)
    several = len(differentiated) > 1
    # a differentiated input within [0, 1] (a target distribution) takes the target rows, as
    # a constant one does; the others take logit rows
    bounded = {
        inp.name for inp in differentiated
        if inp.domain.kind == "interval" and inp.domain.lo >= 0 and inp.domain.hi <= 1
    }
    free = [inp for inp in differentiated if inp.name not in bounded]
    rows: list[dict[str, float]] = []
    # a second differentiated input (a teacher's logits) takes each row once equal to the
    # first (the optimum of a divergence) and once another row
    pairs = [(r, r) for r in logits]
    if len(free) > 2:
        pairs = _three_points(logits)
    elif len(free) > 1:
        pairs += [(r, logits[(k + 5) % len(logits)]) for k, r in enumerate(logits)]
        # and near the optimum: moderate rows with the other moved by a few 2**-20 per entry,
        # where a divergence is of the order of the square of that move
        near = [r for r in logits if max(abs(a) for a in r) <= 4]
        pairs += [
            (r, [_float32(a + 2.0 ** -20 * ((c * 5) % 7 - 3)) for c, a in enumerate(r)])
            for r in near
        ]
    for points in pairs:
        logit_row, other_row = points[0], points[-1]
        choices: list[dict[str, float]] = [{}]
        for inp in spec.inputs:
            if inp.role == "differentiated" and inp.name not in bounded:
                continue
            if inp.domain.kind == "index":
                options = [{inp.name: float(k)} for k in (0, n - 1, -100)]
            elif inp.shape in AXIS_SHAPES:
                targets = _target_rows(n) if n < NORMWISE_FROM else _target_rows(n)[1::2]
                options = [{f"{inp.name}[{c}]": t[c] for c in range(n)} for t in targets]
            else:
                options = [{inp.name: float(v0)} for v0 in _constant(inp.domain)[:3]]
            choices = [{**a, **b} for a in choices for b in options]
        for choice in choices:
            row = dict(choice)
            for k, inp in enumerate(differentiated):
                if inp.name not in bounded:
                    if len(free) > 2:
                        values = points[free.index(inp)]
                    else:
                        values = logit_row if inp is free[0] else other_row
                    row.update({f"{inp.name}[{c}]": values[c] for c in range(n)})
                prefix = f"v{k}" if several else "v"
                w = v if k == 0 else v[::-1] if k == 1 else v[k:] + v[:k]
                row.update({f"{prefix}[{c}]": w[c] for c in range(n)})
            rows.append(row)
    for k, row in enumerate(rows):
        for p in spec.params:
            if p.choices is None:
                half = float(p.default) / 2
                other = p.domain.kind == "interval" and p.domain.lo >= 0 and p.domain.contains(half)
                row[p.name] = half if (k % 2 and other) else float(p.default)
    names = list(rows[0])
    return {name: [row[name] for row in rows] for name in names}


def _batch_points(b: int, d: int, few: bool) -> list[tuple[list[list[float]], str]]:
    """Batches of b rows of d features, each with what it tests: seeded normal rows; rows
    of norms from 2**-60 to 2**60 (and 1e-300, 1e300 in float64); a negative equal to its
    anchor; a positive equal to its anchor; a negative opposite to it; a positive and a
    negative within 2**-20 and 2**-12 of it (near-parallel rows, where cosines approach 1);
    rows along the axes (cosines exactly 0 and +-1); positives close to their anchors (a
    trained model); norms near 1e30 and 1e-30 (float32's range)."""
    import numpy as np

    rng = np.random.default_rng(1000 * b + d)

    def f32(rows):
        return [[_float32(float(v)) for v in row] for row in rows]

    base = f32(rng.normal(size=(b, d)))
    half = b // 2
    pattern = [((c * 5) % 7 - 3) for c in range(d)]
    points = [(base, "normal rows")]
    scales = [2.0 ** (-60 + 120 * i // max(b - 1, 1)) for i in range(b)]
    points.append((f32([[v * s for v in row] for row, s in zip(base, scales)]), "mixed norms"))
    same = [list(r) for r in base]
    same[1] = list(same[0])
    points.append((same, "a negative equal to its anchor"))
    if not few:
        pos = [list(r) for r in base]
        pos[half] = list(pos[0])
        points.append((pos, "a positive equal to its anchor"))
        opposite = [list(r) for r in base]
        opposite[1] = [-v for v in opposite[0]]
        points.append((opposite, "a negative opposite to its anchor"))
        near = [list(r) for r in base]
        near[half] = [_float32(v + 2.0 ** -20 * p) for v, p in zip(near[0], pattern)]
        near[1] = [_float32(v + 2.0 ** -12 * p) for v, p in zip(near[0], pattern[::-1])]
        points.append((near, "near-parallel rows"))
        axes = [[float(i + 1) if c == i % d else 0.0 for c in range(d)] for i in range(b)]
        points.append((axes, "rows along the axes"))
        points.append((f32([[v * 1e30 for v in row] for row in base]), "norms near 1e30"))
        points.append((f32([[v * 1e-30 for v in row] for row in base]), "norms near 1e-30"))
        points.append(([[v * 1e300 if i % 2 else v * 1e-300 for v in row] for i, row in enumerate(base)],
                       "norms 1e300 and 1e-300"))
    trained = [list(r) for r in base]
    for i in range(half):
        trained[i + half] = [_float32(v + 0.01 * n) for v, n in zip(trained[i], rng.normal(size=d))]
    points.append((trained, "positives close to their anchors"))
    return points


def batch(spec: Spec, b: int, d: int) -> dict[str, list[float]]:
    """Batches for a loss over a batch of b rows of d features (see _batch_points), each at
    the temperature-like parameters' default and at 0.07, 1e-3 and 20 (fewer for many
    rows); a direction v for the Hessian-vector product. Column ``z[k]`` holds row k // d,
    feature k % d."""
    few = b * d >= NORMWISE_FROM
    (z,) = spec.inputs
    v = [_float32((-1) ** k / (k + 2)) for k in range(b * d)]
    rows = []
    for point, _ in _batch_points(b, d, few):
        flat = [value for row in point for value in row]
        for p_values in _batch_params(spec, few):
            row = {f"{z.name}[{k}]": flat[k] for k in range(b * d)}
            row.update({f"v[{k}]": v[k] for k in range(b * d)})
            row.update(p_values)
            rows.append(row)
    names = list(rows[0])
    return {name: [row[name] for row in rows] for name in names}


def _batch_params(spec: Spec, few: bool) -> list[dict[str, float]]:
    numeric = [p for p in spec.params if p.choices is None]
    if not numeric:
        return [{}]
    values = [None, 0.07, 1e-3, 20.0][: 2 if few else 4]
    out = []
    for value in values:
        row = {}
        for p in numeric:
            chosen = float(p.default) if value is None or not p.domain.contains(value) else value
            row[p.name] = _float32(chosen) if chosen in (0.07, 1e-3) else chosen
        out.append(row)
    return out


#: grid name -> builder; each grid has its own committed fixture file per spec
GRIDS = {"moderate": moderate, "extreme": extreme, "random": random}
#: the grids of a loss over a class axis: one per number of classes
CLASS_GRIDS = {f"c{n}": n for n in (2, 3, 16, 17, 1000)}
#: from this many classes on a grid has a few rows, graded norm-wise (lossgen.oracle computes
#: no condition numbers there)
NORMWISE_FROM = 64


#: the grids of a loss over a batch: (rows, features)
BATCH_GRIDS = {"b4": (4, 3), "b6": (6, 4), "b16": (16, 8)}


def grid_names(spec: Spec) -> list[str]:
    if spec.is_batch:
        return list(BATCH_GRIDS)
    return list(CLASS_GRIDS) if spec.has_classes else list(GRIDS)


def grid(spec: Spec, name: str = "moderate") -> dict[str, list[float]]:
    if spec.is_batch:
        return batch(spec, *BATCH_GRIDS[name])
    if spec.has_classes:
        return classes(spec, CLASS_GRIDS[name])
    return GRIDS[name](spec)
