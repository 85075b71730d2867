"""The one representation every pass reads and returns: a frozen ``Derivation``.

Each pass is a function ``Derivation -> Derivation`` that fills in its own fields with
``dataclasses.replace`` and reads only fields filled by the passes before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import sympy

from ._types import Spec

__all__ = ["Block", "Derivation", "Finding", "Rewrite"]


@dataclass(frozen=True)
class Finding:
    """A term that breaks in floating point, found by the analyse pass."""

    #: what goes wrong: "pole", "zero-times-infinity", "overflow", "cancellation", "divergence"
    kind: str
    #: the offending subterm, printed
    term: str
    #: where it breaks, e.g. "x -> oo"
    where: str
    #: the parameter condition under which it breaks, e.g. "gamma < 2" ("always" if none)
    condition: str = "always"
    #: which expression it was found in: "value", "grad", "hess"
    found_in: str = "value"
    #: a note on the whole result there (e.g. "the result itself diverges")
    result: str = ""
    #: the subterm itself (not printed; used by the rewrite pass to find what to rewrite)
    node: sympy.Expr | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        text = f"{self.kind}: `{self.term}` as {self.where}"
        if self.condition != "always":
            text += f" when {self.condition}"
        text += f" (in {self.found_in})"
        if self.result:
            text += f"; {self.result}"
        return text


@dataclass(frozen=True)
class Rewrite:
    """One application of a rule, with the reason it was applied (its provenance)."""

    rule: str
    before: str
    after: str
    reason: str

    def __str__(self) -> str:
        return f"{self.rule}: `{self.before}` -> `{self.after}` ({self.reason})"


@dataclass(frozen=True)
class Block:
    """Straight-line code for one generated function: named intermediates, then outputs."""

    assignments: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    outputs: tuple[sympy.Expr, ...]


def _frozen(mapping: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Derivation:
    spec: Spec
    #: the spec's loss with every `define` substituted
    textbook: sympy.Expr
    #: analyse: the findings, and the analysis behind them (per-subterm behaviour)
    findings: tuple[Finding, ...] = ()
    analysis: object = field(default=None, compare=False, repr=False)
    #: rewrite
    rewrites: tuple[Rewrite, ...] = ()
    stable: sympy.Expr | None = None
    #: derive: value, gradient (one entry per differentiated input), Hessian blocks
    value: sympy.Expr | None = None
    grad: tuple[sympy.Expr, ...] = ()
    hess: tuple[tuple[sympy.Expr, ...], ...] = ()
    #: the Hessian applied to v (one entry per differentiated input, in v_<name>), where it is
    #: not the elementwise hess * v (losses over a class axis)
    hvp: tuple[sympy.Expr, ...] = ()
    #: verify: findings the rewrites did not answer
    unanswered: tuple[Finding, ...] = ()
    #: simplify: one block per generated function ("value", "grad", "hess")
    blocks: Mapping[str, Block] = field(default_factory=_frozen)
    #: render: backend -> module source
    sources: Mapping[str, str] = field(default_factory=_frozen)
