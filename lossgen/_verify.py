"""The verify pass: re-analyse what will be emitted; every finding must be answered.

The emitted value, gradient and Hessian (stable primitives are atoms: each is accurate on its
whole domain) go through the same analysis as the textbook forms. What it still finds is kept
as ``unanswered``: a divergence of the result itself is a property of the loss (reported, and
emitted as the correct infinity); anything else is a term the rule base could not stabilize.
"""

from __future__ import annotations

from dataclasses import replace

from ._analyse import analyse_quantities
from ._ir import Derivation

__all__ = ["verify"]


def verify(d: Derivation) -> Derivation:
    emitted = {"value": [d.value], "grad": list(d.grad), "hess": [h for row in d.hess for h in row]}
    analysis = analyse_quantities(d.spec, emitted)
    return replace(d, unanswered=tuple(analysis.findings))
