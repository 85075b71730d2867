"""Homogeneous losses over a vector axis are evaluated on rows scaled by a power of two.

A distance is homogeneous: d(s x, s y) = s d(x, y), and its gradient and Hessian scale as
s**0 and s**-1. Its textbook forms square the coordinates (sqrt(sum((x - y)**2))), and the
squares overflow or underflow long before the distance does: in float32 a distance of 5e20
is inf and one of 5e-25 is 0, with the 0 subgradient of coincident points for its gradient.

Where the loss is homogeneous of a degree k in all its inputs together (found by the
substitution of s x for every input, with the constants of each reduction taken out), the
generated functions scale each row whose largest entry lies beyond the eighth root of the
dtype's range (2**16 and 2**-16 in float32, 2**128 and 2**-128 in float64, where a fourth
power of a coordinate may over- or underflow) by the power of two of that entry (exact: only
exponents change), evaluate on entries of magnitude at most 1, and scale the results back by
s**k (the value), s**(k - 1) (the gradient) and s**(k - 2) (the Hessian and its product with
a direction). The other rows are evaluated as they are.
"""

from __future__ import annotations

import functools

import sympy

from ._classes import _LAST_AXIS, _NS, ClassSum
from ._types import Spec

__all__ = ["degree", "helpers", "rescaled"]

#: the generated name of the rows' scale
SCALE = "_scale"


@functools.lru_cache(maxsize=None)
def degree(spec: Spec) -> int | None:
    """k where the loss is homogeneous of degree k in its inputs, all over a vector axis and
    with no parameters; None otherwise."""
    if spec.params or not spec.inputs or any(i.shape != "vector" for i in spec.inputs):
        return None
    lam = sympy.Symbol("lam", positive=True)
    expr = spec.expression()
    scaled = expr.subs({i.symbol: lam * i.symbol for i in spec.inputs}, simultaneous=True)

    def take_out(node):
        inner = sympy.factor_terms(sympy.expand(node.args[0]))
        rest, factor = inner.as_independent(lam, as_Add=False)
        return factor * ClassSum(rest) if factor.free_symbols <= {lam} else node

    scaled = scaled.replace(lambda n: isinstance(n, ClassSum), take_out)
    ratio = sympy.simplify(sympy.powsimp(scaled / expr, force=True))
    base, k = ratio.as_base_exp()
    if base != lam or not k.is_integer:
        return None
    return int(k)


def rescaled(function: dict, names: list[str], orders: list[int], k: int, block: bool = False) -> dict:
    """``function`` (a body and its outputs) on rows scaled by ``SCALE``: its outputs, of the
    given derivative orders, scaled back by s**(k - order)."""
    # (the inputs' own shapes first: the scaled rows are broadcast against each other)
    prefix = "".join(f"    _shape_{name} = {name}.shape\n" for name in names)
    args = ", ".join(names) + ("," if len(names) == 1 else "")
    prefix += f"    {', '.join(names)}, {SCALE} = _homogeneous(({args}))\n"
    body = prefix + function["body"]
    for out, order in zip(function["outputs"], orders):
        if order != k:
            body += f"    {out} = _rescale({out}, {SCALE}, {k - order}{', True' if block else ''})\n"
    return {**function, "body": body}


def helpers(backend: str) -> str:
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    to = ".to(top.dtype)" if backend == "torch" else ".astype(top.dtype)"
    maximum = "torch.maximum" if backend == "torch" else f"{ns}.maximum"
    finfo = f"{ns}.finfo"
    return "\n".join([
        "def _homogeneous(inputs):",
        "    # the rows scaled by the power of two of their largest entry (over every input: the",
        "    # loss is homogeneous), and that power's exponent as two halves (each 2**half is",
        "    # representable where the whole may not be): exact, and no square over- or underflows",
        f"    top = {ns}.amax({ns}.abs(inputs[0]), {red})",
        "    for a in inputs[1:]:",
        f"        top = {maximum}(top, {ns}.amax({ns}.abs(a), {red}))",
        f"    e = {ns}.frexp(top)[1]{to}",
        "    # only rows beyond the eighth root of the dtype's range (2**16 in float32): the",
        "    # others keep their bits (XLA's division and sqrt are not correctly rounded, so a",
        "    # scaled row's result could differ in its last bits)",
        f"    limit = float({finfo}(top.dtype).max) ** 0.125",
        f"    e = {ns}.where({ns}.isfinite(top) & ((top > limit) | (top < 1 / limit)), e, 0.0)",
        f"    half = {ns}.floor(e / 2)",
        f"    down = {ns}.exp2(-half), {ns}.exp2(half - e)",
        "    return (*(a * down[0] * down[1] for a in inputs), (half, e - half))",
        "",
        "",
        "def _rescale(r, scale, m, block=False):",
        "    # r times 2**(m e), e the rows' exponent; block: r holds a (C, C) block per row",
        "    half, rest = (s[..., None] for s in scale) if block else scale",
        f"    return r * {ns}.exp2(m * half) * {ns}.exp2(m * rest)",
        "",
    ])
