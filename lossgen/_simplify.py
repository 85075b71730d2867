"""The simplify pass: common subexpressions become named intermediates, per generated function."""

from __future__ import annotations

import re
from dataclasses import replace

import sympy

from ._ir import Block, Derivation

__all__ = ["simplify"]


def _temporaries(d: Derivation):
    taken = {s.name for s in d.textbook.free_symbols}
    taken |= {inp.name for inp in d.spec.inputs} | {p.name for p in d.spec.params}
    prefix = "t"
    while any(re.fullmatch(rf"{prefix}\d+", name) for name in taken):
        prefix += "_"
    return sympy.numbered_symbols(prefix, real=True)


def _block(d: Derivation, outputs: list[sympy.Expr]) -> Block:
    # a test of a categorical parameter stays inside its conditional, decided in Python
    categorical = tuple(p.symbol for p in d.spec.categorical)
    assignments, reduced = sympy.cse(
        outputs, symbols=_temporaries(d), order="canonical", ignore=categorical
    )
    return Block(assignments=tuple(assignments), outputs=tuple(reduced))


def simplify(d: Derivation) -> Derivation:
    blocks = {
        "value": _block(d, [d.value]),
        "grad": _block(d, list(d.grad)),
        "hess": _block(d, [h for row in d.hess for h in row]),
    }
    return replace(d, blocks=blocks)
