"""lossgen's pipeline, in order. Each pass maps a frozen ``Derivation`` to a new one.

1. parse    -- the validated spec becomes the textbook expression (defines substituted).
2. analyse  -- series and limit analysis of the textbook expression and its naive derivatives
               at the domain boundaries and branch points: which terms break, where, and under
               which parameter condition.
3. rewrite  -- the flagged terms become stable primitives; each rewrite cites its finding.
4. derive   -- gradient and Hessian by differentiating the rewritten form, so derivatives stay
               in stable primitives.
5. verify   -- re-analyse what will be emitted; every finding must be answered.
6. simplify -- common subexpressions become named intermediates.
7. render   -- one module per backend from jinja2 templates.
"""

from __future__ import annotations

from ._analyse import analyse
from ._derive import derive
from ._ir import Derivation
from ._render import render
from ._rewrite import rewrite
from ._simplify import simplify
from ._types import Spec
from ._verify import verify

__all__ = ["PASSES", "parse", "run"]


def parse(spec: Spec) -> Derivation:
    return Derivation(spec=spec, textbook=spec.expression())


PASSES = (analyse, rewrite, derive, verify, simplify, render)


def run(spec: Spec, *, until: str = "render") -> Derivation:
    """Run the passes on ``spec`` up to and including the pass named ``until``."""
    d = parse(spec)
    for step in PASSES:
        d = step(d)
        if step.__name__ == until:
            break
    return d
