"""The simplify pass: common subexpressions become named intermediates, per generated function.

Before that, every output has its sums of sigmoid monomials collected by their exact
coefficients (``collect_sigmoids``) and erfc(c*x) an exact square (``exact_squares``); the
Hessian has its common factors pulled out of its sum. For a backend that flushes subnormal
numbers to zero (JAX on CPU), the blocks are built a second time with products of vanishing
factors, and the sums that hold them, moved to log space (``scale_products``).
"""

from __future__ import annotations

import contextvars
import itertools
import re
from dataclasses import replace

import sympy
from sympy.codegen.cfunctions import log1p

from ._classes import picks, split_at_pick
from ._ir import Block, Derivation
from ._signs import NEG, NONNEG, NONPOS, POS, sign
from ._types import Spec
from ._primitives import (
    Erfc, Exp, Log1pSmall, LogSigmoid, LogSoftplus, LogTanh, ScaledProduct, ScaledSum, Sigmoid,
    SigmoidNumerator, Softplus, erfc_scaled,
)

__all__ = ["simplify"]


def _temporaries(d: Derivation):
    taken = {s.name for s in d.textbook.free_symbols}
    taken |= {inp.name for inp in d.spec.inputs} | {p.name for p in d.spec.params}
    prefix = "t"
    while any(re.fullmatch(rf"{prefix}\d+", name) for name in taken):
        prefix += "_"
    return sympy.numbered_symbols(prefix, real=True)


def _data_first(outputs: list[sympy.Expr], xs: set, names) -> tuple[list, list]:
    """Name the part of each sum that holds no differentiated input, so it is formed first.

    Labels, targets and parameters are exact: (c - target) + pred keeps the digits of a tiny
    pred where c = target, while (c + pred) - target, as the printer would order it, rounds
    pred away. Returns the assignments of those parts and the outputs that use them.
    """
    parts: dict[sympy.Expr, sympy.Symbol] = {}

    def visit(node):
        if node.is_Atom or not node.free_symbols & xs:
            return node
        node = node.func(*(visit(arg) for arg in node.args))
        if node.is_Add:
            data = [t for t in node.args if not t.free_symbols & xs]
            if len(data) >= 2 and any(not t.is_Number for t in data):
                total = sympy.Add(*data)
                if total not in parts:
                    parts[total] = next(names)
                rest = [t for t in node.args if t.free_symbols & xs]
                return sympy.Add(parts[total], *rest)
        return node

    outputs = [visit(e) for e in outputs]
    return [(symbol, total) for total, symbol in parts.items()], outputs


_FAMILY = (Sigmoid, LogSigmoid, Softplus)


def share_sigmoid_family(outputs: list[sympy.Expr]) -> list[sympy.Expr]:
    """Expand the sigmoid family of each |u| that occurs more than once into one exp and one log1p.

    With e = exp(-|u|) and l = log1p(e): sigmoid(u) = [1 if u >= 0 else e] / (1 + e),
    log_sigmoid(u) = min(u, 0) - l and softplus(u) = max(u, 0) + l, the forms each backend's
    own functions evaluate, so the digits are those of the unexpanded primitives. A focal
    loss's sigmoid(x), sigmoid(-x), log_sigmoid(x) and log_sigmoid(-x) then cost one exp and
    one log1p where they cost four of each; common-subexpression elimination does the sharing.
    A member alone keeps its primitive (one fused kernel where the backend has it).
    """
    members: dict[sympy.Expr, set] = {}
    for expr in outputs:
        for node in expr.atoms(*_FAMILY):
            (u,) = node.args
            if u.free_symbols:
                members.setdefault(sympy.Abs(u), set()).add(node)
    shared = {key for key, nodes in members.items() if len(nodes) > 1}
    if not shared:
        return outputs

    def expand(node):
        (u,) = node.args
        e = Exp(-sympy.Abs(u))
        if isinstance(node, Sigmoid):
            return SigmoidNumerator(u, e) / (1 + e)
        if isinstance(node, LogSigmoid):
            return sympy.Min(u, 0) - Log1pSmall(e)
        return sympy.Max(u, 0) + Log1pSmall(e)

    mapping = {node: expand(node) for key in shared for node in members[key]}
    return [expr.xreplace(mapping) for expr in outputs]


def _block(d: Derivation, outputs: list[sympy.Expr], share: bool = False) -> Block:
    # a test of a categorical parameter stays inside its conditional, decided in Python
    categorical = tuple(p.symbol for p in d.spec.categorical)
    names = _temporaries(d)
    xs = {i.symbol for i in d.spec.differentiated}
    if share:
        outputs = share_sigmoid_family(outputs)
    rows = frozenset(i.symbol for i in d.spec.inputs if i.shape == "scalar")
    outputs = [split_at_pick(picks(e), rows) for e in outputs]
    first, outputs = _data_first(outputs, xs, names)
    assignments, reduced = sympy.cse(
        outputs, symbols=names, order="canonical", ignore=categorical
    )
    return Block(assignments=tuple(first) + tuple(assignments), outputs=tuple(reduced))


#: backends that flush subnormal intermediates to zero get products rescaled in log space
FLUSHING = ("jax",)


#: the spec whose blocks scale_products is building (its inputs' domains decide which powers
#: of an input can leave the normal range)
_SPEC: contextvars.ContextVar[Spec | None] = contextvars.ContextVar("spec", default=None)


def _input_power(base: sympy.Expr, power: sympy.Expr) -> bool:
    """base**power with a symbolic or negative exponent of a base >= 0 that is a polynomial
    in the inputs, one of them differentiated: (p*(1 - y) + y*(1 - p))**(gamma - 2) for p in
    (0, 1) overflows where p**gamma underflows."""
    spec = _SPEC.get()
    if spec is None or (power.is_Integer and power > 0):
        return False
    differentiated = {i.symbol for i in spec.differentiated}
    symbols = sorted(base.free_symbols, key=sympy.default_sort_key)
    if not base.free_symbols & differentiated or not base.is_polynomial(*symbols):
        return False
    return sign(base, spec) in (POS, NONNEG)


def _negative_log1p(base: sympy.Expr) -> bool:
    """base = -log1p(u) for u <= 0 over the domains: -log1p(-p) vanishes like p as p -> 0."""
    spec = _SPEC.get()
    if spec is None or not base.could_extract_minus_sign() or not isinstance(-base, log1p):
        return False
    return sign((-base).args[0], spec) in (NEG, NONPOS)


def _log_of_vanishing(factor: sympy.Expr) -> sympy.Expr | None:
    """log(factor) for a factor that vanishes at some end of its argument (or, a power of an
    input, overflows), else None."""
    if isinstance(factor, sympy.exp):  # as_base_exp would give (E, u)
        return factor.args[0]
    base, power = factor.as_base_exp()
    if _input_power(base, power):
        return power * sympy.log(base)
    if not power.is_Integer or power < 1:
        return None
    if _negative_log1p(base):
        return power * sympy.log(base)
    if isinstance(base, Sigmoid):
        return power * LogSigmoid(base.args[0])
    if isinstance(base, (Exp, sympy.exp)):
        return power * base.args[0]
    if isinstance(base, Softplus):
        return power * LogSoftplus(base.args[0])
    if isinstance(base, sympy.tanh) and isinstance(base.args[0], Softplus):
        u = base.args[0]
        return power * LogTanh(u, LogSoftplus(u.args[0]))
    return None


def _bounds(d: Derivation) -> dict:
    """Constant inputs and parameters with a bounded domain -> the interval of their values."""
    out = {}
    for item in (*(i for i in d.spec.inputs if i.role == "constant"), *d.spec.params):
        domain = getattr(item, "domain", None)
        if domain is None:
            continue
        if domain.kind == "interval" and domain.lo.is_finite and domain.hi.is_finite:
            out[item.symbol] = sympy.AccumBounds(domain.lo, domain.hi)
        elif domain.kind == "set":
            out[item.symbol] = sympy.AccumBounds(min(domain.elements), max(domain.elements))
    return out


def _at_most_one(c: sympy.Expr, bounds: dict) -> bool:
    """Whether |c| <= 1 over the domains: then c*d is subnormal wherever d is."""
    if c.is_Number:
        return True  # a numeric cofactor lifts d only within a factor |c| of the smallest normal
    symbols = sorted(c.free_symbols, key=sympy.default_sort_key)
    if not c.free_symbols <= set(bounds):
        return False
    if c.is_polynomial(*symbols) and all(sympy.degree(c, s) <= 1 for s in symbols):
        # multilinear: its extremes over a box are at the corners (alpha*y + (1-alpha)*(1-y))
        corners = itertools.product(*((bounds[s].min, bounds[s].max) for s in symbols))
        return all(abs(c.subs(dict(zip(symbols, corner)))) <= 1 for corner in corners)
    try:
        value = c.subs(bounds)
    except (TypeError, ValueError, NotImplementedError):
        return False
    if isinstance(value, sympy.AccumBounds):
        return bool(value.min >= -1) and bool(value.max <= 1)
    return bool(value.is_number and abs(value) <= 1)


def _has_vanishing(expr: sympy.Expr) -> bool:
    """Whether a term of the sum (or a branch of the conditional) ``expr`` has a vanishing
    factor."""
    if isinstance(expr, sympy.Piecewise):
        return any(_has_vanishing(e) for e, _ in expr.args)
    return any(
        _log_of_vanishing(f) is not None or isinstance(f, ScaledProduct)
        or ((f.is_Add or isinstance(f, sympy.Piecewise)) and _has_vanishing(f))
        for term in sympy.Add.make_args(expr)
        for f in _factors(term)
    )


def _factors(term: sympy.Expr):
    """The factors of a product, with log1p(u) as -1 * (-log1p(u)): the vanishing factor of
    a negative log1p is its negation."""
    for f in sympy.Mul.make_args(term):
        base, power = f.as_base_exp()
        if isinstance(base, log1p) and power.is_Integer and power >= 1 and _negative_log1p(-base):
            yield (-1) ** power
            yield (-base) ** power
        else:
            yield f


def _distribute(node: sympy.Mul, bounds: dict) -> sympy.Expr:
    """c*(a*d + b) -> c*a*d + c*b, and c*Piecewise((u, C), ...) -> Piecewise((c*u, C), ...),
    where the sum or a branch holds a vanishing factor d and |c| may exceed 1: the cofactor
    must meet d inside one product, the one that is scaled. (Powers of sums stay whole:
    expanding (a - b)**2 would turn a difference into a cancellation of squares.)"""
    for k, arg in enumerate(node.args):
        if (arg.is_Add or isinstance(arg, sympy.Piecewise)) and _has_vanishing(arg):
            c = sympy.Mul(*node.args[:k], *node.args[k + 1:])
            if _at_most_one(c, bounds):
                continue
            if arg.is_Add:
                return sympy.Add(*(sympy.Mul(c, term) for term in arg.args))
            return sympy.Piecewise(*((sympy.Mul(c, e), cond) for e, cond in arg.args))
    return node


#: the quadruple of a term that is zero (a branch a conditional does not take)
_ZERO = (sympy.S.Zero, sympy.S.Zero, sympy.S.One, sympy.S.Zero)


def _quad(term: sympy.Expr) -> tuple[sympy.Expr, ...]:
    """(term, c, d, log d) for a term c*d of a ScaledSum: a scaled product, a conditional with
    one among its branches (branch by branch), a vanishing factor on its own (c = 1), or
    (term, term, 1, 0)."""
    if isinstance(term, ScaledProduct):
        return term, *term.args
    if isinstance(term, sympy.Piecewise) and any(
        isinstance(e, ScaledProduct) for e, _ in term.args
    ):
        branches = [(_quad(e), cond) for e, cond in term.args]
        return term, *(sympy.Piecewise(*((q[k], cond) for q, cond in branches)) for k in (1, 2, 3))
    log = _log_of_vanishing(term)
    if log is not None:
        return term, sympy.S.One, term, log
    return term, term, sympy.S.One, sympy.S.Zero


def _parts(term: sympy.Expr) -> list[sympy.Expr]:
    """The flat quadruples (t, c, d, log d) of a term of a ScaledSum: a scaled sum among the
    terms is flattened into the outer one, and so is one inside a conditional, branch by
    branch (a branch with fewer terms is padded with zero terms)."""
    if isinstance(term, ScaledSum):
        return list(term.args)
    if isinstance(term, sympy.Piecewise) and any(isinstance(e, ScaledSum) for e, _ in term.args):
        branches = [(_parts(e), cond) for e, cond in term.args]
        width = max(len(parts) for parts, _ in branches)
        for parts, _ in branches:
            parts += _ZERO * ((width - len(parts)) // 4)
        return [sympy.Piecewise(*((parts[k], cond) for parts, cond in branches)) for k in range(width)]
    return list(_quad(term))


def _split(node: sympy.Expr) -> tuple[list, list, sympy.Expr]:
    """A product as (vanishing factors, their logs, the cofactor)."""
    vanishing, logs, rest = [], [], []
    for factor in _factors(node):
        base, power = factor.as_base_exp()
        if isinstance(base, LogSigmoid) and power.is_Integer and power >= 1:
            # log_sigmoid(u) = -softplus(-u), which vanishes as u -> oo
            rest.append((-1) ** power)
            factor = Softplus(-base.args[0]) ** power
        log = _log_of_vanishing(factor)
        if log is None:
            rest.append(factor)
        else:
            vanishing.append(factor)
            logs.append(log)
    return vanishing, logs, sympy.Mul(*rest)


def scale_products(
    expr: sympy.Expr, bounds: dict | None = None, varying: frozenset | None = None
) -> sympy.Expr:
    """Every product c*d of a cofactor c (unless |c| <= 1 over the domains) and vanishing
    factors d becomes ScaledProduct(c, d, log d): c*d can be a normal number while d is
    subnormal, and a flushing backend must not form d on its own. A cofactor is first
    distributed over the sums and branches that hold vanishing factors. In a sum with such a
    product every term with a vanishing factor is scaled, whatever its cofactor, and the sum
    becomes a ScaledSum: its terms can each be below the smallest normal number while their
    sum is not (the focal Hessian at x = -709). A sum whose cofactors are all at most 1 stays
    plain (each of its terms is subnormal only where its vanishing factor is).

    ``varying``: when given, a cofactor free of these symbols (the differentiated inputs)
    counts as bounded too (over a class axis: a class weight lifts a flushed softmax
    probability by its own size only, while scaling every such product doubled JAX's
    cross-entropy fwd+bwd time)."""
    bounds = bounds or {}

    def bounded(c) -> bool:
        if varying is not None and not (c.free_symbols & varying):
            return True
        return _at_most_one(c, bounds)

    def scalable(term) -> bool:
        if isinstance(term, sympy.Piecewise):
            return any(scalable(e) for e, _ in term.args)
        vanishing, _, c = _split(term)
        return bool(vanishing) and not bounded(c)

    def visit(node, in_sum=False):
        if node.is_Atom:
            return node
        if node.is_Add:  # a vanishing factor common to every term comes out of the sum
            common = sympy.factor_terms(node)
            if common.is_Mul and any(_log_of_vanishing(f) is not None for f in common.args):
                node = common
        if node.is_Mul:  # the new terms are visited as they are (no refactoring)
            node = _distribute(node, bounds)
        mixed = node.is_Add and any(scalable(t) for t in node.args)
        # (a product distributed into a sum inside a mixed sum: its terms are the outer sum's,
        # scaled as its own and added there)
        inner = node.is_Add and in_sum
        node = node.func(*(visit(arg, mixed or inner) for arg in node.args))
        if mixed and not inner:
            parts = [part for t in node.args for part in _parts(t)]
            if any(log != 0 for log in parts[3::4]):
                return ScaledSum(*parts)
        if not node.is_Mul:
            return node
        vanishing, logs, c = _split(node)
        if not vanishing or (not in_sum and bounded(c)):
            return node
        return ScaledProduct(c, sympy.Mul(*vanishing), sympy.Add(*logs))

    return visit(expr)


def _sigmoid_monomial(expr: sympy.Expr) -> bool:
    return all(
        isinstance(b, Sigmoid) and e.is_Integer and e > 0
        for b, e in (f.as_base_exp() for f in sympy.Mul.make_args(expr))
    )


def collect_sigmoids(expr: sympy.Expr, xs: set) -> sympy.Expr:
    """A sum of sigmoid monomials with coefficients free of the inputs, collected by monomial:
    y*(1 + e)*s*sb**2 - (1 - y)*(1 + e)*s*sb**2 + ... -> c*s*sb**2 + ..., where c is formed from
    the exact labels and parameters. A coefficient that is 0 (poly-1's Hessian at e = 2,
    y = 1/4) then drops out exactly, instead of leaving the rounding of two terms that cancel
    (s = sigmoid(x), sb = sigmoid(-x))."""

    def visit(node):
        if node.is_Atom:
            return node
        node = node.func(*(visit(arg) for arg in node.args))
        if not node.is_Add:
            return node
        groups: dict[sympy.Expr, sympy.Expr] = {}
        for term in sympy.Add.make_args(sympy.expand_mul(node)):
            coeff, mono = term.as_independent(*xs, as_Add=False)
            if mono == 1 or not _sigmoid_monomial(mono):
                return node
            groups[mono] = groups.get(mono, sympy.S.Zero) + coeff
        collected = sympy.Add(*(sympy.factor_terms(c) * m for m, c in groups.items()))
        return sympy.factor_terms(collected)

    return visit(expr)


def exact_squares(expr: sympy.Expr) -> sympy.Expr:
    """erfc(c*x) -> ErfcScaled(x, c, c**2) where c**2 is a power of two."""
    def visit(node):
        if node.is_Atom:
            return node
        node = node.func(*(visit(arg) for arg in node.args))
        if isinstance(node, Erfc):
            return erfc_scaled(node) or node
        return node

    return visit(expr)


def simplify(d: Derivation) -> Derivation:
    xs = {i.symbol for i in d.spec.differentiated}
    outputs = {
        "value": [collect_sigmoids(d.value, xs)],
        "grad": [collect_sigmoids(g, xs) for g in d.grad],
        "hess": [sympy.factor_terms(collect_sigmoids(h, xs)) for row in d.hess for h in row],
    }
    blocks = {key: _block(d, [exact_squares(e) for e in exprs]) for key, exprs in outputs.items()}
    # the loss and its gradient from one block, for a training step's forward: what they
    # share (log-sigmoids, a log-softmax, a one-hot) is computed once
    blocks["value_grad"] = _block(
        d, [exact_squares(e) for e in outputs["value"] + outputs["grad"]]
    )
    if d.spec.has_classes:
        blocks["hvp"] = _block(d, list(d.hvp))
    # the shared sigmoid family (share_sigmoid_family) for JAX only, where XLA fuses the
    # elementwise ops and the cost is the exps and logs: eager torch pays per kernel launched
    # and per temporary allocated, and its own fused sigmoid and logsigmoid kernels beat the
    # expansion (measured on CPU); NumPy keeps the forms its accuracy fixtures were graded on
    # (the focal Hessian at x = 11, y = 0.25, gamma = 0.25 cancels, and the shared form's
    # rounding order is 4.5 bits beyond conditioning there in float64)
    plain = {
        "value_grad": outputs["value"] + outputs["grad"],
        **outputs,
        **({"hvp": list(d.hvp)} if d.spec.has_classes else {}),
    }
    for key, exprs in plain.items():
        exprs = [exact_squares(e) for e in exprs] if key != "hvp" else exprs
        if share_sigmoid_family(exprs) != exprs:
            blocks[f"jax:{key}"] = _block(d, exprs, share=True)
    token = _SPEC.set(d.spec)
    try:
        # over a class axis, only products whose cofactor moves with the inputs (logit
        # differences, a Dice denominator) are scaled
        varying = frozenset(xs) if d.spec.has_classes else None
        flushing = {
            key: [scale_products(e, _bounds(d), varying) for e in exprs]
            for key, exprs in outputs.items()
        }
    finally:
        _SPEC.reset(token)
    for backend in FLUSHING:
        for key, exprs in outputs.items():
            scaled = flushing[key]
            # (over a class axis, a cofactor distributed over a sum where nothing came to be
            # scaled is left as it was: one multiplication fewer per entry)
            if d.spec.has_classes and not any(e.has(ScaledProduct, ScaledSum) for e in scaled):
                continue
            if scaled != exprs:
                blocks[f"{backend}:{key}"] = _block(
                    d, [exact_squares(e) for e in scaled], share=backend == "jax"
                )
    return replace(d, blocks=blocks)
