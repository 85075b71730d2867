"""``lossgen explain``: what the passes found in a spec and what they changed, with provenance."""

from __future__ import annotations

import sympy

from ._pipeline import run
from ._types import Spec

__all__ = ["explain"]


def explain(spec: Spec) -> str:
    d = run(spec, until="verify")
    names = ", ".join(i.name for i in spec.differentiated)
    lines = [f"{spec.name}: {spec.summary}", "", "textbook loss:", f"  {sympy.sstr(d.textbook)}", ""]
    lines.append(f"findings ({len(d.findings)}):")
    lines += [f"  - {f}" for f in d.findings] or ["  none"]
    lines.append(f"rewrites ({len(d.rewrites)}):")
    lines += [f"  - {r}" for r in d.rewrites] or ["  none"]
    if d.unanswered:
        lines.append(
            f"found again in the emitted forms ({len(d.unanswered)}): a divergence of the result "
            "itself is reported, not fixed; anything else is left to the accuracy tests"
        )
        lines += [f"  - {f}" for f in d.unanswered]
    lines += [""]
    differentiated = spec.differentiated
    if spec.is_batch:
        from ._batch import SIMILARITY, decompose

        parts = decompose(spec)
        differentiated = parts.row.differentiated
        pairing = "z/|z|" if parts.row_map == "unit" else "z"
        lines += [
            f"the loss of each row i, over its similarities {SIMILARITY} to the other rows (pos: "
            f"its positive partner); {SIMILARITY}_ij = u_i . u_j with u = {pairing}, and d/d"
            f"{spec.differentiated[0].name} is the chain rule through them (lossgen/_batch.py):",
        ]
    lines += ["emitted value:", f"  {sympy.sstr(d.value)}"]
    for inp, g in zip(differentiated, d.grad):
        lines.append(f"emitted d/d{inp.name}:")
        lines.append(f"  {sympy.sstr(g)}")
    lines.append(f"(differentiated inputs: {names})")
    return "\n".join(lines)
