"""The oracle: exact values of a spec's textbook loss and its derivatives.

The textbook expression (every stable primitive replaced by its plain meaning) is differentiated
symbolically -- never numerically: ``mpmath.diff`` at modest precision returns garbage second
derivatives at large inputs -- and evaluated with mpmath at rising precision until two successive
precisions agree to ``AGREE_DIGITS`` significant digits. A fixed precision is not enough: at 256
bits, 1 + e^-185 rounds to 1.

Each quantity q (value, each gradient entry, each Hessian entry) comes with its condition number
with respect to the differentiated inputs only, kappa = sum_i |x_i dq/dx_i| / |q| (labels,
targets and parameters are exact). kappa is what a one-ULP change of the inputs forces on any
floating-point evaluation.

Conventions where a derivative is undefined: sign(0) = 0, Heaviside(0) = 0 and DiracDelta = 0
(the 0 subgradient), never SymPy's Heaviside(0) = 1/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import mpmath
import sympy

from ._grid import NORMWISE_FROM  # from there on: value, grad and hvp only, no kappa
from ._conventions import CONVENTIONS, zero_log_zero
from ._primitives import to_textbook
from ._types import AXIS_SHAPES, Spec

__all__ = ["AGREE_DIGITS", "Evaluation", "Oracle", "OracleError", "Quantity"]

#: two successive precisions must agree to this many significant digits
AGREE_DIGITS = 30
#: give up (and refuse the point) beyond this many decimal digits
MAX_DIGITS = 40_000
#: bump when the oracle's method changes, so that committed fixtures are recomputed
VERSION = "3"
#: losses over a class axis with this many classes or more are differentiated by Taylor
#: arithmetic at each point, not symbolically (whose cost grows as C**4)
JETS_FROM = 4
#: an exact 0 is trusted only from this many digits on: below it, 1 + erf(-12) is 0 too
ZERO_DIGITS = 800
#: below this magnitude a value rounds to 0 in every floating format lossgen checks
_NEGLIGIBLE = mpmath.mpf(10) ** -340


def _squares_divided_by(e: sympy.Expr) -> set:
    """The sums of squares that ``e`` divides by (0 at a distance's coincident points)."""
    return {
        node.base for node in e.atoms(sympy.Pow)
        if node.exp.is_negative and node.base.is_Add
        and all(t.is_Pow and t.exp.is_even for t in node.base.args)
    }


class OracleError(ArithmeticError):
    """Two successive precisions never agreed at this point."""


def _heaviside(x, h0=None):
    return mpmath.mpf(1) if x > 0 else mpmath.mpf(0)


def _sign(x):
    return mpmath.mpf(0) if x == 0 else mpmath.mpf(1 if x > 0 else -1)


def _dirac(x, *args):
    return mpmath.mpf(0)


def _kronecker(a, b):
    return mpmath.mpf(1) if a == b else mpmath.mpf(0)


_CONVENTIONS = {
    "Heaviside": _heaviside, "sign": _sign, "DiracDelta": _dirac, "KroneckerDelta": _kronecker,
    **CONVENTIONS,
}


def _can_be_zero(spec: Spec) -> set:
    """The differentiated inputs whose domain has 0 as a (closed) end: t*log(t) is 0 there."""
    return {
        inp.symbol for inp in spec.differentiated
        if inp.domain.kind == "interval"
        and ((inp.domain.lo == 0 and inp.domain.lo_closed) or (inp.domain.hi == 0 and inp.domain.hi_closed))
    }


@dataclass(frozen=True)
class Quantity:
    """One scalar output: ``"value"``, ``"grad[i]"`` or ``"hess[i][j]"``."""

    label: str
    expr: sympy.Expr
    #: derivatives of ``expr`` with respect to each differentiated input (for kappa)
    slopes: tuple[sympy.Expr, ...]


@dataclass(frozen=True)
class Evaluation:
    """Exact values (mpf, or +-inf) and condition numbers of every quantity at one point."""

    values: dict[str, mpmath.mpf]
    kappas: dict[str, mpmath.mpf]
    #: the two decimal precisions that agreed
    digits: tuple[int, int]


class Oracle:
    """Evaluate a spec's loss, gradient and Hessian exactly at points given as floats."""

    def __init__(self, spec: Spec, classes: int | None = None, *, method: str = "auto"):
        """``method``: how the derivatives of a loss over a class axis are taken: "symbolic"
        (SymPy differentiates the written-out expression), "jets" (Taylor arithmetic at each
        point, see lossgen._jets) or "auto" (symbolic up to JETS_FROM - 1 classes, where the
        Hessian's entries are quantities too, jets from JETS_FROM on)."""
        self.spec = spec
        if spec.is_batch:
            self._batch(spec, classes)
            return
        if spec.has_classes:
            self._classes(spec, classes, method)
            return
        expr = zero_log_zero(to_textbook(spec.expression()), _can_be_zero(spec))
        xs = [inp.symbol for inp in spec.differentiated]
        self.inputs = [inp.symbol for inp in spec.inputs]
        self.params = [p.symbol for p in spec.params if p.choices is None]
        grad = [sympy.diff(expr, x) for x in xs]
        hess = [[sympy.diff(g, x) for x in xs] for g in grad]
        quantities = [Quantity("value", expr, tuple(grad))]
        quantities += [Quantity(f"grad[{i}]", g, tuple(hess[i])) for i, g in enumerate(grad)]
        quantities += [
            Quantity(f"hess[{i}][{j}]", h, tuple(sympy.diff(h, x) for x in xs))
            for i, row in enumerate(hess)
            for j, h in enumerate(row)
        ]
        self._setup(expr, xs, quantities)

    def _classes(self, spec: Spec, n: int | None, method: str) -> None:
        """A loss over a class axis, written out for ``n`` classes: one scalar input per entry
        (``x[0]``, ...), the directions ``v[0]``, ... of the Hessian-vector product, and the
        quantities value, grad[c] and hvp[c] (and hess[c][d] for n <= 3); with several
        differentiated inputs, grad[k][c] and hvp[k][c] for input k, directions v0[c], ..."""
        from ._classes import expand

        if n is None:
            raise ValueError(f"{spec.name}: a loss over a class axis needs the number of classes")
        entries, inputs = {}, []
        for inp in spec.inputs:
            if inp.shape in AXIS_SHAPES:
                entries[inp.symbol] = [sympy.Symbol(f"{inp.name}[{c}]", real=True) for c in range(n)]
                inputs += entries[inp.symbol]
            else:
                inputs.append(inp.symbol)
        # (a one-hot entry as a Kronecker delta, not a conditional: the shared subexpressions
        # of a conditional's branches cannot be hoisted)
        index = {
            inp.symbol: [sympy.KroneckerDelta(inp.symbol, c) for c in range(n)]
            for inp in spec.inputs
            if inp.domain.kind == "index"
        }
        several = len(spec.differentiated) > 1
        xs, vs, tags = [], [], []
        for k, inp in enumerate(spec.differentiated):
            xs += entries[inp.symbol]
            prefix = f"v{k}" if several else "v"
            vs += [sympy.Symbol(f"{prefix}[{c}]", real=True) for c in range(n)]
            tags += [f"[{k}][{c}]" if several else f"[{c}]" for c in range(n)]
        self.inputs = inputs + vs
        self.params = [p.symbol for p in spec.params if p.choices is None]
        expr = expand(to_textbook(spec.expression()), entries, index)
        expr = zero_log_zero(expr, [e for s in _can_be_zero(spec) for e in entries.get(s, [s])])
        # a leading conditional on the constant inputs alone (k == ignore_index: 0) is decided
        # per point, before the derivatives of the other branch are evaluated
        self._guards, self._guard_inputs = [], len(inputs)
        while isinstance(expr, sympy.Piecewise) and len(expr.args) > 1:
            (first, condition), *rest = expr.args
            if not first.is_Number or condition.free_symbols & set(xs):
                break
            self._guards.append((sympy.lambdify(inputs + self.params, condition, "mpmath"), first))
            expr = sympy.Piecewise(*rest) if len(rest) > 1 or rest[0][1] is not sympy.true else rest[0][0]
        jets = method == "jets" or (method == "auto" and n >= JETS_FROM)
        self._written = (expr, xs, vs, tags, n <= 3 and not several and not jets)
        if jets:
            self._setup_jets(expr, xs, vs, tags, 1 if n >= NORMWISE_FROM else 2)
        else:
            self._setup(expr, xs, self._symbolic_quantities())

    def _batch(self, spec: Spec, shape: tuple[int, int] | None) -> None:
        """A loss over a batch, written out for B rows of D features (``shape``): one scalar
        input per entry (``z[k]``: row k // D, feature k % D) and per direction entry
        (``v[k]``); the quantities value[i] (the loss of row i, as the generated value),
        grad[k] and hvp[k] (of the rows' losses summed), by Taylor arithmetic."""
        from . import _jets
        from ._batch import decompose, expand_batch

        if shape is None:
            raise ValueError(f"{spec.name}: a loss over a batch needs its (rows, features)")
        b, d = shape
        rows, xs = expand_batch(spec, b, d)
        expr = sympy.Add(*rows)
        vs = [sympy.Symbol(f"v[{k}]", real=True) for k in range(b * d)]
        self.inputs = xs + vs
        self.params = [p.symbol for p in spec.params if p.choices is None]
        self._guards, self._guard_inputs = [], len(xs)
        # (a scale of the similarities: exp(s/t) beside 1 needs |1/t| digits, as exp(x) |x|)
        self._scales = [p.symbol.name for p in spec.params if p.choices is None]
        self._plain = decompose(spec).row_map == "identity"
        tags = [f"[{k}]" for k in range(b * d)]
        self._written = (expr, xs, vs, tags, False)
        order = 1 if b * d >= NORMWISE_FROM else 2
        self._setup_jets(expr, xs, vs, tags, order)
        # each row's value, first-order jets: its gradient gives its kappa (order 2 only)
        slopes = (None,) * len(xs) if order == 2 else ()
        self.quantities = tuple(Quantity(f"value[{i}]", None, slopes) for i in range(b)) + self.quantities[1:]
        self._flat = [None] * (len(self.quantities) * (1 + len(slopes)))
        self._trust_zero = [i % (1 + len(slopes)) != 0 for i in range(len(self._flat))]
        symbols, total, n = self.inputs + self.params, self._fn, len(xs)

        def taylor(*point):
            values = dict(zip(symbols, point))
            direction = [values[v] for v in vs]
            out = []
            for row in rows:
                f, g, _, _ = _jets.evaluate(row, values, xs, direction, 1).dense(n)
                out += [f, *g] if slopes else [f]
            return out + total(*point)[1 + len(slopes):]

        self._fn = taylor

    def _symbolic_quantities(self) -> list:
        expr, xs, vs, tags, with_hess = self._written
        grad = [sympy.diff(expr, xi) for xi in xs]
        hess = [[sympy.diff(g, xj) for xj in xs] for g in grad]
        hvp = [sympy.Add(*(h * v for h, v in zip(row, vs))) for row in hess]
        quantities = [Quantity("value", expr, tuple(grad))]
        quantities += [Quantity(f"grad{tag}", g, tuple(hess[i])) for i, (tag, g) in enumerate(zip(tags, grad))]
        quantities += [
            Quantity(f"hvp{tag}", h, tuple(sympy.diff(h, xj) for xj in xs)) for tag, h in zip(tags, hvp)
        ]
        if with_hess:
            quantities += [
                Quantity(f"hess[{i}][{j}]", h, tuple(sympy.diff(h, xk) for xk in xs))
                for i, row in enumerate(hess)
                for j, h in enumerate(row)
            ]
        return quantities

    def _setup_jets(self, expr: sympy.Expr, xs: list, vs: list, tags: list, order: int) -> None:
        """Quantities evaluated by Taylor arithmetic: value, grad and hvp, each with its
        derivatives in xs (for kappa), in the order the symbolic quantities have; with
        ``order=1`` without those derivatives (kappa is then not computed: reported as 0)."""
        from . import _jets

        slopes = (None,) * len(xs) if order == 2 else ()
        labels = ["value"] + [f"grad{tag}" for tag in tags] + [f"hvp{tag}" for tag in tags]
        self.quantities = tuple(Quantity(label, None, slopes) for label in labels)
        self.xs = xs
        self._flat = [None] * (len(labels) * (1 + len(slopes)))
        self._trust_zero = [i % (1 + len(slopes)) != 0 for i in range(len(self._flat))]
        symbols = self.inputs + self.params
        n = len(xs)

        def taylor(*point):
            values = dict(zip(symbols, point))
            jet = _jets.evaluate(expr, values, xs, [values[v] for v in vs], order)
            if order == 1:
                f, g, _, hv = jet.dense(n)
                return [f, *g, *hv]
            (f, g, h), (_, hv, tv) = jet.p, jet.q
            out = [f, *g]
            for i in range(n):
                out += [g[i], *h[i]]
            for i in range(n):
                out += [hv[i], *tv[i]]
            return out

        self._fn = taylor

    def _setup(self, expr: sympy.Expr, xs: list, quantities: list) -> None:
        self.quantities = tuple(quantities)
        self.xs = xs
        flat = [e for q in quantities for e in (q.expr, *q.slopes)]
        self._flat = flat
        # an exact 0 is trusted at once for a slope (it only feeds kappa) and for a quantity
        # that is 0 symbolically (a step's derivative, by the DiracDelta = 0 convention)
        self._trust_zero = [
            is_slope or e.replace(sympy.DiracDelta, lambda *a: sympy.S.Zero) == 0
            for q in quantities
            for is_slope, e in zip((False, *(True for _ in q.slopes)), (q.expr, *q.slopes))
        ]
        self._fn = sympy.lambdify(
            self.inputs + self.params,
            flat,
            modules=[_CONVENTIONS, "mpmath"],
            # a conditional evaluates only its chosen branch, unless cse hoists the other out
            cse=not expr.has(sympy.Piecewise),
        )

    def _at(self, args: list, digits: int) -> list:
        with mpmath.workdps(digits):
            exact = [mpmath.mpf(a) for a in args]
            out = []
            try:
                values = self._fn(*exact)
            except ZeroDivisionError:  # 0/0 in the textbook form: the convention, or no truth
                guarded = self._guarded()
                if guarded is None:
                    return [mpmath.nan] * len(self._flat)
                try:
                    values = guarded(*exact)
                except ZeroDivisionError:
                    return [mpmath.nan] * len(self._flat)
            for v in values:
                try:
                    out.append(mpmath.mpf(v))
                except TypeError:  # a complex result: outside the real domain
                    out.append(mpmath.nan)
            return out

    def _guarded(self):
        """A function of the point giving each quantity, with each derivative 0 where a sum of
        squares that it divides by is 0 (a distance at coincident points: the 0 subgradient,
        and 0 for the undefined second derivative), as the generated code; None when no
        expression divides by such a sum."""
        if not hasattr(self, "_guarded_fn"):
            self._guarded_fn = None
            if self._flat[0] is None and not self.quantities[0].slopes:
                return None  # (first-order jets: too many classes to write the derivatives out)
            if self._flat[0] is None:  # (jets: the written-out derivatives, made only here)
                self._flat = [e for q in self._symbolic_quantities() for e in (q.expr, *q.slopes)]
            per = [_squares_divided_by(e) for e in self._flat]
            sums = sorted(set().union(*per), key=sympy.default_sort_key)
            if sums:
                args = self.inputs + self.params
                totals = sympy.lambdify(args, sums, modules=[_CONVENTIONS, "mpmath"])
                compiled: dict = {}

                def guarded(*point):
                    zero = {s for s, t in zip(sums, totals(*point)) if t == 0}
                    keep = tuple(i for i, depends in enumerate(per) if not depends & zero)
                    if keep not in compiled:
                        compiled[keep] = sympy.lambdify(
                            args, [self._flat[i] for i in keep], modules=[_CONVENTIONS, "mpmath"], cse=True
                        )
                    out = [mpmath.mpf(0)] * len(self._flat)
                    for i, v in zip(keep, compiled[keep](*point)):
                        out[i] = v
                    return out

                self._guarded_fn = guarded
        return self._guarded_fn

    @staticmethod
    def _start_digits(args: list) -> int:
        # enough digits for exp(|x|) beside 1
        biggest = max((abs(float(a)) for a in args), default=0.0)
        return AGREE_DIGITS + 20 + int(min(biggest, 1e6) / 2.3)

    def evaluate(self, point: Mapping[str, float]) -> Evaluation:
        args = [point[s.name] for s in self.inputs + self.params]
        for condition, value in getattr(self, "_guards", ()):
            n = self._guard_inputs
            if condition(*args[:n], *args[len(self.inputs):]):
                settled = [mpmath.mpf(value)] + [mpmath.mpf(0)] * (len(self._flat) - 1)
                return self._evaluation(args, settled, (0, 0))
        if hasattr(self, "_scales"):  # (a batch: the similarities over t are exponentiated)
            size = max(abs(float(a)) for a in args[: self._guard_inputs]) ** 2 if self._plain else 1.0
            scales = [abs(float(point[name])) for name in self._scales]
            digits = self._start_digits([size / s if s else 0.0 for s in scales] or [size])
        else:
            digits = self._start_digits(args)
        previous = self._at(args, digits)
        while True:
            more = 2 * digits
            current = self._at(args, more)
            settled = [
                _settle(a, b, digits, more, trust_zero=trust)
                for a, b, trust in zip(previous, current, self._trust_zero)
            ]
            if all(s is not None for s in settled):
                return self._evaluation(args, settled, (digits, more))
            if more > MAX_DIGITS:
                raise OracleError(
                    f"{self.spec.name}: no two precisions up to {more} digits agree at {dict(point)}"
                )
            previous, digits = current, more

    def _evaluation(self, args: list, settled: list, digits: tuple[int, int]) -> Evaluation:
        by_name = dict(zip((s.name for s in self.inputs + self.params), args))
        xs = [mpmath.mpf(by_name[x.name]) for x in self.xs]
        values, kappas = {}, {}
        it = iter(settled)
        for q in self.quantities:
            value = next(it)
            slopes = [next(it) for _ in q.slopes]
            values[q.label] = value
            kappas[q.label] = _kappa(value, slopes, xs)
        return Evaluation(values=values, kappas=kappas, digits=digits)


def _settle(a: mpmath.mpf, b: mpmath.mpf, digits_a: int, digits_b: int, *, trust_zero=False):
    """The agreed value of a quantity computed at two precisions, or None if they disagree."""
    if mpmath.isnan(a) or mpmath.isnan(b):
        return mpmath.nan if (mpmath.isnan(a) and mpmath.isnan(b)) else None
    if mpmath.isinf(a) or mpmath.isinf(b):
        return b if a == b else None
    if a == b:
        # an exact 0 may be a value below the working precision (a cancellation)
        return b if b != 0 or trust_zero or digits_b >= ZERO_DIGITS else None
    scale = max(abs(a), abs(b))
    if abs(a - b) <= scale * mpmath.mpf(10) ** (-AGREE_DIGITS):
        return b
    # rounding noise around an exact zero shrinks with the precision; it is taken for 0 only
    # where any value would round to 0 anyway
    if max(abs(a), abs(b)) < _NEGLIGIBLE and abs(b) < mpmath.mpf(10) ** (-digits_b / 2):
        return mpmath.mpf(0)
    return None


def _kappa(value, slopes, xs) -> mpmath.mpf:
    if mpmath.isnan(value) or mpmath.isinf(value):
        return mpmath.mpf(0)
    if value == 0:
        return mpmath.inf
    total = mpmath.mpf(0)
    for x, slope in zip(xs, slopes):
        if mpmath.isnan(slope) or mpmath.isinf(slope):
            return mpmath.inf
        total += abs(x * slope)
    return total / abs(value)


def format_mpf(value: mpmath.mpf, digits: int = 40) -> str:
    """A decimal string that round-trips ``digits`` significant digits (or inf/-inf/nan)."""
    if mpmath.isnan(value):
        return "nan"
    if mpmath.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return mpmath.libmp.to_str(value._mpf_, digits, min_fixed=math.inf, max_fixed=-math.inf)
