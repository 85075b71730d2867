"""The verify pass: re-analyse what will be emitted; every finding must be answered.

The emitted value, gradient and Hessian (stable primitives are atoms: each is accurate on its
whole domain) go through the same analysis as the textbook forms. What it still finds is kept
as ``unanswered``: a divergence of the result itself is a property of the loss (reported, and
emitted as the correct infinity); anything else is a term the rule base could not stabilize,
and the spec's ``on_unstable`` policy (:func:`stability_problems`) decides what generation does
with it.
"""

from __future__ import annotations

from dataclasses import replace

from ._analyse import analyse_quantities
from ._classes import entrywise_of
from ._ir import Derivation, Finding

__all__ = ["stability_problems", "unstable", "verify"]


def verify(d: Derivation) -> Derivation:
    if d.spec.has_classes:
        split = entrywise_of(d.spec, d.value)
        if split is None:
            return d
        coeff, body = split  # a sum of an elementwise term: its entry's forms are verified
        emitted = {
            "value": [body],
            "grad": [g / coeff for g in d.grad],
            "hess": [block.args[0] / coeff for row in d.hess for block in row],
        }
    else:
        emitted = {"value": [d.value], "grad": list(d.grad), "hess": [h for row in d.hess for h in row]}
    analysis = analyse_quantities(d.spec, emitted, wholes=False)
    return replace(d, unanswered=tuple(analysis.findings))


def unstable(d: Derivation) -> tuple[Finding, ...]:
    """The unanswered findings that are not a divergence of the result itself: the terms the
    rule base could not stabilize."""
    return tuple(f for f in d.unanswered if f.kind != "divergence")


def stability_problems(d: Derivation) -> list[str]:
    """One message per term the passes could not stabilize: the term, where it breaks, the
    parameter condition, and in which emitted function."""
    messages = []
    for f in unstable(d):
        when = "for every parameter value" if f.condition == "always" else f"when {f.condition}"
        messages.append(
            f"no rule stabilizes the {f.kind} `{f.term}` as {f.where} {when} (in {f.found_in})"
        )
    return messages
