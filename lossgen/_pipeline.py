"""lossgen's pipeline, in order. Each pass maps a frozen ``Derivation`` to a new one.

1. parse    -- the validated spec becomes the textbook expression (defines substituted).
2. analyse  -- series and limit analysis of the textbook expression and its naive derivatives
               at the domain boundaries and branch points: which terms break, where, and under
               which parameter condition.
3. rewrite  -- the flagged terms become stable primitives; each rewrite cites its finding.
4. derive   -- gradient and Hessian by differentiating the rewritten form, so derivatives stay
               in stable primitives.
5. verify   -- re-analyse what will be emitted; every finding must be answered.
6. simplify -- the Hessian's common factors come out of its sum, sigmoid monomials are
               collected by their exact coefficients, erfc(c*x) gets an exact square, common
               subexpressions become named intermediates; for JAX, log-space products and
               sums where a term can be subnormal while the result is not.
7. render   -- one module per backend from jinja2 templates.

A spec with categorical parameters runs passes 2-5 once per combination of choices; the
results are merged into conditionals on the choices before simplify.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ._analyse import analyse
from ._derive import derive
from ._ir import Derivation
from ._render import render
from ._rewrite import rewrite
from ._simplify import simplify
from ._types import Spec, choice_symbol
from ._verify import verify

__all__ = ["PASSES", "parse", "run"]


def parse(spec: Spec, choices: dict[str, str] | None = None) -> Derivation:
    return Derivation(spec=spec, textbook=spec.expression(choices))


#: passes run once per combination of a spec's categorical choices ...
PER_VARIANT = (analyse, rewrite, derive, verify)
#: ... and once on the merged result, where each choice is a branch decided in Python
MERGED = (simplify, render)
PASSES = PER_VARIANT + MERGED


def run(spec: Spec, *, until: str = "render") -> Derivation:
    """Run the passes on ``spec`` up to and including the pass named ``until``."""
    if spec.is_batch:
        from . import _batch

        return _batch.run(spec, until)
    names = [step.__name__ for step in PASSES]
    stop = names.index(until) + 1
    variants = spec.variants()
    parts = []
    for choices in variants:
        d = parse(spec, choices)
        for step in PER_VARIANT[:stop]:
            d = step(d)
        parts.append((choices, d))
    d = parts[0][1] if len(parts) == 1 else _merge(parts)
    for step in MERGED[: max(0, stop - len(PER_VARIANT))]:
        d = step(d)
    return d


def _merge(parts: list[tuple[dict[str, str], Derivation]]) -> Derivation:
    """One derivation from one per choice: each expression becomes a conditional on the
    choices, each finding and rewrite names the choice it belongs to."""
    spec = parts[0][1].spec
    symbols = {p.name: p.symbol for p in spec.categorical}

    def test(choices):
        return sympy.And(*(sympy.Eq(symbols[k], choice_symbol(v)) for k, v in choices.items()))

    def tag(choices):
        return " and ".join(f"{k} = {v}" for k, v in choices.items())

    def combine(exprs):
        if exprs[0] is None or all(e == exprs[0] for e in exprs):
            return exprs[0]
        pieces = [(e, test(c)) for (c, _), e in zip(parts[:-1], exprs[:-1])]
        return sympy.Piecewise(*pieces, (exprs[-1], True))

    def field(name):
        return [getattr(d, name) for _, d in parts]

    def tagged_findings(name):
        out = []
        for choices, d in parts:
            for f in getattr(d, name):
                condition = tag(choices) if f.condition == "always" else f"{f.condition} and {tag(choices)}"
                out.append(replace(f, condition=condition))
        return tuple(out)

    first = parts[0][1]
    return replace(
        first,
        textbook=combine(field("textbook")),
        findings=tagged_findings("findings"),
        rewrites=tuple(
            replace(r, reason=f"{r.reason} [{tag(c)}]") for c, d in parts for r in d.rewrites
        ),
        stable=combine(field("stable")),
        value=combine(field("value")),
        grad=tuple(combine(list(g)) for g in zip(*field("grad"))),
        hess=tuple(
            tuple(combine(list(h)) for h in zip(*rows)) for rows in zip(*field("hess"))
        ),
        unanswered=tagged_findings("unanswered"),
    )
