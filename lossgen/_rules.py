"""The rule base: rewrites into stable primitives, kept as data.

Each rule states the identity it applies, the domain on which that identity holds, and why it
helps. ``always`` rules replace a form by one that is never worse (1 - sigmoid(u) by
sigmoid(-u)); the others fire only on a subterm the analysis flagged (a power whose base
vanishes at a domain boundary is moved to log space, but x**2 is left alone). ``example`` is a
left side, its rewritten right side, and a sampling range for its free symbols:
``tests/test_rules.py`` checks every rule on it against the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy
from sympy.codegen.cfunctions import log1p

from ._primitives import (
    Erfc, Exp, Expm1, LogAddExp, LogCosh, LogRatio, LogSigmoid, Sigmoid, Softplus,
    SoftplusMinusSigmoid, SqrtDifference, LogQuotient, XLogY,
)
from ._signs import NEG, NONNEG, NONPOS, POS, affine, sign
from ._types import Spec

__all__ = ["RULES", "Context", "Rule"]


@dataclass
class Context:
    """What a rule may consult: the spec (domains) and the analysis of any subterm."""

    spec: Spec
    #: subterm -> boundary labels where the analysis found it vanishing
    vanishing: Callable[[sympy.Expr], list[str]]
    #: subterm -> boundary labels where the analysis found it tending to 1
    near_one: Callable[[sympy.Expr], list[str]]

    @property
    def xs(self) -> set:
        return {i.symbol for i in self.spec.differentiated}


@dataclass(frozen=True)
class Rule:
    name: str
    identity: str
    holds: str
    reason: str
    apply: Callable[[sympy.Expr, Context], sympy.Expr | None]
    #: fire without a finding (the right side is never worse)
    always: bool
    #: (left side, expected right side, {symbol: (lo, hi)} to sample)
    example: tuple[sympy.Expr, sympy.Expr, dict]


_u, _y, _a, _b, _p = sympy.symbols("u y a b p", real=True)


def _pairs(expr: sympy.Expr) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """Complementary pairs (s, 1 - s) held as two stable atoms: sigmoid(u), sigmoid(-u) and the
    weights exp(a - lae), exp(b - lae) of a logaddexp(a, b)."""
    pairs = []
    for node in sorted(expr.atoms(Sigmoid), key=sympy.default_sort_key):
        u = node.args[0]
        u = -u if u.could_extract_minus_sign() else u
        if (Sigmoid(u), Sigmoid(-u)) not in pairs:
            pairs.append((Sigmoid(u), Sigmoid(-u)))
    for node in sorted(expr.atoms(LogAddExp), key=sympy.default_sort_key):
        a, b = node.args
        pair = (Exp(a - node), Exp(b - node))
        if (pair[0] in expr.atoms(Exp) or pair[1] in expr.atoms(Exp)) and pair not in pairs:
            pairs.append(pair)
    return pairs


def _partition(expr: sympy.Expr, s_form, sbar_form, ctx: Context, constant_only: bool):
    """a0 + a1*s -> (a0 + a1)*s + a0*(1 - s): the pair's terms never cancel against a0."""
    parts = affine(expr, s_form, sbar_form)
    if parts is None:
        return None
    a0, a1 = parts
    total = _simplify_partitioned(a0 + a1, ctx)
    a0 = _simplify_partitioned(a0, ctx)
    if total == 0:
        out = a0 * sbar_form
    elif a0 == 0:
        out = total * s_form
    elif constant_only and (a0.free_symbols | total.free_symbols) & ctx.xs:
        return None
    else:
        out = sympy.factor(total) * s_form + sympy.factor(a0) * sbar_form
    return None if out == expr else out


def _simplify_partitioned(expr: sympy.Expr, ctx: Context) -> sympy.Expr:
    """S(u) + S(-u) = 1 inside a coefficient (one level, no recursion into other rules)."""
    expr = sympy.expand(expr) if expr.is_Add else expr
    for s_form, sbar_form in _pairs(expr):
        parts = affine(expr, s_form, sbar_form)
        if parts is not None and parts[1] == 0:
            expr = parts[0]
    return expr


def _complement_partition(expr: sympy.Expr, ctx: Context) -> sympy.Expr | None:
    """On a sum holding sigmoid(u), sigmoid(-u) or logaddexp weights: see ``_partition``."""
    if not expr.is_Add:
        return None
    for s_form, sbar_form in _pairs(expr):
        out = _partition(expr, s_form, sbar_form, ctx, constant_only=True)
        if out is not None:
            return out
    return None


def _probability_partition(expr: sympy.Expr, ctx: Context) -> sympy.Expr | None:
    """a0 + a1*p -> (a0 + a1)*p + a0*(1 - p) for an input p in [0, 1], where the sum cancels."""
    if not expr.is_Add or not ctx.vanishing(expr):
        return None
    for inp in ctx.spec.differentiated:
        d = inp.domain
        if d.kind == "interval" and d.lo >= 0 and d.hi <= 1 and expr.has(inp.symbol):
            if not expr.is_polynomial(inp.symbol) or sympy.degree(expr, inp.symbol) != 1:
                continue
            p = inp.symbol
            flat = sympy.expand(expr)
            a0, a1 = flat.coeff(p, 0), flat.coeff(p, 1)
            if (a0.free_symbols | a1.free_symbols) & ctx.xs or a0 == 0:
                continue
            out = sympy.factor(a0 + a1) * p + sympy.factor(a0) * (1 - p)
            return None if out == expr else out
    return None


def _log_sigmoid(expr, ctx):
    if isinstance(expr, sympy.log) and isinstance(expr.args[0], Sigmoid):
        return LogSigmoid(expr.args[0].args[0])
    return None


def _log_one_plus_exp(expr, ctx):
    if isinstance(expr, sympy.log) and expr.args[0].is_Add and len(expr.args[0].args) == 2:
        one, rest = sorted(expr.args[0].args, key=lambda a: not a.is_Number)
        if one == 1 and isinstance(rest, sympy.exp):
            return Softplus(rest.args[0])
    return None


def _log_one_plus(expr, ctx):
    """log(1 + u) -> log1p(u)."""
    if isinstance(expr, sympy.log) and expr.args[0].is_Add:
        one, rest = expr.args[0].as_coeff_Add()
        if one == 1:
            return log1p(rest)
    return None


def _log_cosh(expr, ctx):
    if isinstance(expr, sympy.log) and isinstance(expr.args[0], sympy.cosh):
        return LogCosh(expr.args[0].args[0])
    return None


def _linear_in(expr: sympy.Expr, node: sympy.Expr):
    """(a0, a1) with expr = a0 + a1*node, neither of them containing node; else None."""
    flat = sympy.expand(expr, deep=False)
    a1 = flat.coeff(node)
    a0 = sympy.expand(flat - a1 * node, deep=False)
    if a1 == 0 or a0.has(node) or a1.has(node):
        return None
    return a0, a1


def _complement_of(function, replace_plus, replace_minus):
    """a + a*f(u) -> replace_plus(a, u); a - a*f(u) -> replace_minus(a, u)."""

    def apply(expr, ctx):
        if not expr.is_Add:
            return None
        for node in sorted(expr.atoms(function), key=sympy.default_sort_key):
            parts = _linear_in(expr, node)
            if parts is None:
                continue
            a0, a1 = parts
            u = node.args[0]
            if sympy.expand(a0 - a1) == 0:
                return replace_plus(a0, u)
            if sympy.expand(a0 + a1) == 0:
                return replace_minus(a0, u)
        return None

    return apply


def _sech_squared(expr, ctx):
    """a - a*tanh(u)**2 -> 4a*sigmoid(2u)*sigmoid(-2u)."""
    if not expr.is_Add:
        return None
    for node in sorted(expr.atoms(sympy.tanh), key=sympy.default_sort_key):
        parts = _linear_in(expr, node**2)
        if parts is not None and sympy.expand(parts[0] + parts[1]) == 0:
            u = node.args[0]
            return 4 * parts[0] * Sigmoid(2 * u) * Sigmoid(-2 * u)
    return None


def _rational_factor(expr, ctx):
    """A sum that is a rational function of the symbols -> its factored form, when that has
    several factors: near a root of the numerator the sum cancels, each factor does not."""
    if not expr.is_Add or not expr.free_symbols & ctx.xs:
        return None
    symbols = sorted(expr.free_symbols, key=sympy.default_sort_key)
    if not expr.is_rational_function(*symbols) or expr.atoms(sympy.Function):
        return None
    out = sympy.factor(expr)
    varying = [f for f in sympy.Mul.make_args(out) if f.free_symbols & ctx.xs]
    if out == expr or not out.is_Mul or len(varying) < 2:
        return None
    return out


def _exp_minus_one(expr, ctx):
    """a*exp(u) - a -> a*expm1(u)."""
    if not expr.is_Add:
        return None
    nodes = expr.atoms(sympy.exp) | expr.atoms(Exp)
    for node in sorted(nodes, key=sympy.default_sort_key):
        parts = _linear_in(expr, node)
        if parts is not None and sympy.expand(parts[0] + parts[1]) == 0:
            return parts[1] * Expm1(node.args[0])
    return None


_tanh_complement = _complement_of(
    sympy.tanh, lambda a, u: 2 * a * Sigmoid(2 * u), lambda a, u: 2 * a * Sigmoid(-2 * u)
)
_erf_complement = _complement_of(
    sympy.erf, lambda a, u: a * Erfc(-u), lambda a, u: a * Erfc(u)
)


def _half_powers(expr, ctx) -> list[sympy.Expr]:
    """The powers X**(k/2), k odd, of a base X that depends on a differentiated input."""
    nodes = [
        n for n in expr.atoms(sympy.Pow)
        if n.exp.is_Rational and n.exp.q == 2 and n.base.free_symbols & ctx.xs
    ]
    return sorted(nodes, key=sympy.default_sort_key)


def _sqrt_difference(expr, ctx):
    """a*sqrt(X) - a*B -> a*(X - B**2)/(sqrt(X) + B), B >= 0, where X - B**2 loses terms.

    The difference cancels where sqrt(X) is close to B; X - B**2 formed symbolically (1 + u**2
    - 1 = u**2) does not, and the denominator adds two nonnegative terms.
    """
    if not expr.is_Add or not expr.free_symbols & ctx.xs:
        return None
    for node in (n for n in _half_powers(expr, ctx) if n.exp == sympy.S.Half):
        parts = _linear_in(expr, node)
        if parts is None:
            continue
        rest, a = parts
        b = sympy.cancel(-rest / a)
        if b == 0 or b.has(node) or sign(b, ctx.spec) not in (POS, NONNEG):
            continue
        x = node.base
        difference = sympy.expand(x - b**2)
        if len(sympy.Add.make_args(difference)) >= len(sympy.Add.make_args(sympy.expand(x))) + len(
            sympy.Add.make_args(sympy.expand(b**2))
        ):
            continue  # nothing cancels symbolically: the difference is not a near-zero one
        return a * SqrtDifference(x, b, sympy.factor(difference))
    return None


def _log_argument(term):
    """(c, A) for a term c*log(A) or c*log1p(a) (A = 1 + a); else None."""
    c, node = term.as_coeff_Mul()
    for factor in sympy.Mul.make_args(node):
        if isinstance(factor, sympy.log):
            return c * node / factor, factor.args[0]
        if isinstance(factor, log1p):
            return c * node / factor, 1 + factor.args[0]
    return None


def _log_difference(expr, ctx):
    """c*log(A) - c*log(B) -> c*log_quotient(A, B, A - B), where A - B loses terms."""
    if not expr.is_Add or not expr.free_symbols & ctx.xs:
        return None
    logs = [(t, _log_argument(t)) for t in expr.args]
    logs = [(t, found) for t, found in logs if found is not None]
    for i, (ta, (ca, a)) in enumerate(logs):
        for tb, (cb, b) in logs[i + 1:]:
            if sympy.expand(ca + cb) != 0 or not (a.free_symbols | b.free_symbols) & ctx.xs:
                continue
            if sign(a, ctx.spec) != POS or sign(b, ctx.spec) != POS:
                continue
            difference = sympy.expand(a - b)
            if len(sympy.Add.make_args(difference)) >= len(sympy.Add.make_args(sympy.expand(a + b))):
                continue  # nothing cancels symbolically
            if ca.could_extract_minus_sign():  # the positive log first: c*log(A/B), c > 0
                ca, a, b, difference = cb, b, a, -difference
            rest = expr - ta - tb
            return rest + ca * LogQuotient(a, b, sympy.factor(difference))
    return None


def _radical_together(expr, ctx):
    """A sum of terms in powers of sqrt(X) -> one fraction whose numerator has X for
    sqrt(X)**2: 1/S - u**2/S**3 with S**2 = 1 + u**2 is 1/S**3, where the two terms cancel
    for large u."""
    if not expr.is_Add or not expr.free_symbols & ctx.xs:
        return None
    if not _half_powers(expr, ctx) or expr.atoms(sympy.Function):
        return None
    # symbols positive on their domain as positive dummies: no Abs from powers of their squares
    positive = {
        s: sympy.Dummy(s.name, positive=True)
        for s in expr.free_symbols if sign(s, ctx.spec) == POS
    }
    numerator, denominator = sympy.fraction(sympy.together(expr.xreplace(positive)))
    numerator = sympy.expand(numerator)
    if len(sympy.Add.make_args(numerator)) >= len(expr.args):
        return None
    back = {v: k for k, v in positive.items()}
    return (sympy.factor(numerator) / denominator).xreplace(back)


def _nonneg(expr, ctx) -> bool:
    return sign(expr, ctx.spec) in (POS, NONNEG)


def _log_of_product(expr, ctx):
    """log(a*b) -> log(a) + log(b), and log(b**e) -> e*log(b), for a, b >= 0."""
    if not isinstance(expr, sympy.log):
        return None
    (arg,) = expr.args
    if arg.is_Pow and _nonneg(arg.base, ctx) and arg.base.free_symbols & ctx.xs:
        return arg.exp * sympy.log(arg.base)
    if not arg.is_Mul:
        return None
    factors = sympy.Mul.make_args(arg)
    negatives = [f for f in factors if sign(f, ctx.spec) in (NEG, NONPOS)]
    if len(negatives) % 2:
        return None
    if not all(sign(f, ctx.spec) is not None for f in factors):
        return None
    if not any(f.free_symbols & ctx.xs for f in factors):
        return None
    return sympy.Add(*(sympy.log(-f if f in negatives else f) for f in factors))


def _power_via_log(expr, ctx):
    """b**a -> exp(a*log(b)) for b >= 0 that vanishes at a domain boundary."""
    if not expr.is_Pow:
        return None
    base, exponent = expr.args
    if exponent.is_Integer or not (base.free_symbols & ctx.xs) or not ctx.vanishing(base):
        return None
    if base.is_rational_function(*ctx.xs):
        return None  # a power of an exact difference such as 1 - p is accurate as it is
    if not _nonneg(base, ctx):
        return None
    return sympy.exp(exponent * sympy.log(base))


def _log_of_sum(expr, ctx):
    """log(a + b) -> logaddexp(log(a), log(b)) for a, b >= 0 whose sum vanishes somewhere."""
    if not isinstance(expr, sympy.log) or not ctx.vanishing(expr.args[0]):
        return None
    (arg,) = expr.args
    if not arg.is_Add or not all(_nonneg(t, ctx) for t in arg.args):
        return None
    terms = sorted(arg.args, key=sympy.default_sort_key)
    out = sympy.log(terms[0])
    for term in terms[1:]:
        out = LogAddExp(out, sympy.log(term))
    return out


def _log_near_one(expr, ctx):
    """log(f) -> log1p(f - 1) where f tends to 1 and f - 1 is a polynomial in the inputs."""
    if not isinstance(expr, sympy.log) or not ctx.near_one(expr.args[0]):
        return None
    (arg,) = expr.args
    if arg.is_Symbol or not arg.is_polynomial(*ctx.xs):
        return None
    return log1p(sympy.expand(arg - 1))


def _sigmoid_difference(expr, ctx):
    """A*sigmoid(u) - B*sigmoid(-u), A, B >= 0 -> a branch on u >= log(B/A) with expm1.

    The two terms cancel where u = log(B/A) (a gradient's zero with soft labels); around it,
    A S(u) - B S(-u) = -A S(u) expm1(c - u) = B S(-u) expm1(u - c) with c = log(B) - log(A)
    keeps the digits, and each branch is used on the side where its factors do not overflow.
    """
    if not expr.is_Add or len(expr.args) != 2:
        return None
    first, second = expr.args
    found = {}
    for term in (first, second):
        coeff, rest = term.as_independent(*ctx.xs, as_Add=False)
        if not isinstance(rest, Sigmoid):
            return None
        found[rest] = coeff
    sigmoids = list(found)
    u = sigmoids[0].args[0]
    u = -u if u.could_extract_minus_sign() else u
    if set(sigmoids) != {Sigmoid(u), Sigmoid(-u)}:
        return None
    a, b = found[Sigmoid(u)], -found[Sigmoid(-u)]
    if a.is_Number and b.is_Number:
        return None
    if _nonneg(-a, ctx) and _nonneg(-b, ctx):  # -(|A|*S(u) - |B|*S(-u))
        out = _sigmoid_difference(-expr, ctx)
        return None if out is None else -out
    if not (_nonneg(a, ctx) and _nonneg(b, ctx)):
        return None
    # c = log(B/A) as log1p((B - A)/A): with soft labels A and B are close, and
    # log(B) - log(A) would lose the digits of c that the expm1 branches need
    c = LogRatio(b, a, sympy.factor(sympy.expand(b - a)))
    return sympy.Piecewise(
        (-a * Sigmoid(u) * Expm1(c - u), u >= c), (b * Sigmoid(-u) * Expm1(u - c), True)
    )


def _mixture(expr, ctx):
    """(A, B, u) with expr = A*sigmoid(u) + B*sigmoid(-u), A and B free of the inputs; else None."""
    if not expr.is_Add or len(expr.args) != 2:
        return None
    found = {}
    for term in expr.args:
        coeff, rest = term.as_independent(*ctx.xs, as_Add=False)
        if not isinstance(rest, Sigmoid):
            return None
        found[rest] = coeff
    u = next(iter(found)).args[0]
    u = -u if u.could_extract_minus_sign() else u
    if set(found) != {Sigmoid(u), Sigmoid(-u)}:
        return None
    return found[Sigmoid(u)], found[Sigmoid(-u)], u


def _opposite_signs_possible(a, b, ctx) -> bool:
    """Whether a and b (free of the inputs) may have strictly opposite signs somewhere."""
    sa, sb = sign(a, ctx.spec), sign(b, ctx.spec)
    nonneg, nonpos = (POS, NONNEG), (NEG, NONPOS)
    if a == 0 or b == 0 or (sa in nonneg and sb in nonneg) or (sa in nonpos and sb in nonpos):
        return False
    return True


def _log_mixture(expr, ctx):
    """log(A*sigmoid(u) + B*sigmoid(-u)), A, B >= 0, where the mixture can cross 1 (A <= 1 <= B):
    log1p of the mixture minus 1 above 1/2, the log itself below.

    The mixture runs from B to A as u grows, so where 1 lies between them it passes 1 at an
    inner point (asymmetric loss: log(1 - (p - clip)) at p = clip): there log(m) keeps only
    the digits of m's rounding. m - 1 = (A - 1)*sigmoid(u) + (B - 1)*sigmoid(-u) is a
    difference that ``sigmoid_difference`` keeps exact. Below 1/2 the sum of two nonnegative
    terms is accurate, except where a weight that can be 0 is 0 and the other term underflows
    (A = 0 as u -> oo): there the log is log(B) + log_sigmoid(-u).
    """
    if not isinstance(expr, sympy.log):
        return None
    parts = _mixture(expr.args[0], ctx)
    if parts is None:
        return None
    a, b, u = parts
    if not (_nonneg(a, ctx) and _nonneg(b, ctx)) or not _opposite_signs_possible(a - 1, b - 1, ctx):
        return None
    minus_one = sympy.expand(a - 1) * Sigmoid(u) + sympy.expand(b - 1) * Sigmoid(-u)
    branches = [(log1p(minus_one), expr.args[0] > sympy.Rational(1, 2))]
    for weight, other, v in ((a, b, -u), (b, a, u)):
        if sign(weight, ctx.spec) != POS and not (weight.is_Number and weight != 0):
            branches.append((sympy.log(other) + LogSigmoid(v), sympy.Eq(weight, 0)))
    return sympy.Piecewise(*branches, (expr, True))


def _softplus_sigmoid(expr, ctx):
    """a*softplus(u) + b*sigmoid(u) -> a*((1 + b/a)*sigmoid(u) + softplus_minus_sigmoid(u))
    when b/a (free of the inputs) can be -1: then the two terms cancel to exp(2u)/2 as
    u -> -oo (poly-1 with epsilon = -1); softplus(-u) is -log_sigmoid(u)."""
    if not expr.is_Add:
        return None
    terms = []
    for term in sympy.Add.make_args(expr):
        if term.has(Sigmoid, LogSigmoid, Softplus):
            terms += sympy.Add.make_args(sympy.expand_mul(term))
        else:
            terms.append(term)
    softplus, sigmoid, rest = {}, {}, []
    for term in terms:
        coeff, f = term.as_independent(*ctx.xs, as_Add=False)
        if isinstance(f, LogSigmoid):
            softplus[-f.args[0]] = softplus.get(-f.args[0], 0) - coeff
        elif isinstance(f, Softplus):
            softplus[f.args[0]] = softplus.get(f.args[0], 0) + coeff
        elif isinstance(f, Sigmoid):
            sigmoid[f.args[0]] = sigmoid.get(f.args[0], 0) + coeff
        else:
            rest.append(term)
    pairs = [u for u in softplus if u in sigmoid]
    changed = False
    for u in pairs:
        a, b = softplus[u], sigmoid[u]
        k = sympy.cancel(b / a)
        if k.free_symbols & ctx.xs or (k.is_number and k != -1):
            continue
        rest.append(a * ((1 + k) * Sigmoid(u) + SoftplusMinusSigmoid(u)))
        del softplus[u], sigmoid[u]
        changed = True
    if not changed:
        return None
    rest += [-a * LogSigmoid(-u) for u, a in softplus.items()]
    rest += [b * Sigmoid(u) for u, b in sigmoid.items()]
    return sympy.Add(*rest)


def _xlogy(expr, ctx):
    """a*(... + c*log(b) + ...) -> ... + c*xlogy(a, b) + ..., where a >= 0 is a differentiated
    input's expression that can be 0 (the entries of a target distribution): there log(b) is
    -inf and the product NaN, where its value is 0."""
    if not expr.is_Mul or not expr.has(sympy.log):
        return None
    logs = {node.args[0] for node in expr.atoms(sympy.log)}
    for a in expr.args:
        # a factor that is also a log's argument: t*log(t), t*(log(t) - x)
        if a not in logs or not a.free_symbols & ctx.xs or sign(a, ctx.spec) != NONNEG:
            continue
        rest = sympy.expand_mul(expr / a)
        out, changed = [], False
        for term in sympy.Add.make_args(rest):
            logs = [f for f in sympy.Mul.make_args(term) if isinstance(f, sympy.log)]
            if len(logs) == 1 and logs[0].args[0].free_symbols & ctx.xs:
                out.append(term / logs[0] * XLogY(a, logs[0].args[0]))
                changed = True
            else:
                out.append(a * term)
        if changed:
            return sympy.Add(*out)
    return None


def _zero_guard(expr, ctx):
    """c * f -> (0 where c = 0, else c * f) when f has a pole and c (free of the inputs) can be 0:
    at c = 0 the product is 0, but 0 * inf is NaN once f overflows."""
    if not expr.is_Mul:
        return None
    coeff, rest = expr.as_independent(*ctx.xs, as_Add=False)
    if not rest.free_symbols & ctx.xs:
        return None
    factors = [f for f in sympy.Mul.make_args(coeff) if not f.is_Number]
    zeroable = [f for f in factors if sign(f, ctx.spec) in (NONNEG, NONPOS, None)]
    if not zeroable:
        return None
    poles = [
        node for node in rest.atoms(sympy.Pow)
        if node.base.free_symbols & ctx.xs and sign(node.exp, ctx.spec) not in (POS, NONNEG)
    ]
    if not poles:
        return None
    guard = sympy.Or(*(sympy.Eq(f, 0) for f in zeroable))
    return sympy.Piecewise((0, guard), (expr, True))


_c = LogRatio(1 - _y, _y, 1 - 2 * _y)

RULES: tuple[Rule, ...] = (
    Rule(
        "xlogy",
        "a*(c*log(b) + r) -> c*xlogy(a, b) + a*r: xlogy(a, b) = a*log(b), 0 where a = 0",
        "a >= 0 (a differentiated input's expression that can be 0)",
        "at a = b = 0 the product is 0*(-inf) = NaN where its value (the limit of t*log(t)) "
        "is 0, as in a KL divergence's zero target entries",
        _xlogy,
        always=True,
        example=(_p * (sympy.log(_p) - _y), XLogY(_p, _p) - _p * _y, {_p: (0, 1), _y: (-5, 5)}),
    ),
    Rule(
        "complement_partition",
        "a0 + a1*s -> (a0 + a1)*s + a0*(1 - s), s = sigmoid(u) (1 - s = sigmoid(-u)) or a "
        "logaddexp weight (1 - s = the other weight)",
        "all real u; a0, a1 free of the differentiated inputs unless a side cancels exactly",
        "1 - sigmoid(u) rounds to 0 for u > 37 in float64; 1 - weight rounds to 0 likewise",
        _complement_partition,
        always=True,
        example=(1 - _y * Sigmoid(_u) - (1 - _y) * (1 - Sigmoid(_u)),
                 (1 - _y) * Sigmoid(_u) + _y * Sigmoid(-_u), {_u: (-60, 60), _y: (0, 1)}),
    ),
    Rule(
        "probability_partition",
        "a0 + a1*p -> (a0 + a1)*p + a0*(1 - p), p an input in [0, 1]",
        "p in [0, 1]",
        "the sum vanishes at an end of p's domain and its rounded terms cancel",
        _probability_partition,
        always=False,
        example=(1 - _p * _y - (1 - _p) * (1 - _y), (1 - _y) * _p + _y * (1 - _p),
                 {_p: (0, 1), _y: (0, 1)}),
    ),
    Rule(
        "log_sigmoid",
        "log(sigmoid(u)) -> log_sigmoid(u)",
        "all real u",
        "sigmoid(u) rounds to 1 for u > 37 and underflows for u < -745",
        _log_sigmoid,
        always=True,
        example=(sympy.log(Sigmoid(_u)), LogSigmoid(_u), {_u: (-800, 800)}),
    ),
    Rule(
        "log_one_plus_exp",
        "log(1 + exp(u)) -> softplus(u)",
        "all real u",
        "exp(u) overflows for u > 709 and 1 + exp(u) rounds to 1 for u < -37",
        _log_one_plus_exp,
        always=True,
        example=(sympy.log(1 + sympy.exp(_u)), Softplus(_u), {_u: (-800, 800)}),
    ),
    Rule(
        "log_one_plus",
        "log(1 + u) -> log1p(u)",
        "u > -1",
        "1 + u rounds to 1 for |u| < eps/2: log(1 + u) loses every digit of a small u",
        _log_one_plus,
        always=True,
        example=(sympy.log(1 + _u**2), log1p(_u**2), {_u: (-1e-3, 1e-3)}),
    ),
    Rule(
        "log_cosh",
        "log(cosh(u)) -> log_cosh(u)",
        "all real u",
        "cosh(u) overflows for |u| > 710 and rounds to 1 for |u| < 1e-8",
        _log_cosh,
        always=True,
        example=(sympy.log(sympy.cosh(_u)), LogCosh(_u), {_u: (-800, 800)}),
    ),
    Rule(
        "exp_minus_one",
        "a*exp(u) - a -> a*expm1(u)",
        "all real u",
        "exp(u) rounds to 1 for |u| < eps: the difference loses every digit of a small u",
        _exp_minus_one,
        always=True,
        example=(1 - sympy.exp(_u), -Expm1(_u), {_u: (-1e-3, 1e-3)}),
    ),
    Rule(
        "tanh_complement",
        "a + a*tanh(u) -> 2a*sigmoid(2u); a - a*tanh(u) -> 2a*sigmoid(-2u)",
        "all real u",
        "1 + tanh(u) cancels to 0 for u < -19 in float64 (and 1 - tanh(u) for u > 19)",
        _tanh_complement,
        always=True,
        example=(1 + sympy.tanh(_u), 2 * Sigmoid(2 * _u), {_u: (-400, 400)}),
    ),
    Rule(
        "sech_squared",
        "a - a*tanh(u)**2 -> 4a*sigmoid(2u)*sigmoid(-2u)",
        "all real u",
        "1 - tanh(u)**2 cancels to 0 for |u| > 19 in float64, where it is 4*exp(-2|u|); "
        "1/cosh(u)**2 would overflow to 0 before the result underflows",
        _sech_squared,
        always=True,
        example=(1 - sympy.tanh(_u) ** 2, 4 * Sigmoid(2 * _u) * Sigmoid(-2 * _u),
                 {_u: (-300, 300)}),
    ),
    Rule(
        "rational_factor",
        "a rational sum -> its factorization, e.g. c**2 - r**2 -> (c - r)*(c + r)",
        "where the sum is defined",
        "near a root of the sum its rounded terms cancel; a product of factors does not",
        _rational_factor,
        always=True,
        example=(1 - _u**2 / 4, sympy.factor(1 - _u**2 / 4), {_u: (1.9, 2.1)}),
    ),
    Rule(
        "sqrt_difference",
        "a*sqrt(X) - a*B -> a*(X - B**2)/(sqrt(X) + B)",
        "X >= 0, B >= 0",
        "sqrt(X) - B cancels where X is close to B**2 (sqrt(1 + u**2) - 1 for small u loses every "
        "digit of u**2/2); X - B**2 is formed symbolically and the denominator does not cancel",
        _sqrt_difference,
        always=True,
        example=(sympy.sqrt(1 + _u**2) - 1, SqrtDifference(1 + _u**2, 1, _u**2), {_u: (-1e-3, 1e-3)}),
    ),
    Rule(
        "log_difference",
        "c*log(A) - c*log(B) -> c*log_quotient(A, B, A - B): log1p((A - B)/B) near A = B, "
        "log(A/B) elsewhere",
        "A, B > 0",
        "the two logs cancel where A is close to B (log1p(pred) - log1p(target) for "
        "pred ~ target); A - B formed symbolically keeps the digits",
        _log_difference,
        always=True,
        example=(log1p(_u) - log1p(_a), LogQuotient(1 + _u, 1 + _a, _u - _a),
                 {_u: (-0.999, 1e6), _a: (-0.999, 1e6)}),
    ),
    Rule(
        "radical_together",
        "a sum of terms in powers of S = sqrt(X) -> one fraction, S**2 = X in its numerator",
        "X > 0",
        "the terms cancel where their leading powers agree (1/S - u**2/S**3 for large u); "
        "the numerator formed symbolically does not",
        _radical_together,
        always=True,
        example=(1 / sympy.sqrt(1 + _u**2) - _u**2 / (1 + _u**2) ** sympy.Rational(3, 2),
                 1 / (1 + _u**2) ** sympy.Rational(3, 2), {_u: (1e3, 1e6)}),
    ),
    Rule(
        "erf_complement",
        "a + a*erf(u) -> a*erfc(-u); a - a*erf(u) -> a*erfc(u)",
        "all real u",
        "1 + erf(u) cancels to 0 for u < -6 in float64, where it is erfc(-u) > 0",
        _erf_complement,
        always=True,
        example=(1 + sympy.erf(_u), Erfc(-_u), {_u: (-20, 20)}),
    ),
    Rule(
        "log_of_product",
        "log(a*b) -> log(a) + log(b); log(b**e) -> e*log(b)",
        "a, b >= 0 (log 0 = -oo)",
        "each factor's log has a stable form of its own",
        _log_of_product,
        always=True,
        example=(sympy.log(_y * Sigmoid(_u)), sympy.log(_y) + sympy.log(Sigmoid(_u)),
                 {_u: (-800, 800), _y: (0.01, 1)}),
    ),
    Rule(
        "power_via_log",
        "b**a -> exp(a*log(b))",
        "b >= 0",
        "a power of a vanishing base underflows, and its derivatives have poles "
        "(b**(a - 1), b**(a - 2)) that the log form never builds",
        _power_via_log,
        always=False,
        example=((1 - Sigmoid(_u)) ** _a, sympy.exp(_a * sympy.log(1 - Sigmoid(_u))),
                 {_u: (-60, 60), _a: (0, 4)}),
    ),
    Rule(
        "log_mixture",
        "log(A*sigmoid(u) + B*sigmoid(-u)) -> log1p((A - 1)*sigmoid(u) + (B - 1)*sigmoid(-u)) "
        "where the mixture exceeds 1/2; log(B) + log_sigmoid(-u) where A = 0 (and the mirror)",
        "A, B >= 0 that may lie on both sides of 1",
        "the mixture passes 1 at an inner point, where its log keeps only the digits of its "
        "rounding; with a weight 0 the other term underflows far out (log 0 = -inf)",
        _log_mixture,
        always=True,
        example=(sympy.log(_a * Sigmoid(_u) + (_a + 1) * Sigmoid(-_u)),
                 sympy.Piecewise(
                     (log1p((_a - 1) * Sigmoid(_u) + _a * Sigmoid(-_u)),
                      _a * Sigmoid(_u) + (_a + 1) * Sigmoid(-_u) > sympy.Rational(1, 2)),
                     (sympy.log(_a + 1) + LogSigmoid(-_u), sympy.Eq(_a, 0)),
                     (sympy.log(_a * Sigmoid(_u) + (_a + 1) * Sigmoid(-_u)), True)),
                 {_u: (-40, 40), _a: (0, 0.99)}),
    ),
    Rule(
        "log_of_sum",
        "log(a + b) -> logaddexp(log(a), log(b))",
        "a, b >= 0",
        "the sum vanishes at a boundary: each term's log is kept, their sum never formed",
        _log_of_sum,
        always=False,
        example=(sympy.log(_y * Sigmoid(-_u) + (1 - _y) * Sigmoid(_u)),
                 LogAddExp(sympy.log(_y * Sigmoid(-_u)), sympy.log((1 - _y) * Sigmoid(_u))),
                 {_u: (-800, 800), _y: (0.01, 0.99)}),
    ),
    Rule(
        "sigmoid_difference",
        "A*sigmoid(u) - B*sigmoid(-u) -> -A*sigmoid(u)*expm1(c - u) if u >= c else "
        "B*sigmoid(-u)*expm1(u - c), c = log(B/A) = log1p((B - A)/A)",
        "A, B >= 0",
        "the two terms cancel at u = log(B/A); expm1 of a difference keeps the digits there",
        _sigmoid_difference,
        always=True,
        example=(_y * Sigmoid(_u) - (1 - _y) * Sigmoid(-_u),
                 sympy.Piecewise(
                     (-_y * Sigmoid(_u) * Expm1(_c - _u), _u >= _c),
                     ((1 - _y) * Sigmoid(-_u) * Expm1(_u - _c), True)),
                 {_u: (-40, 40), _y: (0.01, 0.99)}),
    ),
    Rule(
        "softplus_sigmoid",
        "a*softplus(u) + b*sigmoid(u) -> a*((1 + b/a)*sigmoid(u) + softplus_minus_sigmoid(u))",
        "b/a free of the inputs and possibly -1",
        "at b/a = -1 the two terms cancel to exp(2u)/2 as u -> -oo; the difference is a series "
        "in sigmoid(u) with positive terms",
        _softplus_sigmoid,
        always=True,
        example=(-_y * LogSigmoid(-_u) + _a * _y * Sigmoid(_u),
                 _y * ((1 + _a) * Sigmoid(_u) + SoftplusMinusSigmoid(_u)),
                 {_u: (-40, 40), _y: (0.01, 0.99), _a: (-1, 2)}),
    ),
    Rule(
        "zero_guard",
        "c*f -> 0 if c = 0 else c*f",
        "c free of the differentiated inputs",
        "f has a pole where it overflows; c = 0 must give 0, not 0*inf = NaN",
        _zero_guard,
        always=True,
        example=(_y / _u**2, sympy.Piecewise((0, sympy.Eq(_y, 0)), (_y / _u**2, True)),
                 {_u: (0.5, 2), _y: (0, 1)}),
    ),
    Rule(
        "log_near_one",
        "log(f) -> log1p(f - 1)",
        "f > 0",
        "log(f) loses every digit as f tends to 1 unless f - 1 is formed exactly",
        _log_near_one,
        always=False,
        example=(sympy.log(1 - _u), log1p(-_u), {_u: (-0.5, 0.5)}),
    ),
)
