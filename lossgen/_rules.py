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

from ._primitives import LogAddExp, LogSigmoid, Sigmoid, Softplus
from ._signs import NEG, NONPOS, POS, NONNEG, sign
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


_u, _y, _a, _b = sympy.symbols("u y a b", real=True)


def _sigmoid_partition(expr: sympy.Expr, ctx: Context) -> sympy.Expr | None:
    """a0 + a1*sigmoid(u) -> (a0 + a1)*sigmoid(u) + a0*sigmoid(-u), a0 and a1 free of inputs."""
    if not expr.is_Add:
        return None
    sigmoids = {s for s in expr.atoms(Sigmoid)}
    if not sigmoids:
        return None
    args = {s.args[0] for s in sigmoids}
    ordered = sorted(args, key=sympy.default_sort_key)
    u = next((a for a in ordered if not a.could_extract_minus_sign()), -ordered[0])
    if any(a not in (u, -u) for a in args):
        return None
    s = sympy.Dummy("s")
    flat = sympy.expand(expr.subs(Sigmoid(-u), 1 - s).subs(Sigmoid(u), s))
    if flat.has(Sigmoid) or not flat.is_polynomial(s) or sympy.degree(flat, s) > 1:
        return None
    a0, a1 = flat.coeff(s, 0), flat.coeff(s, 1)
    if a0 == 0 or a0.free_symbols & ctx.xs or a1.free_symbols & ctx.xs:
        return None
    out = sympy.factor(a0 + a1) * Sigmoid(u) + sympy.factor(a0) * Sigmoid(-u)
    return None if out == expr else out


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
    if not arg.is_polynomial(*ctx.xs):
        return None
    return log1p(sympy.expand(arg - 1))


RULES: tuple[Rule, ...] = (
    Rule(
        "sigmoid_partition",
        "a0 + a1*sigmoid(u) -> (a0 + a1)*sigmoid(u) + a0*sigmoid(-u)",
        "all real u; a0, a1 free of the differentiated inputs",
        "1 - sigmoid(u) rounds to 0 for u > 37 in float64 (sigmoid(u) + sigmoid(-u) = 1)",
        _sigmoid_partition,
        always=True,
        example=(1 - _y * Sigmoid(_u) - (1 - _y) * (1 - Sigmoid(_u)),
                 (1 - _y) * Sigmoid(_u) + _y * Sigmoid(-_u), {_u: (-60, 60), _y: (0, 1)}),
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
        "log_near_one",
        "log(f) -> log1p(f - 1)",
        "f > 0",
        "log(f) loses every digit as f tends to 1 unless f - 1 is formed exactly",
        _log_near_one,
        always=False,
        example=(sympy.log(_u), log1p(_u - 1), {_u: (0.5, 2)}),
    ),
)
