"""Losses over a batch: each row's loss is a loss over the other rows, of its similarities.

A ``batch`` input z has shape (..., B, D): B rows (the batch), each a feature vector over the
last axis. The spec writes the loss of row i (the anchor) in two more words of the language:

- ``other(e)``: e at another row j != i. ``sum(u * other(u))`` reduces the feature axis: the
  similarity of row i with row j. A reduction of a pairwise expression (``log_softmax``,
  ``logsumexp``, ``sum``) runs over the B - 1 other rows;
- ``positive``: the index of row i's positive partner among them: rows i and i + B/2 (mod B)
  are two views of one sample.

NT-Xent, for instance, is ``-pick(log_softmax(sum(u * other(u)) / t), positive)`` with
u = z/|z|. The loss splits into three maps, each differentiated where it is known best:

1. the row map u(z), per row: z/|z| (its Jacobian J = (I - uu^T)/|z|, with the per-entry
   forms of lossgen._norms: no cancellation where a row lies along an axis; a zero row's
   unit vector and its derivatives are 0, the norm's subgradient) or z itself;
2. the pairing c_ij = u_i . u_j over j != i (the self-similarity is left out, not masked
   with an infinity), whose derivatives are products with U;
3. the row loss, a loss over a class axis of the similarities c_i. -- it is derived, made
   stable and rendered by the class pipeline (log_softmax, the complement forms of its
   gradient, the centred Hessian-vector product), as any loss over a class axis.

The chain rule joins them: with G the row loss's gradient in c, grad_U = (G + G^T) U and
grad_z = J^T grad_U per row; the Hessian-vector product along V adds the row loss's own
Hessian applied to dc = dU U^T + U dU^T (dU = J V), and the curvature of the row map. The
cost is that of the pairing, O(B**2 D), as the loss itself; no (B D) x (B D) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sympy

from ._classes import _LAST_AXIS, _NS, ClassSum, SumOthers, _ClassPrimitive
from ._types import Domain, Input, Spec

__all__ = ["POSITIVE", "BatchError", "BatchLoss", "Other", "decompose", "expand_batch", "row_spec", "split"]

#: the positive partner's index among the other rows (a name every batch spec may use)
POSITIVE = sympy.Symbol("positive", integer=True)
#: the similarities' name in the row loss (the classes input of its class-axis spec)
SIMILARITY = "sim"
#: the positive partner's name there
PARTNER = sympy.Symbol("pos", integer=True)


class Other(_ClassPrimitive):
    """e at another row j of the batch: the loss of row i is written over the rows j != i."""

    display = "other"
    nargs = 1


@dataclass(frozen=True)
class BatchLoss:
    """A batch spec taken apart: the input, its row map, and the row loss over the pairs."""

    z: Input
    #: "unit" (u = z/|z|) or "identity" (u = z)
    row_map: str
    #: the row loss, over a class axis of similarities (the input ``similarity``)
    row: Spec


class BatchError(ValueError):
    """The loss is not a loss over the other rows of pairwise similarities of one row map."""


def _row_map(f: sympy.Expr, z: sympy.Symbol) -> str:
    if f == z:
        return "identity"
    if sympy.simplify(f - z / sympy.sqrt(ClassSum(z**2))) == 0:
        return "unit"
    raise BatchError(
        f"the rows are paired through {f}; lossgen pairs z itself or z/sqrt(sum(z**2)) "
        "(the cosine similarity)"
    )


def split(expr: sympy.Expr, inputs) -> tuple[Input, str, sympy.Expr]:
    """(the rows' input, its row map, the row loss in ``similarity``) of the batch loss
    ``expr``; BatchError where it is not one."""
    batch = [i for i in inputs if i.shape == "batch"]
    if len(batch) != 1 or len(inputs) != 1 or batch[0].role != "differentiated":
        raise BatchError("a batch loss takes one input, the differentiated rows (shape: batch)")
    z = batch[0]
    taken = {s.name for s in expr.free_symbols} & {SIMILARITY, PARTNER.name}
    if taken:
        raise BatchError(f"{', '.join(sorted(taken))}: a name the row loss uses; rename it")
    pairs = {
        node for node in expr.atoms(ClassSum)
        if any(isinstance(f, Other) for f in sympy.Mul.make_args(node.args[0]))
    }
    if len(pairs) != 1:
        raise BatchError(
            "write the similarity of row i with another row j once, as sum(u * other(u))"
        )
    (pair,) = pairs
    factors = sympy.Mul.make_args(pair.args[0])
    others = [f for f in factors if isinstance(f, Other)]
    mine = sympy.Mul(*(f for f in factors if not isinstance(f, Other)))
    if len(others) != 1 or others[0].args[0] != mine:
        raise BatchError("the similarity must pair a row map with itself: sum(u * other(u))")
    row_map = _row_map(mine, z.symbol)
    loss = expr.subs(pair, sympy.Symbol(SIMILARITY, real=True)).subs(POSITIVE, PARTNER)
    if loss.has(Other) or z.symbol in loss.free_symbols:
        raise BatchError(
            "the loss of a row must depend on the rows only through their similarities "
            "sum(u * other(u))"
        )
    return z, row_map, loss


def decompose(spec: Spec) -> BatchLoss:
    """The batch loss of ``spec`` as row map, pairing and row loss; BatchError otherwise."""
    z, row_map, loss = split(spec.expression(), spec.inputs)
    return BatchLoss(z=z, row_map=row_map, row=row_spec(spec, loss, sympy.Symbol(SIMILARITY, real=True)))


def row_spec(spec: Spec, loss: sympy.Expr, similarity: sympy.Symbol) -> Spec:
    """The row loss as a loss over a class axis: the similarities to the other rows are its
    classes, the positive partner its class index."""
    inputs = (
        Input(SIMILARITY, "differentiated", Domain("(-oo, oo)", "interval", -sympy.oo, sympy.oo),
              "classes", similarity),
        Input(PARTNER.name, "constant", Domain("index", "index"), "scalar", PARTNER),
    )
    used = [i for i in inputs if i.symbol in loss.free_symbols or i.symbol == similarity]
    return replace(spec, inputs=tuple(used), define=(), loss=loss, formula_text=())


def expand_batch(spec: Spec, b: int, d: int) -> tuple[list[sympy.Expr], list[sympy.Symbol]]:
    """The loss of each of the B = ``b`` rows of a batch of ``d`` features, written out:
    one symbol per entry, ``z[k]`` for row k // d and feature k % d (the oracle's form)."""
    from ._classes import expand

    parts = decompose(spec)
    entries = [sympy.Symbol(f"{parts.z.name}[{k}]", real=True) for k in range(b * d)]
    rows = [entries[i * d : (i + 1) * d] for i in range(b)]
    if parts.row_map == "unit":
        units = [[e / sympy.sqrt(sum(x**2 for x in row)) for e in row] for row in rows]
    else:
        units = rows
    similarity = sympy.Symbol(SIMILARITY, real=True)
    losses = []
    for i in range(b):
        others = [j for j in range(b) if j != i]
        values = [sum(x * y for x, y in zip(units[i], units[j])) for j in others]
        partner = (i + b // 2) % b
        index = {PARTNER: [sympy.S.One if j == partner else sympy.S.Zero for j in others]}
        losses.append(expand(parts.row.loss, {similarity: values}, index))
    return losses, entries


# -- generated code --------------------------------------------------------------------------


def _helper_pairs(backend: str, row_map: str) -> str:
    """_rows, _pairs, _pairs_jvp, _pairs_vjp and _pairs_hvp for ``backend``."""
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    to = ".to(z.dtype)" if backend == "torch" else ".astype(z.dtype)"
    swap = "{0}.transpose(-1, -2)" if backend == "torch" else f"{ns}.swapaxes({{0}}, -1, -2)"
    cat = "torch.cat" if backend == "torch" else f"{ns}.concatenate"
    cat_axis = "dim=-1" if backend == "torch" else "axis=-1"
    zeros = "torch.zeros_like" if backend == "torch" else f"{ns}.zeros_like"
    amax = f"{ns}.amax"
    arange = (
        "torch.arange(b, device=z.device)" if backend == "torch" else f"{ns}.arange(b)"
    )
    lines = [
        "def _off_diagonal(s):",
        "    # (..., B, B) -> (..., B, B - 1): each row without its diagonal entry",
        "    b = s.shape[-1]",
        "    lead = tuple(s.shape[:-2])",
        "    flat = s.reshape(lead + (b * b,))[..., 1:]",
        "    return flat.reshape(lead + (b - 1, b + 1))[..., :-1].reshape(lead + (b, b - 1))",
        "",
        "",
        "def _with_diagonal(g):",
        "    # (..., B, B - 1) -> (..., B, B) with a zero diagonal: _off_diagonal's adjoint",
        "    b = g.shape[-2]",
        "    lead = tuple(g.shape[:-2])",
        "    g = g.reshape(lead + (b - 1, b))",
        f"    g = {cat}([g, {zeros}(g[..., :1])], {cat_axis})",
        "    g = g.reshape(lead + ((b - 1) * (b + 1),))",
        f"    return {cat}([{zeros}(g[..., :1]), g], {cat_axis}).reshape(lead + (b, b))",
        "",
        "",
        "def _t(a):",
        f"    return {swap.format('a')}",
        "",
        "",
    ]
    if row_map == "unit":
        lines += [
            "def _row_scale(z):",
            "    # the power of two of each row's largest entry, as two factors (each representable",
            "    # where the whole is not, for rows of subnormal or huge entries): z times them is",
            "    # exact, with entries at most 1, so the squares and the norm neither overflow nor",
            "    # underflow",
            f"    e = {ns}.frexp({amax}({ns}.abs(z), {red}))[1]{to}",
            f"    half = {ns}.floor(e / 2)",
            f"    return {ns}.exp2(-half), {ns}.exp2(half - e)",
            "",
            "",
            "def _rows(z):",
            "    # each row's unit vector z/|z| (0 for a zero row, the norm's subgradient)",
            "    s1, s2 = _row_scale(z)",
            "    p = z * s1 * s2",
            f"    n = {ns}.sqrt({ns}.sum(p * p, {red}))",
            f"    return p / {ns}.where(n > 0, n, 1.0)",
            "",
            "",
            "def _rows_jvp(z, dz):",
            "    # d(z/|z|) along dz = (dz - (u.dz) u)/|z|, entry i as (dz_i S_i - z_i T_i)/|z|**3",
            "    # with S_i, T_i the sums of z_j**2 and z_j dz_j over the other entries: no",
            "    # z_i**2 dz_i to cancel where a row lies along an axis (0 for a zero row)",
            "    s1, s2 = _row_scale(z)",
            "    p = z * s1 * s2",
            f"    n = {ns}.sqrt({ns}.sum(p * p, {red}))",
            "    across = dz * _sum_others(p * p) - p * _sum_others(p * dz)",
            f"    return {ns}.where(n > 0, across / {ns}.where(n > 0, n * n * n, 1.0) * s1 * s2, 0.0)",
            "",
            "",
            "def _rows_vjp(z, c):",
            "    # J is symmetric: J^T c = J c",
            "    return _rows_jvp(z, c)",
            "",
            "",
            "def _rows_curvature(z, dz, c):",
            "    # (d J along dz)^T c, J = (I - uu^T)/|z|: -(du (u.c) + u (du.c))/|z| - (u.dz/|z|) J c",
            "    # with du = J dz (0 for a zero row)",
            "    s1, s2 = _row_scale(z)",
            "    p = z * s1 * s2",
            f"    n = {ns}.sqrt({ns}.sum(p * p, {red}))",
            f"    inverse = {ns}.where(n > 0, s1 / {ns}.where(n > 0, n, 1.0) * s2, 0.0)",
            f"    u = p / {ns}.where(n > 0, n, 1.0)",
            "    du = _rows_jvp(z, dz)",
            f"    across = du * {ns}.sum(u * c, {red})",
            f"    across = across + u * {ns}.sum(du * c, {red})",
            f"    along = {ns}.sum(u * dz, {red}) * _rows_jvp(z, c)",
            "    return -(across + along) * inverse",
            "",
            "",
        ]
    else:
        lines += [
            "def _rows(z):",
            "    return z",
            "",
            "",
            "def _rows_jvp(z, dz):",
            "    return dz",
            "",
            "",
            "def _rows_vjp(z, c):",
            "    return c",
            "",
            "",
            "def _rows_curvature(z, dz, c):",
            f"    return {zeros}(z)",
            "",
            "",
        ]
    lines += [
        "def _pairs(z):",
        "    # the similarities of each row with every other row, (..., B, B - 1), and the",
        "    # index of each row's positive partner (row i + B/2 mod B) among them",
        "    b = z.shape[-2]",
        "    if b < 2 or b % 2:",
        "        raise ValueError(",
        "            f\"z has {b} rows: a batch holds two views of each sample, rows i and i + B/2 \"",
        "            \"(an even number of rows, at least 2)\"",
        "        )",
        "    u = _rows(z)",
        f"    i = {arange}",
        "    partner = (i + b // 2) % b",
        f"    partner = {ns}.where(partner > i, partner - 1, partner)",
        "    return _off_diagonal(u @ _t(u)), partner[:, None]",
        "",
        "",
        "def _pairs_jvp(z, dz):",
        "    # the derivative of the similarities along dz: du u^T + u du^T, off the diagonal",
        "    u, du = _rows(z), _rows_jvp(z, dz)",
        "    ds = du @ _t(u)",
        "    return _off_diagonal(ds + _t(ds))",
        "",
        "",
        "def _pairs_vjp(z, g):",
        "    # the gradient in z from g, that in the similarities: (G + G^T) U, then J^T",
        "    g = _with_diagonal(g)",
        "    return _rows_vjp(z, (g + _t(g)) @ _rows(z))",
        "",
        "",
        "def _pairs_hvp(z, dz, g, dg):",
        "    # the derivative of _pairs_vjp(z, g) along dz, dg that of g",
        "    g, dg = _with_diagonal(g), _with_diagonal(dg)",
        "    g, dg = g + _t(g), dg + _t(dg)",
        "    u, du = _rows(z), _rows_jvp(z, dz)",
        "    return _rows_vjp(z, dg @ u + g @ du) + _rows_curvature(z, dz, g @ u)",
    ]
    text = "\n".join(lines) + "\n"
    if row_map == "unit":
        text += "\n\n" + SumOthers.helpers[backend]
    return text


def batch_helpers(backend: str, row_map: str) -> list[str]:
    return [_helper_pairs(backend, row_map)]


def run(spec: Spec, until: str = "render"):
    """The pipeline of a batch spec: the row loss through every pass of a loss over a class
    axis, then one module per backend with the batch's pairing around it."""
    from ._pipeline import PASSES, run as run_passes

    parts = decompose(spec)
    names = [step.__name__ for step in PASSES]
    d_row = run_passes(parts.row, until=until if names.index(until) < names.index("render") else "simplify")
    d = replace(d_row, spec=spec, textbook=spec.expression())
    if until != "render":
        return d
    return replace(d, sources={backend: render(d, d_row, parts, backend) for backend in _NS})


def render(d, d_row, parts: BatchLoss, backend: str) -> str:
    from ._render import _function, render_module

    name = SIMILARITY
    functions = {
        "value": _function(d_row, "value", backend, ["loss"]),
        "grad": _function(d_row, "grad", backend, [f"d_{name}"]),
        "hvp": _function(d_row, "hvp", backend, [f"hv_{name}"]),
    }
    functions["hvp"]["directions"] = [f"v_{name}"]
    return render_module(d, backend, functions=functions, extra=batch_helpers(backend, parts.row_map))
