"""Losses over a class axis: reductions, and derivatives by the chain rule over them.

A spec with a ``classes`` input writes its loss with reductions over the class axis (the last
axis): ``sum(e)``, ``logsumexp(e)``, ``softmax(e)``, ``log_softmax(e)`` and ``pick(x, k)`` for
an integer class index k. In the expression a classes input stands for one entry x_c of its
row; a reduction turns an expression of the entries into one number per row, and the loss is
a function of such numbers.

Derivatives stay linear in the number of classes C. With every outermost reduction R of an
expression replaced by a symbol, the expression is an ordinary SymPy expression, and

- d/dx_j of a row expression E(R_1, ...) is sum_k dE/dR_k * D(R_k)_j;
- D(sum(b))_j = db/dx (entry j) + sum_k sum(db/dR'_k) * D(R'_k)_j over the reductions R'
  inside b; for logsumexp(b) every entry is weighted by softmax(b)_c = exp(b_c - R);
- the Hessian-vector product is the derivative of the gradient along v (forward mode: each
  reduction's directional derivative is a reduction again);
- the Hessian block of a row is diag(a) + sum_k u_k w_k^T, a and u_k the derivatives of the
  gradient entry in x_i and in R_k, w_k = D(R_k): C*C work only where the matrix is asked for.

Stability (``CLASS_FORMS`` lists each form for ``lossgen explain``): ``b - logsumexp(b)``
becomes ``LogSoftmax(b)``, computed as (b - max) - log1p(s) with s the sum of exp(b - max) over
every entry but the (first) largest, so that the largest entry's log-probability keeps its
digits when it is near 0 (x - logsumexp(x) at x = (20, 0) is -2.06e-9: the difference of two
rounded numbers near 20 has no correct digit). ``complements`` then finds, in the derived
sums, the softmax Jacobian's two shapes and gives each a form without cancellation:
p*sum(a) - a (``SoftmaxDelta``, or a*expm1(log p) + p*others(a)) and b - sum(p*b)
(``Centered``); a Hessian block's diagonal p*(1 - p) is -p*expm1(log p) (``HessBlock``).

A picked probability p_k = pick(softmax(b), k) is taken in log space before the derivation
(``picked_forms``): log(p_k) is pick(log_softmax(b), k), and 1 - p_k is exp(L) with L =
``LogSoftmaxComplement(b, onehot(k))``, a reduction whose derivative is a product of
exponentials in every entry (so the focal loss's (1 - p_t)**gamma is exp(gamma*L), finite and
differentiable where 1 - p_k rounds to 0). The Hessian diagonal of such a loss is read off its
Hessian-vector product at v = e_c (``diagonal_from_hvp``), whose forms are already stable.
"""

from __future__ import annotations

import contextvars
import functools
import textwrap

import sympy

from ._primitives import JAX_LOG1P, Primitive

__all__ = [
    "AtClass", "CLASS_FORMS", "Centered", "CenteredDiff", "ClassSum", "HessBlock", "LogNotPicked", "LogSoftmax",
    "LogSoftmaxComplement", "LogSumExp", "NumClasses", "OneHot", "Pick", "REDUCTIONS", "SoftmaxDelta",
    "SoftmaxDiff", "SoftmaxDiffJvp", "SoftmaxKL", "SumOthers", "class_gradient", "class_hess", "class_hvp", "complements", "corner_pairs", "diagonal_from_hvp",
    "entrywise_of", "entrywise_sum", "expand", "factored", "is_reduction", "log_softmax_forms", "merge_sums", "one_minus_exp", "one_signed", "picked_forms", "picks", "ratio_complement",
    "relative_entropy_forms", "sigmoid_differences", "split_at_pick",
]

_NS = {"numpy": "np", "jax": "jnp", "torch": "torch"}
#: the keyword arguments of a reduction over the last axis that keeps it, per backend
_LAST_AXIS = {b: "dim=-1, keepdim=True" if b == "torch" else "axis=-1, keepdims=True" for b in _NS}


#: jnp.argmax over the class axis, keepdims: XLA's CPU argmax (a reduction over pairs) is
#: several times slower than a max and a min
JAX_FIRST_MAX = (
    "def _first_max(u):\n"
    "    # the index of the first largest entry (of the first NaN if any), as jnp.argmax,\n"
    "    # with the class axis kept: one max and one min over it (XLA's argmax is slower)\n"
    "    i = jnp.arange(u.shape[-1])\n"
    "    top = jnp.max(u, axis=-1, keepdims=True)\n"
    "    first = jnp.where((u == top) | jnp.isnan(u), i, u.shape[-1])\n"
    "    return jnp.min(first, axis=-1, keepdims=True)\n"
)


def _helper_lse(backend: str) -> str:
    ns = _NS[backend]
    if backend == "torch":
        amax = "torch.amax(u, dim=-1, keepdim=True)"
        first = "torch.argmax(u, dim=-1, keepdim=True) == torch.arange(u.shape[-1], device=u.device)"
        total = "torch.sum(torch.where(first, 0.0, torch.exp(u - m)), dim=-1, keepdim=True)"
    else:
        amax = f"{ns}.max(u, axis=-1, keepdims=True)"
        first = (
            "_first_max(u) == jnp.arange(u.shape[-1])" if backend == "jax"
            else f"{ns}.argmax(u, axis=-1)[..., None] == {ns}.arange(u.shape[-1])"
        )
        total = f"{ns}.sum({ns}.where(first, 0.0, {ns}.exp(u - m)), axis=-1, keepdims=True)"
    if backend == "jax":  # XLA flushes subnormal terms: they are summed beside the second largest
        parts = (
            "def _lse_parts(u):\n"
            "    # the largest entry and the sum s of exp(u - max) over the others (one of equal\n"
            "    # largest ones excluded): logsumexp(u) = max + log1p(s), with s's digits kept.\n"
            "    # One exp per entry and two sums: the others' sum, and the total less 1 where\n"
            "    # the largest is tied. XLA flushes subnormal terms to zero, which costs s digits\n"
            "    # only where s < C*tiny/eps: such rows (an input's only) take _lse_exact\n"
            f"    m = {amax}\n"
            f"    m = {ns}.where({ns}.isfinite(m), m, 0.0)\n"
            "    e = jnp.exp(u - m)\n"
            "    total = jnp.sum(e, axis=-1, keepdims=True)\n"
            "    s = jnp.sum(jnp.where(u == m, 0.0, e), axis=-1, keepdims=True)\n"
            "    s = jnp.where(total - s > 1.5, total - 1, s)\n"
            "    finfo = jnp.finfo(u.dtype)\n"
            "    few = jnp.any(s < u.shape[-1] * float(finfo.tiny) / float(finfo.eps))\n"
            "    return jax.lax.cond(few, _lse_exact, lambda u: (m, s), u)\n"
            "\n\n"
            "def _lse_exact(u):\n"
            "    # _lse_parts with the others summed relative to the largest of them\n"
            f"    m = {amax}\n"
            f"    m = {ns}.where({ns}.isfinite(m), m, 0.0)\n"
            f"    first = {first}\n"
            "    rest = jnp.where(first, -jnp.inf, u)\n"
            "    m2 = jnp.max(rest, axis=-1, keepdims=True)\n"
            "    m2 = jnp.where(jnp.isfinite(m2), m2, m)\n"
            "    s2 = jnp.sum(jnp.exp(rest - m2), axis=-1, keepdims=True)\n"
            "    scaled = jnp.exp((m2 - m) + jnp.log(s2))\n"
            "    # (s2 rescaled by a product where exp(m2 - m) is a normal number, its argument\n"
            "    # exact; else in log space, where XLA would flush it to zero)\n"
            "    direct = s2 * jnp.exp(m2 - m)\n"
            "    s = jnp.where(m2 - m > math.log(jnp.finfo(u.dtype).tiny) + 1, direct, scaled)\n"
            "    return m, s\n"
        )
    elif backend == "torch":  # the largest term zeroed in place: no (rows, C) mask
        parts = (
            "def _lse_parts(u):\n"
            "    m, _, s = _lse_shifted(u)\n"
            "    return m, s\n"
            "\n\n"
            "def _lse_shifted(u):\n"
            "    # the largest entry (the first of equal ones), u - max, and the sum of exp(u - max)\n"
            "    # over the others: logsumexp(u) = max + log1p(s), with s's digits kept\n"
            f"    m = {amax}\n"
            "    m = torch.where(torch.isfinite(m), m, 0.0)\n"
            "    d = u - m\n"
            "    e = torch.exp(d).scatter_(-1, torch.argmax(u, dim=-1, keepdim=True), 0.0)\n"
            "    return m, d, torch.sum(e, dim=-1, keepdim=True)\n"
        )
    else:
        parts = (
            "def _lse_parts(u):\n"
            "    # the largest entry (the first of equal ones) and the sum of exp(u - max) over the\n"
            "    # others: logsumexp(u) = max + log1p(s), with s's digits kept\n"
            f"    m = {amax}\n"
            f"    m = {ns}.where({ns}.isfinite(m), m, 0.0)\n"
            f"    first = {first}\n"
            f"    s = {total}\n"
            "    return m, s\n"
        )
    return parts + ("\n\n" + JAX_FIRST_MAX if backend == "jax" else "") + (
        "\n\n"
        "def _logsumexp(u):\n"
        "    m, s = _lse_parts(u)\n"
        f"    return m + {ns}.log1p(s)\n"
        "\n\n"
        "def _log_softmax(u):\n"
        + (
            "    _, d, s = _lse_shifted(u)\n"
            "    return d.sub_(torch.log1p(s))\n" if backend == "torch"
            else "    m, s = _lse_parts(u)\n"
            f"    return (u - m) - {ns}.log1p(s)\n"
        )
    )


class _ClassPrimitive(Primitive):
    """A primitive of the class axis: the oracle writes it out for a fixed number of classes
    (``expand``), so its textbook meaning is itself."""

    @classmethod
    def textbook(cls, *args):
        return cls(*args)


class ClassSum(_ClassPrimitive):
    """The sum of an expression of the entries over the class axis, one number per row."""

    display = "sum"
    nargs = 1

    @classmethod
    def eval(cls, body):
        if body.is_zero:
            return sympy.S.Zero
        if body.is_Number:  # sum(1) is the number of classes
            return body * NumClasses()
        # a number comes out of the sum (a parameter may differ from class to class)
        coeff, rest = body.as_coeff_Mul()
        if coeff != 1 and rest != 1:
            return coeff * cls(rest)
        return None
    lowering = {
        "numpy": "np.sum({0}, axis=-1, keepdims=True)",
        "jax": "jnp.sum({0}, axis=-1, keepdims=True)",
        "torch": "torch.sum({0}, dim=-1, keepdim=True)",
    }


class NumClasses(_ClassPrimitive):
    """C, the length of the class axis (``shape`` in a generated function is the rows' shape,
    classes last)."""

    display = "num_classes"
    nargs = 0
    lowering = {b: "shape[-1]" for b in _NS}

    def _eval_is_real(self):
        return True

    def _eval_is_positive(self):
        return True


class LogSumExp(_ClassPrimitive):
    """log(sum(exp(e))) over the class axis: max + log1p(sum over the other entries)."""

    display = "logsumexp"
    nargs = 1
    lowering = {b: "_logsumexp({0})" for b in _NS}
    helpers = {b: _helper_lse(b) for b in _NS}


class LogSoftmax(Primitive):
    """e - logsumexp(e), per entry: (e - max) - log1p(s), exact for the largest entry."""

    display = "log_softmax"
    nargs = 1
    lowering = {b: "_log_softmax({0})" for b in _NS}
    helpers = {b: _helper_lse(b) for b in _NS}

    @classmethod
    def textbook(cls, body):
        return body - LogSumExp(body)


class OneHot(_ClassPrimitive):
    """1 at the entry of class k, 0 elsewhere (k an integer index, broadcast against the
    rows; ``shape`` in a generated function is the rows' shape, classes last)."""

    display = "onehot"
    nargs = 1
    lowering = {
        "numpy": "(({0}) == np.arange(shape[-1])).astype(out)",
        "jax": "(({0}) == jnp.arange(shape[-1])).astype(out)",
        # (the classes in the index's dtype: an int64 arange would be compared with a float
        # index through a slow promoting kernel; torch promotes to that dtype anyway)
        "torch": "(({0}) == torch.arange(shape[-1], device={0}.device, dtype={0}.dtype)).to(out[0])",
    }

    def _eval_is_real(self):
        return True


def _helper_pick(backend: str) -> str:
    ns = _NS[backend]
    # a is a number (as in pick(1, k)) or an array in the work dtype, which the gather keeps
    number = "not torch.is_tensor(a)" if backend == "torch" else "not hasattr(a, 'shape')"
    if backend == "torch":
        full = "a.expand(shape)"
        take = "torch.take_along_dim({0}, i.long(), dim=-1)"
        index = "torch.where(inside, k, 0)"
        rows = "k.expand(*shape[:-1], 1)"
    else:
        full = f"{ns}.broadcast_to(a, shape)"
        integer = "jnp.int32" if backend == "jax" else "np.intp"
        take = f"{ns}.take_along_axis({{0}}, i.astype({integer}), axis=-1)"
        index = f"{ns}.where(inside, k, 0)"
        rows = f"{ns}.broadcast_to(k, (*shape[:-1], 1))"
    return (
        "def _pick(a, k, shape):\n"
        "    # sum(a * onehot(k)) over the class axis as a gather: a at class k in each row, 0\n"
        "    # where k is not a class (no (rows, C) product; NaN or inf at other entries stays there)\n"
        f"    k = {rows}\n"
        f"    inside = (k >= 0) & (k < shape[-1]) & (k == {ns}.floor(k))\n"
        f"    if {number}:\n"
        "        return " + f"{ns}.where(inside, a, 0)\n"
        f"    i = {index}\n"
        f"    picked = {take.format(full)}\n"
        f"    return {ns}.where(inside, picked, 0)\n"
    )


class Pick(_ClassPrimitive):
    """pick(a, k) = sum(a*onehot(k)) over the class axis, one number per row: printed as a
    gather, not a product and a sum over the classes. Made from the sum only when a block is
    printed (``picks``): the derivation's passes see the sum."""

    display = "pick"
    nargs = 2
    lowering = {b: "_pick({0}, {1}, shape)" for b in _NS}
    helpers = {b: _helper_pick(b) for b in _NS}


def picks(expr: sympy.Expr) -> sympy.Expr:
    """Each sum(a*onehot(k)) over the class axis in ``expr`` -> pick(a, k)."""

    def visit(node):
        if not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if isinstance(node, ClassSum):
            factors = sympy.Mul.make_args(node.args[0])
            hot = [f for f in factors if isinstance(f, OneHot)]
            rest = [f for f in factors if not isinstance(f, OneHot)]
            if len(hot) == 1 and not any(f.has(OneHot) for f in rest):
                # a number factor stays outside (pick(1, k) is a 0/1 mask in any dtype)
                number = sympy.Mul(*(f for f in rest if f.is_Number))
                k = hot[0].args[0]
                others = [Pick(f, k) for f in rest if not f.is_Number]
                return number * (sympy.Mul(*others) if others else Pick(sympy.S.One, k))
        return node

    return visit(expr)


#: torch: the picked entry written into a copy of the others (torch.where with a (rows, C) mask
#: of k == class is two passes, a scatter of one entry per row is one copy)
TORCH_AT_CLASS = (
    "def _at_class(picked, others, k, shape):\n"
    "    # others, with the entry of class k in each row replaced by picked (rows whose k is not\n"
    "    # a class keep others)\n"
    "    k = k.expand(*shape[:-1], 1)\n"
    "    inside = (k >= 0) & (k < shape[-1]) & (k == torch.floor(k))\n"
    "    i = torch.where(inside, k, 0).long()\n"
    "    ref = next((a for a in (others, picked) if torch.is_tensor(a) and a.is_floating_point()), k)\n"
    "    full = torch.as_tensor(others, dtype=ref.dtype, device=k.device).expand(shape)\n"
    "    return full.scatter(-1, i, torch.where(inside, picked, full.gather(-1, i)).to(full.dtype))\n"
)


class AtClass(_ClassPrimitive):
    """at_class(picked, others, k): per entry of the class axis, picked (one number per row) at
    class k and others elsewhere, the split of ``split_at_pick``."""

    display = "at_class"
    nargs = 3
    lowering = {
        "numpy": "np.where({2} == np.arange(shape[-1]), {0}, {1})",
        "jax": "jnp.where({2} == jnp.arange(shape[-1]), {0}, {1})",
        "torch": "_at_class({0}, {1}, {2}, shape)",
    }
    helpers = {"torch": TORCH_AT_CLASS}


def _bare_hots(node: sympy.Basic) -> set:
    """The onehot(k) in ``node`` outside every class-axis primitive (log_not_picked(onehot(k))
    counts as one: it is entrywise in the one-hot)."""
    if isinstance(node, OneHot):
        return {node}
    if isinstance(node, LogNotPicked):
        return {node.args[0]} if isinstance(node.args[0], OneHot) else set()
    if isinstance(node, _AXIS_NODES) or not node.args:
        return set()
    return set().union(*(_bare_hots(a) for a in node.args))


def split_at_pick(expr: sympy.Expr, rows: frozenset) -> sympy.Expr:
    """An expression entrywise in onehot(k) -> at_class(e1, e0, k): e1 at class k, e0 elsewhere. e0 is ``expr`` at onehot(k) = 0, for the other entries; e1 is ``expr`` at onehot(k) =
    1 with every operand that varies along the class axis taken at class k (a pick), so it is
    one number per row. The terms that onehot(k) zeroes are then not computed at the other
    entries, and those of the picked entry are computed once per row: softmax cross-entropy's
    gradient is -w_k*expm1(log p_k) at k and -w_k*p_j elsewhere, not both sums at every entry.

    ``rows`` are the symbols that hold one number per row (the index inputs); every other
    symbol may vary along the class axis (a per-class weight) and is picked. The split is made
    at the top of the expression, so a factor of one number per row joins each branch, once per
    row in e1 and before the entrywise factors in e0; a one-hot inside a class-axis primitive (a
    reduction, a Hessian block) is left alone, and so is an expression of two."""

    def off_class(node):
        if isinstance(node, OneHot):
            return sympy.S.Zero
        if isinstance(node, LogNotPicked) and isinstance(node.args[0], OneHot):
            return sympy.S.Zero
        if isinstance(node, _AXIS_NODES) or not node.args:
            return node
        return node.func(*(off_class(a) for a in node.args))

    def at_class(node, k):
        if isinstance(node, OneHot):
            return sympy.S.One
        if isinstance(node, LogNotPicked) and isinstance(node.args[0], OneHot):
            return sympy.S.NegativeInfinity
        if isinstance(node, Pick) and node.args == (sympy.S.One, k):
            return sympy.S.One  # k is a class where its entry is picked
        if isinstance(node, _PER_ROW) or node.is_Number:
            return node
        if isinstance(node, sympy.Symbol):
            return node if node in rows or node in k.free_symbols else Pick(node, k)
        if isinstance(node, _AXIS_NODES):
            return Pick(node, k)
        if not node.args:
            return node
        return node.func(*(at_class(a, k) for a in node.args))

    def visit(node):
        found = _bare_hots(node)
        if len(found) != 1:
            return node
        (k,) = next(iter(found)).args
        picked, others = at_class(node, k), off_class(node)
        if picked.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            return node  # (log_not_picked's -inf left outside an exponential)
        return AtClass(picked, others, k)

    return visit(expr)


def _helper_complement(backend: str) -> str:
    """log(1 - softmax(u)_k) for a one-hot a at k."""
    ns = _NS[backend]
    log1p = "_log1p" if backend == "jax" else f"{ns}.log1p"
    if backend == "torch":
        red, amax = "dim=-1, keepdim=True", "torch.amax"
    else:
        red, amax = "axis=-1, keepdims=True", f"{ns}.max"
    return (
        "def _log_softmax_complement(u, a):\n"
        "    # log(1 - p_k), p = softmax(u), a one-hot at k: where p_k < 1/2, log1p(-p_k) from\n"
        "    # log p_k; else log(s) - log1p(s) with s = sum(exp(u - u_k)) over the others (x_k is\n"
        "    # the largest: no term overflows, and the two logs have one sign), log(s) taken as\n"
        "    # (the others' max - u_k) + log(their sum relative to it) where s underflows\n"
        "    picked = a > 0\n"
        "    # (no class picked, as for an ignored label: p_k = 0 and the result is 0)\n"
        f"    r = {ns}.sum(a * _log_softmax(u), {red})\n"
        f"    r = {ns}.where({ns}.any(picked, {red}), r, -{ns}.inf)\n"
        f"    u_k = {ns}.sum(a * u, {red})\n"
        f"    rest = {ns}.where(picked, -{ns}.inf, u)\n"
        f"    s = {ns}.sum({ns}.exp(rest - u_k), {red})\n"
        f"    m = {amax}(rest, {red})\n"
        f"    m = {ns}.where({ns}.isfinite(m), m, 0.0)\n"
        f"    far_log = (m - u_k) + {ns}.log({ns}.sum({ns}.exp(rest - m), {red}))\n"
        f"    log_s = {ns}.where(s >= {ns}.finfo(s.dtype).tiny, {ns}.log(s), far_log)\n"
        f"    near = {log1p}(-{ns}.exp(r))\n"
        f"    return {ns}.where(r < -0.6931471805599453, near, log_s - {log1p}(s))\n"
    )


class LogNotPicked(_ClassPrimitive):
    """log(1 - a) for a one-hot a: 0 off the picked entry, -inf on it, so that exp(u +
    log_not_picked(a)) is 0 there even where exp(u) overflows (SymPy would take the log out of
    the exponential as a factor 1 - a, and 0*inf is NaN)."""

    display = "log_not_picked"
    nargs = 1
    lowering = {"numpy": "np.log1p(-{0})", "jax": "jnp.log1p(-{0})", "torch": "torch.log1p(-{0})"}

    @classmethod
    def textbook(cls, a):
        return sympy.log(1 - a)

    def _eval_is_real(self):
        return None


class LogSoftmaxComplement(_ClassPrimitive):
    """log(1 - pick(softmax(b), k)), one number per row, given b and a = onehot(k): the log of
    the softmax mass outside the picked class. It is a reduction: its derivative in entry j of b
    is exp(log_softmax(b)_j + r - L + log(1 - a_j)) - a_j*exp(r), r = pick(log_softmax(b), k) and L
    itself, a product of exponentials in every term (at b = (1e4, 0, 0), k = 0, L = log 2 - 1e4
    and the others' derivatives are 1/2, where 1 - p_k rounds to 0)."""

    display = "log_softmax_complement"
    nargs = 2
    lowering = {b: "_log_softmax_complement({0}, {1})" for b in _NS}
    helpers = {
        b: _helper_lse(b) + "\n\n" + _helper_complement(b)
        + ("\n\n" + JAX_LOG1P if b == "jax" else "")
        for b in _NS
    }

    @classmethod
    def textbook(cls, b, a):
        return sympy.log(1 - ClassSum(a * sympy.exp(b - LogSumExp(b))))


class HessBlock(_ClassPrimitive):
    """The Hessian block of a row, shaped (..., C, C): off the diagonal sum_k u_k w_k^T, on it
    the entries d (given whole, so that a diagonal such as p*(1 - p) is not formed as the
    difference p - p*p)."""

    display = "hess_block"
    lowering = {b: "_hess_block({all})" for b in _NS}
    helpers = {
        b: (
            "def _hess_block(d, *pairs):\n"
            "    # (d or a pair may be a number: each is broadcast against the others)\n"
            f"    arrays = [{asarray} for a in (d, *pairs)]\n"
            "    arrays = [a for a in arrays if a.ndim] or arrays\n"
            f"    ref = {zeros}\n"
            "    d = d + ref\n"
            "    if not d.ndim:  # a block of zeros: broadcast by the caller\n"
            "        return d\n"
            f"    eye = {eye}\n"
            "    h = ref[..., :, None] * ref[..., None, :]\n"
            "    for u, w in zip(pairs[0::2], pairs[1::2]):\n"
            "        h = h + (u + ref)[..., :, None] * (w + ref)[..., None, :]\n"
            f"    return {ns}.where(eye, d[..., :, None], h)\n"
        )
        for b, ns, asarray, zeros, eye in (
            ("numpy", "np", "np.asarray(a)",
             "np.zeros(np.broadcast_shapes(*(a.shape for a in arrays)), dtype=arrays[0].dtype)",
             "np.eye(d.shape[-1], dtype=bool)"),
            ("jax", "jnp", "jnp.asarray(a)",
             "jnp.zeros(jnp.broadcast_shapes(*(a.shape for a in arrays)), dtype=arrays[0].dtype)",
             "jnp.eye(d.shape[-1], dtype=bool)"),
            ("torch", "torch", "torch.as_tensor(a)",
             "arrays[0].new_zeros(torch.broadcast_shapes(*(a.shape for a in arrays)))",
             "torch.eye(d.shape[-1], dtype=torch.bool, device=d.device)"),
        )
    }


def _helper_two_sum(backend: str) -> str:
    ns = _NS[backend]
    if backend == "torch":
        red, cat, zeros = "dim=-1, keepdim=True", "torch.cat([{0}, {1}], dim=-1)", "torch.zeros_like(t[..., :1])"
    else:
        red = "axis=-1, keepdims=True"
        cat = f"{ns}.concatenate([{{0}}, {{1}}], axis=-1)"
        zeros = f"{ns}.zeros_like(t[..., :1])"
    if backend == "jax":  # one fused pass per level: XLA makes each level's own sum a kernel
        return (
            "def _two_sum(t):\n"
            "    # the row sums of t as hi + lo: pairwise, each addition's rounding error kept\n"
            "    # (the errors carried beside the partial sums and added pairwise with them)\n"
            "    lo = jnp.zeros_like(t)\n"
            "    while t.shape[-1] > 1:\n"
            "        if t.shape[-1] % 2:\n"
            f"            t = {cat.format('t', zeros)}\n"
            f"            lo = {cat.format('lo', zeros.replace('t[', 'lo['))}\n"
            "        a, b = t[..., 0::2], t[..., 1::2]\n"
            "        s = a + b\n"
            "        bb = s - a\n"
            "        lo = (lo[..., 0::2] + lo[..., 1::2]) + ((a - (s - bb)) + (b - bb))\n"
            "        t = s\n"
            "    return t, lo\n"
        )
    return (
        "def _two_sum(t):\n"
        "    # the row sums of t as hi + lo: pairwise, each addition's rounding error kept\n"
        f"    lo = {zeros}\n"
        "    while t.shape[-1] > 1:\n"
        "        if t.shape[-1] % 2:\n"
        f"            t = {cat.format('t', zeros)}\n"
        "        a, b = t[..., 0::2], t[..., 1::2]\n"
        "        s = a + b\n"
        "        bb = s - a\n"
        f"        lo = lo + {ns}.sum((a - (s - bb)) + (b - bb), {red})\n"
        "        t = s\n"
        "    return t, lo\n"
    )


def _helper_delta(backend: str) -> str:
    """p*sum(a) - a for p = softmax(x) and targets a >= 0 (the cross-entropy gradient)."""
    ns = _NS[backend]
    log1p = "_log1p" if backend == "jax" else f"{ns}.log1p"
    if backend == "torch":
        red = "dim=-1, keepdim=True"
        amax = "torch.amax"
        take = "torch.take_along_dim({0}, r, dim=-1)"
        argmax = "torch.argmax(u, dim=-1, keepdim=True)"
        inf = "torch.inf"
        cat = "torch.cat([{0}, {1}], dim=-1)"
    else:
        red = "axis=-1, keepdims=True"
        amax = f"{ns}.max"
        take = f"{ns}.take_along_axis({{0}}, r, axis=-1)"
        argmax = "_first_max(u)" if backend == "jax" else f"{ns}.argmax(u, axis=-1)[..., None]"
        inf = f"{ns}.inf"
        cat = f"{ns}.concatenate([{{0}}, {{1}}], axis=-1)"
    return (
        "def _softmax_delta(x, a, plain):\n"
        "    # relative to the target r with the largest x - log(a): with d = (x - x_r) -\n"
        "    # log(a / a_r), p*A/a - 1 = (A*expm1(d) - S - Z) / (A + S + Z), S = sum(a*expm1(d))\n"
        "    # over the targets > 0, Z = sum(exp(x - x_r + log a_r)) over the targets = 0: p = a\n"
        "    # (the optimum of soft labels) gives d = 0 exactly, and no difference of p and a\n"
        "    # loses digits. S is summed with its rounding errors (a*expm1(d) as -a + a*exp(d)\n"
        "    # where d < -log 2), so that S + Z keeps its digits where the mass a target misses\n"
        "    # is the mass the zero targets hold. Where they hold more than A, ``plain``.\n"
        "    pos = a > 0\n"
        f"    safe = {ns}.where(pos, a, 1.0)\n"
        f"    u = {ns}.where(pos, x - {ns}.log(safe), -{inf})\n"
        f"    r = {argmax}\n"
        f"    x_r, a_r = {take.format('x')}, {take.format('safe')}\n"
        f"    d = {ns}.where(pos, (x - x_r) - {log1p}((safe - a_r) / a_r), 0.0)\n"
        f"    total = {ns}.sum(a, {red})\n"
        "    split = pos & (d < -0.6931471805599453)\n"
        f"    first = {ns}.where(pos, {ns}.where(split, -a, a * {ns}.expm1(d)), 0.0)\n"
        f"    second = {ns}.where(split, a * {ns}.exp(d), 0.0)\n"
        f"    s_hi, s_lo = _two_sum({cat.format('first', 'second')})\n"
        f"    w = {ns}.where(pos, -{inf}, x - x_r) + {ns}.log(a_r)\n"
        "    # (summed relative to their largest: XLA flushes subnormal terms)\n"
        f"    top = {amax}(w, {red})\n"
        f"    top = {ns}.where({ns}.isfinite(top), top, 0.0)\n"
        f"    z = {ns}.exp(top + {ns}.log({ns}.sum({ns}.exp(w - top), {red})))\n"
        "    excess = (s_hi + z) + s_lo\n"
        "    den = total + excess\n"
        f"    near = {ns}.where(pos, a * (total * {ns}.expm1(d) - excess), total * {ns}.exp(w)) / den\n"
        "    # (and where the reference target holds most of the mass: den near A, not far below)\n"
        f"    usable = (z <= total) & {ns}.isfinite(den) & (total > 0) & (den >= total / 2)\n"
        f"    return {ns}.where(usable, near, plain)\n"
    )


class SoftmaxDelta(Primitive):
    """softmax(x)*sum(a) - a per entry, for targets a >= 0, given also the same quantity in
    the form of ``complements`` (``plain``), used where the targets of 0 carry more of
    softmax's mass than the others (no cancellation there). Near p = a, the optimum of soft
    labels, it keeps the digits that p - a loses: at x = (0, 2**-10), a = (1/2, 1/2) the
    gradient -2.44e-4 is exact, where p - a is 9.7 bits beyond conditioning."""

    display = "softmax_delta"
    nargs = 3
    lowering = {b: "_softmax_delta({0}, {1}, {2})" for b in _NS}
    helpers = {
        b: _helper_two_sum(b) + "\n\n" + _helper_delta(b)
        + ("\n\n" + JAX_LOG1P + "\n\n" + JAX_FIRST_MAX if b == "jax" else "")
        for b in _NS
    }

    @classmethod
    def textbook(cls, x, a, plain):
        return sympy.exp(x - LogSumExp(x)) * ClassSum(a) - a


def _uniform_rows(backend: str, indent: str) -> str:
    """The end of _centered: the rows of logits within 1/2 of each other in their own form."""
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    log1p = "_log1p" if backend == "jax" else f"{ns}.log1p"
    return textwrap.indent(
        f"xr = {ns}.where(flat, xr, 0.0)\n"
        f"e = {ns}.expm1(xr - {log1p}({ns}.mean({ns}.expm1(xr), {red})))\n"
        f"uniform = rel - {ns}.mean(rel, {red})\n"
        f"uniform = uniform - {ns}.mean(e * rel, {red})\n"
        f"return {ns}.where(flat, uniform, peaked)\n",
        indent,
    )


def _helper_others(backend: str) -> str:
    ns = _NS[backend]
    take = (
        "torch.take_along_dim(b, m, dim=-1)" if backend == "torch"
        else f"{ns}.take_along_axis(b, m, axis=-1)"
    )
    argmax = (
        "torch.argmax(x, dim=-1, keepdim=True)" if backend == "torch"
        else "_first_max(x)" if backend == "jax"
        else f"{ns}.argmax(x, axis=-1)[..., None]"
    )
    amax = "torch.amax" if backend == "torch" else f"{ns}.max"
    red = _LAST_AXIS[backend]
    inf = f"{ns}.inf"
    log1p = "_log1p" if backend == "jax" else f"{ns}.log1p"
    return (
        "def _sum_others(a):\n"
        "    # sum(a) - a with the sum as hi + lo: hi - a is exact where a is most of it\n"
        "    hi, lo = _two_sum(a)\n"
        "    return (hi - a) + lo\n"
        "\n\n"
        "def _centered(b, x, log_p, c=None):\n"
        "    # b - sum(p*b), p = exp(log_p) = softmax(x), relative to b at the largest x (the\n"
        "    # entry that can hold nearly all of p): no difference of two near-equal sums\n"
        f"    m = {argmax}\n"
        "    if c is None:\n"
        f"        rel = b - {take}\n"
        "    else:\n"
        "        # (of b - c: as (b - c) - (b_m - c_m) or as (b - b_m) - (c - c_m), whichever has\n"
        "        # the smaller rounding errors, b - c exact near c = b, b - b_m where c is far)\n"
        f"        d = b - c\n"
        f"        d_m = {take.replace('(b,', '(d,')}\n"
        f"        own_b = b - {take}\n"
        f"        own_c = c - {take.replace('(b,', '(c,')}\n"
        f"        first = {ns}.abs(d) + {ns}.abs(d_m) <= {ns}.abs(own_b) + {ns}.abs(own_c)\n"
        f"        rel = {ns}.where(first, d - d_m, own_b - own_c)\n"
        "    # the terms scaled by the largest p among the others (each can be subnormal,\n"
        "    # and XLA flushes them, while their sum is not)\n"
        f"    top = {amax}({ns}.where(rel == 0, -{inf}, log_p), {red})\n"
        f"    top = {ns}.where({ns}.isfinite(top), top, 0.0)\n"
        f"    hi, lo = _two_sum({ns}.where(rel == 0, 0.0, {ns}.exp(log_p - top) * rel))\n"
        "    peaked = (rel - _times_exp(hi, top)) - _times_exp(lo, top)\n"
        "    # rows of logits within 1/2 of each other: p = exp(d)/C with d = x - log(mean(exp(x)))\n"
        "    # (relative to the largest), so sum(p*rel) = mean(rel) + sum(expm1(d)*rel)/C, the\n"
        "    # second part small: no rounded p near 1/C times rel, where the result is driven by\n"
        "    # the small differences of p\n"
        f"    xr = x - {take.replace('(b,', '(x,')}\n"
        f"    flat = {amax}(-xr, {red}) < 0.5\n"
        + (
            "\n"
            "    def with_flat(xr):\n"
            "        # (only for an input with such a row: two expm1 per entry)\n"
            + _uniform_rows(backend, "        ")
            + "\n"
            "    return jax.lax.cond(jnp.any(flat), with_flat, lambda xr: peaked, xr)\n"
            if backend == "jax" else _uniform_rows(backend, "    ")
        )
        + "\n\n"
        "def _times_exp(a, e):\n"
        "    # a * exp(e), where exp(e) alone may be subnormal (and flushed) while the product\n"
        "    # is not\n"
        f"    logged = {ns}.sign(a) * {ns}.exp({ns}.log({ns}.abs(a)) + e)\n"
        f"    scale = {ns}.exp(e)\n"
        f"    return {ns}.where(scale >= {ns}.finfo(e.dtype).tiny, a * scale, logged)\n"
    )


class SumOthers(Primitive):
    """Per entry c, the sum over the row of every other entry: the row's sum carried as
    hi + lo (pairwise, with each rounding error), then (hi - a_c) + lo: exact where a_c is
    most of the sum, and a tiny entry is not lost where large ones cancel."""

    display = "sum_others"
    nargs = 1
    lowering = {b: "_sum_others({0})" for b in _NS}
    helpers = {
        b: _helper_two_sum(b) + "\n\n" + _helper_others(b)
        + ("\n\n" + JAX_FIRST_MAX + "\n\n" + JAX_LOG1P if b == "jax" else "")
        for b in _NS
    }

    @classmethod
    def textbook(cls, a):
        return ClassSum(a) - a


class Centered(Primitive):
    """b - sum(softmax(x)*b) per entry (the softmax Jacobian applied to b), given also
    log_softmax(x): (b - b_m) - sum(p*(b - b_m)) for m the largest entry of x, the sum
    compensated. At x = (20, 0, 1, ...) the largest p is 1 - 1e-9 and b - sum(p*b) is the
    difference of b_c and a sum close to b_m: relative to b_m it is not."""

    display = "centered"
    nargs = 3

    @classmethod
    def eval(cls, b, x, log_p):
        if b.is_Number:  # b*(1 - sum(p)) = 0
            return sympy.S.Zero
        return None
    lowering = {b: "_centered({0}, {1}, {2})" for b in _NS}
    helpers = SumOthers.helpers

    @classmethod
    def textbook(cls, b, x, log_p):
        return b - ClassSum(sympy.exp(x - LogSumExp(x)) * b)


class CenteredDiff(Primitive):
    """(a - c) - sum(softmax(x)*(a - c)) per entry, the argument a difference of two inputs'
    terms (a student's and a teacher's logits): relative to the largest x as (a - c) - (a_m -
    c_m) or (a - a_m) - (c - c_m), whichever rounds less, so that a - c keeps its digits both
    near c = a and where a and c are far apart but each is near its value at m (a teacher's
    tied logits at 1e4)."""

    display = "centered_diff"
    nargs = 4
    lowering = {b: "_centered({0}, {2}, {3}, {1})" for b in _NS}
    helpers = SumOthers.helpers

    @classmethod
    def textbook(cls, a, c, x, log_p):
        return Centered.textbook(a - c, x, log_p)


#: g(u) = u*exp(u) - expm1(u) = sum over n >= 2 of (n - 1)*u**n/n!: the coefficients of u**n
#: from n = 2 (enough for |u| < 1 to the last bit of float64)
_RELENT_SERIES = tuple(
    sympy.Rational(n - 1, sympy.factorial(n)) for n in range(2, 21)
)


def _helper_log_ratio(backend: str) -> str:
    ns = _NS[backend]
    log1p = "_log1p" if backend == "jax" else f"{ns}.log1p"
    red = _LAST_AXIS[backend]
    return (
        "def _log_ratio(a, b):\n"
        "    # log_softmax(a) - log_softmax(b) with its digits where the two are near: (a - b) - D,\n"
        "    # D = logsumexp(a) - logsumexp(b) = log1p(sum(p*expm1(a - b))), p = softmax(b),\n"
        "    # where that sum is small (the difference of two rounded logsumexps has no digit\n"
        "    # there); also the two log-softmaxes\n"
        "    lq, lp = _log_softmax(a), _log_softmax(b)\n"
        "    d = a - b\n"
        f"    p = {ns}.exp(lp)\n"
        "    big = d > 1\n"
        f"    above = {ns}.exp(lp + {ns}.where(big, d, 0.0)) - p\n"
        f"    w = {ns}.where(big, above, p * {ns}.expm1({ns}.where(big, 0.0, d)))\n"
        f"    s = {ns}.sum(w, {red})\n"
        "    near = (s > -0.5) & (s < 1.0)\n"
        f"    D = {ns}.where(near, {log1p}({ns}.where(near, s, 0.0)), _logsumexp(a) - _logsumexp(b))\n"
        "    # (each form has the rounding errors of its two terms: the one with the smaller)\n"
        f"    by_logits = {ns}.abs(d) + {ns}.abs(D) <= {ns}.abs(lq) + {ns}.abs(lp)\n"
        f"    return {ns}.where(by_logits, d - D, lq - lp), lq, lp\n"
    )


def _helper_softmax_kl(backend: str) -> str:
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    coefficients = ", ".join(repr(float(c)) for c in _RELENT_SERIES)
    table = "\n".join(
        textwrap.wrap(coefficients, 92, initial_indent="        ", subsequent_indent="        ")
    )
    return (
        "def _softmax_kl(a, b):\n"
        "    # sum(q*(log q - log p)), q = softmax(a), p = softmax(b), as sum(p*g(u)) with\n"
        "    # u = log q - log p and g(u) = u*exp(u) - expm1(u) >= 0 (q and p each sum to 1):\n"
        "    # terms of one sign, so no cancellation where q is near p; g by its series where\n"
        "    # |u| < 1 (u*exp(u) and expm1(u) cancel there)\n"
        "    # (g's series: the coefficients of u**n from n = 2 on, (n - 1)/n!)\n"
        f"    relent = (\n{table}\n    )\n"
        "    u, lq, lp = _log_ratio(a, b)\n"
        f"    small = {ns}.abs(u) < 1\n"
        f"    us = {ns}.where(small, u, 0.0)\n"
        "    series = 0.0 * us\n"
        "    for c in reversed(relent):\n"
        "        series = c + us * series\n"
        "    series = us * us * series\n"
        f"    far = {ns}.exp(lq) * (u - 1) + {ns}.exp(lp)\n"
        f"    term = {ns}.where(small, {ns}.exp(lp) * series, far)\n"
        f"    return {ns}.sum(term, {red})\n"
    )


def _helper_softmax_diff(backend: str) -> str:
    ns = _NS[backend]
    return (
        "def _softmax_diff(b, a):\n"
        "    # softmax(b) - softmax(a) = -p*expm1(log q - log p), p = softmax(b), q = softmax(a),\n"
        "    # where they are within a factor of 1.6 of each other (their difference has no\n"
        "    # digit there when formed from the rounded probabilities); plainly elsewhere\n"
        "    u, lq, lp = _log_ratio(a, b)\n"
        f"    p = {ns}.exp(lp)\n"
        f"    near = {ns}.abs(u) < 0.5\n"
        f"    return {ns}.where(near, -p * {ns}.expm1({ns}.where(near, u, 0.0)), p - {ns}.exp(lq))\n"
    )


def _ratio_helpers(backend: str, *more) -> str:
    return "\n\n".join(
        [_helper_lse(backend), _helper_log_ratio(backend), *(f(backend) for f in more)]
        + ([JAX_LOG1P] if backend == "jax" else [])
    )


class SoftmaxDiff(_ClassPrimitive):
    """softmax(b) - softmax(a) per entry, as -p*expm1(log q - log p) where p and q are near
    (that log-ratio from b - a and log1p of the logsumexps' difference): the gradient of a
    divergence of two softmaxes keeps its digits near its optimum, where the difference of two
    rounded probabilities has none."""

    display = "softmax_diff"
    nargs = 2
    lowering = {b: "_softmax_diff({0}, {1})" for b in _NS}
    helpers = {b: _ratio_helpers(b, _helper_softmax_diff) for b in _NS}

    @classmethod
    def textbook(cls, b, a):
        return sympy.exp(LogSoftmax.textbook(b)) - sympy.exp(LogSoftmax.textbook(a))


def _helper_softmax_diff_jvp(backend: str) -> str:
    ns = _NS[backend]
    red = _LAST_AXIS[backend]
    return (
        "def _softmax_diff_jvp(b, a, db, da):\n"
        "    # d(softmax(b) - softmax(a)) along (db, da): where p and q are near, from their\n"
        "    # difference D (each product alone is of the size of p, and they cancel):\n"
        "    # D*centered_p(db) + q*(centered_q(db - da) - sum(D*db)); else dp - dq\n"
        "    u, lq, lp = _log_ratio(a, b)\n"
        f"    p, q = {ns}.exp(lp), {ns}.exp(lq)\n"
        f"    near = {ns}.abs(u) < 0.5\n"
        f"    D = {ns}.where(near, -p * {ns}.expm1({ns}.where(near, u, 0.0)), p - q)\n"
        "    by_difference = D * _centered(db, b, lp) + q * (\n"
        f"        _centered(db - da, a, lq) - {ns}.sum(D * db, {red})\n"
        "    )\n"
        f"    return {ns}.where(near, by_difference, p * _centered(db, b, lp) - q * _centered(da, a, lq))\n"
    )


class SoftmaxDiffJvp(_ClassPrimitive):
    """The derivative of softmax(b) - softmax(a) along (db, da), per entry: where the two are
    near, in terms of their difference (``SoftmaxDiff``), so that the Hessian-vector product of
    a divergence keeps its digits near the optimum; elsewhere the two Jacobian-vector
    products."""

    display = "softmax_diff_jvp"
    nargs = 4
    lowering = {b: "_softmax_diff_jvp({0}, {1}, {2}, {3})" for b in _NS}
    helpers = {
        b: _ratio_helpers(b, _helper_softmax_diff_jvp) + "\n\n" + Centered.helpers[b] for b in _NS
    }

    @classmethod
    def textbook(cls, b, a, db, da):
        p, q = sympy.exp(LogSoftmax.textbook(b)), sympy.exp(LogSoftmax.textbook(a))
        return p * (db - ClassSum(p * db)) - q * (da - ClassSum(q * da))


class SoftmaxKL(_ClassPrimitive):
    """sum(softmax(a)*(log_softmax(a) - log_softmax(b))), one number per row: the KL divergence
    of softmax(b) from softmax(a) as a sum of terms >= 0, p*g(u) with u = log(q/p) and
    g(u) = u*exp(u) - expm1(u) (the two distributions each sum to 1), u from the difference of
    the logits and log1p of the logsumexps' difference. Near q = p, where the divergence is of
    the order of the square of log(q/p), no digit is lost to the terms' signs."""

    display = "softmax_kl"
    nargs = 2
    lowering = {b: "_softmax_kl({0}, {1})" for b in _NS}
    helpers = {b: _ratio_helpers(b, _helper_softmax_kl) for b in _NS}

    @classmethod
    def textbook(cls, a, b):
        return ClassSum(
            sympy.exp(LogSoftmax.textbook(a)) * (LogSoftmax.textbook(a) - LogSoftmax.textbook(b))
        )


REDUCTIONS = (ClassSum, LogSumExp, LogSoftmaxComplement)
#: class-axis primitives of one number per row (broadcast along the class axis)
_PER_ROW = REDUCTIONS + (NumClasses, Pick)
#: the primitives whose entries depend on other entries of the class axis
_AXIS_NODES = (_ClassPrimitive, LogSoftmax, SoftmaxDelta, SumOthers, Centered, CenteredDiff)

#: the stable forms of the class-axis derivation, as ``explain`` lists them:
#: (primitive, rule, before, after, reason)
CLASS_FORMS = (
    (LogSoftmax, "log_softmax", "b - logsumexp(b)", "log_softmax(b)",
     "(b - max) - log1p(sum of exp(b - max) over the other entries): the largest entry's "
     "log-probability keeps its digits near 0"),
    (SoftmaxDelta, "softmax_delta", "softmax(x)*sum(a) - a", "softmax_delta(x, a, ...)",
     "relative to the best-matched target: exact where p = a (soft labels at their optimum)"),
    (Centered, "centered", "b - sum(softmax(x)*b)", "centered(b, x, log_softmax(x))",
     "relative to b at the largest x, the sum compensated: no difference of near-equal sums"),
    (SoftmaxDiff, "softmax_diff", "softmax(b) - softmax(a)", "softmax_diff(b, a)",
     "-p*expm1(log q - log p) where p and q are near, the log-ratio from b - a and log1p of the "
     "logsumexps' difference: no difference of two rounded probabilities"),
    (SoftmaxDiffJvp, "softmax_diff_jvp", "d(softmax(b) - softmax(a))",
     "softmax_diff_jvp(b, a, db, da)",
     "where p and q are near, D*centered_p(db) + q*(centered_q(db - da) - sum(D*db)) with D = "
     "softmax_diff(b, a): no difference of two Jacobian-vector products of the size of p"),
    (CenteredDiff, "centered_diff", "(a - c) - sum(softmax(x)*(a - c))",
     "centered_diff(a, c, x, log_softmax(x))",
     "relative to the largest x as (a - c) - (a_m - c_m) or (a - a_m) - (c - c_m), whichever "
     "rounds less: exact near c = a, and where c is tied at the top far from a"),
    (SumOthers, "sum_others", "sum(a) - a", "sum_others(a)",
     "the row's sum as hi + lo: exact where a is most of it"),
    (LogSoftmaxComplement, "softmax_complement",
     "1 - pick(softmax(b), k); log(pick(softmax(b), k))",
     "exp(log_softmax_complement(b, onehot(k))); pick(log_softmax(b), k)",
     "the complement's log is log1p(-p_k) where p_k < 1/2, else taken from the other entries "
     "relative to b_k: finite where 1 - p_k rounds to 0, and its derivatives are products of "
     "exponentials (picked_forms)"),
    (SoftmaxKL, "softmax_kl", "sum(softmax(a)*(log_softmax(a) - log_softmax(b)))",
     "softmax_kl(a, b)",
     "sum(p*g(log(q/p))), g(u) = u*exp(u) - expm1(u) >= 0 (q and p each sum to 1): terms of "
     "one sign, log(q/p) from a - b and log1p of the logsumexps' difference (relative_entropy_forms)"),
    (HessBlock, "hess_block", "diag(d) + sum_k u_k w_k^T", "hess_block(d, u, w, ...)",
     "the diagonal whole (p*(1 - p) as -p*expm1(log p)), not p - p*p"),
)


def is_reduction(node: sympy.Basic) -> bool:
    return isinstance(node, REDUCTIONS)


def entrywise_of(spec, expr: sympy.Expr | None) -> tuple[sympy.Expr, sympy.Expr] | None:
    """``entrywise_sum`` of a spec's expression (None for None)."""
    from ._types import AXIS_SHAPES

    if expr is None:
        return None
    return entrywise_sum(expr, frozenset(i.symbol for i in spec.inputs if i.shape in AXIS_SHAPES))


def entrywise_sum(expr: sympy.Expr, entries: frozenset) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(c, b) where ``expr`` is c*sum(b) with b an expression of the entries alone (no reduction,
    no class index) and c free of the entries: a sum over the class axis of an elementwise loss.
    Its gradient is b's derivative entry by entry and its Hessian block is diagonal, so it goes
    through the elementwise passes (series analysis, the rule base) with the entries as
    scalars, and only the sum is added around the result. ``entries``: the symbols of the
    inputs shaped along the class axis."""
    if isinstance(expr, ClassSum):
        coeff, total = sympy.S.One, expr
    elif expr.is_Mul:
        sums = [a for a in expr.args if isinstance(a, ClassSum)]
        if len(sums) != 1:
            return None
        total = sums[0]
        coeff = sympy.Mul(*(a for a in expr.args if a is not total))
    else:
        return None
    body = total.args[0]
    inner = (*REDUCTIONS, OneHot, NumClasses, LogSoftmax)
    if body.has(*inner) or coeff.has(*inner) or coeff.free_symbols & entries:
        return None
    return coeff, body


def _hide(expr: sympy.Expr, entry_forms: bool = False) -> tuple[sympy.Expr, dict]:
    """``expr`` with each outermost reduction (and with ``entry_forms`` each stable form of
    the entries with a derivative rule, ``_ENTRY_JVP``) replaced by a symbol, and symbol ->
    node."""
    table: dict[sympy.Symbol, sympy.Expr] = {}
    names: dict[sympy.Expr, sympy.Symbol] = {}

    def visit(node):
        if is_reduction(node) or entry_forms and isinstance(node, tuple(_ENTRY_JVP)):
            if node not in names:
                names[node] = sympy.Dummy(f"R{len(names)}", real=True)
                table[names[node]] = node
            return names[node]
        if node.is_Atom or not node.args:
            return node
        return node.func(*(visit(a) for a in node.args))

    return visit(expr), table


def _restore(expr: sympy.Expr, table: dict) -> sympy.Expr:
    return expr.xreplace(table) if table else expr


def _weight(node: sympy.Expr) -> sympy.Expr:
    """How each entry of the body counts in the reduction's derivative."""
    if isinstance(node, LogSumExp):
        return sympy.exp(node.args[0] - node)
    if isinstance(node, LogSoftmaxComplement):
        b, a = node.args
        log_p = b - LogSumExp(b)
        r = ClassSum(a * log_p)
        return sympy.exp(log_p + r - node + LogNotPicked(a)) - a * sympy.exp(r)
    return sympy.S.One


@functools.lru_cache(maxsize=None)
def _reduction_gradient(node: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    """D(node)_j: the derivative of a reduction (one number per row) in entry j of x."""
    body, table = _hide(node.args[0])
    w = _weight(node)
    out = w * _restore(sympy.diff(body, x), table)
    for symbol, inner in table.items():
        coef = sympy.diff(body, symbol)
        if coef != 0:
            out += ClassSum(w * _restore(coef, table)) * _reduction_gradient(inner, x)
    return out


def class_gradient(expr: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    """d expr / d x_j, per entry, for a row expression (or an entry expression: then the
    entry's own dependence on x_j counts on the diagonal only, as in the Hessian's diag)."""
    e, table = _hide(expr)
    out = _restore(sympy.diff(e, x), table)
    for symbol, node in table.items():
        coef = sympy.diff(e, symbol)
        if coef != 0:
            out += _restore(coef, table) * _reduction_gradient(node, x)
    return out


def class_hvp(expr: sympy.Expr, directions: dict) -> sympy.Expr:
    """The derivative of an entry (or row) expression along ``directions`` (x -> v_x). The
    stable forms of the entries with a rule of their own (``_ENTRY_JVP``) are differentiated
    by it, so a derivative of a stable gradient is built of stable forms again."""
    e, table = _hide(expr, entry_forms=True)
    out = sum((_restore(sympy.diff(e, x), table) * v for x, v in directions.items()), sympy.S.Zero)
    along = tuple(directions.items())
    for symbol, node in table.items():
        coef = sympy.diff(e, symbol)
        if coef != 0:
            inner = _reduction_hvp(node, along) if is_reduction(node) else _entry_jvp(node, along)
            out += _restore(coef, table) * inner
    return out


def _jvp_log_softmax(node, d):
    (z,) = node.args
    return Centered(d(z), z, node)


def _jvp_centered(node, d):
    # d(b - sum(p*b)) = (db - sum(p*db)) - sum(dp*b), dp = p*centered(dz), and sum(dp*b) is
    # sum(dp*centered(b)) (dp sums to 0)
    b, z, log_p = node.args
    return Centered(d(b), z, log_p) - ClassSum(
        sympy.exp(log_p) * Centered(d(z), z, log_p) * node
    )


def _jvp_centered_diff(node, d):
    a, c, z, log_p = node.args
    return Centered(d(a) - d(c), z, log_p) - ClassSum(
        sympy.exp(log_p) * Centered(d(z), z, log_p) * node
    )


def _jvp_softmax_diff(node, d):
    b, a = node.args
    return SoftmaxDiffJvp(b, a, d(b), d(a))


def _jvp_sum_others(node, d):
    return SumOthers(d(node.args[0]))


def _entry_jvp(node: sympy.Expr, directions: tuple) -> sympy.Expr:
    rule = next(r for cls, r in _ENTRY_JVP.items() if isinstance(node, cls))
    return rule(node, lambda e: class_hvp(e, dict(directions)))


@functools.lru_cache(maxsize=None)
def _reduction_hvp(node: sympy.Expr, directions: tuple) -> sympy.Expr:
    return ClassSum(_weight(node) * class_hvp(node.args[0], dict(directions)))


def class_hess(entry: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    """The block d entry_i / d x_j of the gradient entry ``entry`` as a HessBlock: the
    diagonal whole (the direct part plus each pair's u_i w_i, simplified together), then the
    pairs (u, w)."""
    e, table = _hide(entry)
    diagonal = _restore(sympy.diff(e, x), table)
    pairs = []
    for symbol, node in table.items():
        coef = sympy.diff(e, symbol)
        w = _reduction_gradient(node, x)
        if coef != 0 and w != 0:
            u = _restore(coef, table)
            pairs += [u, w]
            diagonal += u * w
    return HessBlock(sympy.factor_terms(diagonal), *pairs)


def _picked_softmax(node: sympy.Expr):
    """(b, a) where node is pick(softmax(b), k) = sum(a*exp(b - logsumexp(b))), a = onehot(k)."""
    if not isinstance(node, ClassSum):
        return None
    factors = sympy.Mul.make_args(node.args[0])
    hot = [f for f in factors if isinstance(f, OneHot)]
    exps = [f for f in factors if isinstance(f, sympy.exp)]
    if len(hot) != 1 or len(exps) != 1 or len(factors) != 2:
        return None
    u = exps[0].args[0]
    for lse in u.atoms(LogSumExp):
        b = lse.args[0]
        if sympy.expand(u - (b - lse)) == 0:
            return b, hot[0]
    return None


def picked_forms(expr: sympy.Expr) -> sympy.Expr:
    """The probability p_k = pick(softmax(b), k) of one class, in log space: log(p_k) ->
    pick(log_softmax(b), k), 1 - p_k -> exp(log_softmax_complement(b, onehot(k))) and a power
    of that exponential -> the exponential of a multiple. (1 - p_k)**gamma at b_k = 1e4 is
    then exp(gamma*(log 2 - 1e4)), not 0**gamma, and its derivatives are products of
    exponentials, not 0*inf.)"""

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if isinstance(node, sympy.log):
            found = _picked_softmax(node.args[0])
            if found is not None:
                b, a = found
                return ClassSum(a * (b - LogSumExp(b)))
        if node.is_Add:
            for term in node.args:
                found = _picked_softmax(-term)
                if found is not None and sympy.expand(node - term) == 1:
                    return sympy.exp(LogSoftmaxComplement(*found))
        if node.is_Pow and isinstance(node.base, sympy.exp):
            return sympy.exp(node.exp * node.base.args[0])
        return node

    return visit(expr)


def diagonal_from_hvp(hvp: sympy.Expr, v: sympy.Symbol) -> sympy.Expr | None:
    """The diagonal H_cc of a Hessian block from its product with v (entry c of the product at
    v = e_c): v itself is 1, sum(f*v) is f_c, centered(v, b, log_p) is 1 - p_c =
    -expm1(log_p_c), sum(f*centered(v, b, log_p)) is f_c - p_c*sum(f) = -(f_c*expm1(log_p_c) +
    p_c*(sum(f) - f_c)) and sum_others(v) is 0. The stable forms of the product carry over, where
    the diagonal formed as d/dx_c of the gradient entry sums terms that cancel. None where v
    appears otherwise (inside a nested sum, or in another primitive)."""
    from sympy.codegen.cfunctions import expm1

    class Unsupported(Exception):
        pass

    def visit(node):
        if not node.has(v):
            return node
        if node == v:
            return sympy.S.One
        if isinstance(node, ClassSum):
            # body = sum over the pieces A that carry v of f_A*A: v itself (f_c), a sum inside
            # (sum(f)*its entry c), centered(v, b, log_p) (f_c - p_c*sum(f), as the
            # cross-entropy gradient's complement form)
            pieces = [a for a in sympy.preorder_traversal(node.args[0]) if (
                isinstance(a, (ClassSum, Centered)) and a.has(v))]
            outer = [a for a in pieces if not any(a != b and b.has(a) for b in pieces)]
            markers = {a: sympy.Dummy("piece") for a in outer}
            body = node.args[0].xreplace(markers)
            outer.append(v)
            markers[v] = v
            total, rest = sympy.S.Zero, body
            for a in outer:
                f = sympy.diff(body, markers[a])
                if f.has(v, *markers.values()):
                    raise Unsupported
                rest = rest.xreplace({markers[a]: sympy.S.Zero})
                if a == v:
                    total += f
                elif isinstance(a, ClassSum):
                    total += ClassSum(f) * visit(a)
                elif a.args[0] == v:
                    log_p = a.args[2]
                    total += -(f * expm1(log_p) + sympy.exp(log_p) * _others(f))
                else:
                    raise Unsupported
            if sympy.expand(rest) != 0:
                raise Unsupported
            return total
        if isinstance(node, Centered) and node.args[0] == v:
            return -expm1(node.args[2])
        if isinstance(node, SumOthers) and node.args[0] == v:
            return sympy.S.Zero
        if isinstance(node, Primitive) or node.is_Atom or not node.args:
            raise Unsupported
        return node.func(*(visit(a) for a in node.args))

    try:
        return visit(hvp)
    except Unsupported:
        return None


def log_softmax_forms(expr: sympy.Expr) -> sympy.Expr:
    """b - logsumexp(b) -> LogSoftmax(b) wherever a sum holds both (the largest entry's
    log-probability near 0 keeps its digits)."""

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if not node.is_Add:
            return node
        for term in node.args:
            for lse in (f for f in sympy.Mul.make_args(term) if isinstance(f, LogSumExp)):
                # term = k*logsumexp(b) = k*b - k*log_softmax(b): taken where k*b cancels
                # against the other terms
                k, body = term / lse, lse.args[0]
                remainder = sympy.expand(node - term + k * body)
                others = sympy.expand(node - term)
                if sympy.count_ops(remainder) <= sympy.count_ops(others):
                    return visit(remainder) - k * LogSoftmax(body)
        return node

    return visit(expr)


def relative_entropy_forms(expr: sympy.Expr) -> sympy.Expr:
    """sum(exp(A)*(A - B)) with A, B log-softmaxes of a and b -> SoftmaxKL(a, b): a
    divergence of two softmax distributions, summed as terms of one sign (the form of
    ``log_softmax_forms``'s output)."""

    def match(body):
        for factor in sympy.Mul.make_args(body):
            if isinstance(factor, sympy.exp) and isinstance(factor.args[0], LogSoftmax):
                a = factor.args[0]
                for b in body.atoms(LogSoftmax):
                    if b != a and sympy.expand(body - factor * (a - b)) == 0:
                        return SoftmaxKL(a.args[0], b.args[0])
        return None

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        if isinstance(node, ClassSum):
            found = match(node.args[0])
            if found is not None:
                return found
        return node.func(*(visit(a) for a in node.args))

    return visit(expr)


def one_minus_exp(expr: sympy.Expr) -> sympy.Expr:
    """1 - exp(u) -> -expm1(u), and exp(u) - 1 -> expm1(u), anywhere in ``expr``."""
    from sympy.codegen.cfunctions import expm1

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if node.is_Add and len(node.args) == 2:
            a, b = node.args
            for one, other in ((a, b), (b, a)):
                if abs(one) == 1 and isinstance(-other * one, sympy.exp):
                    return -one * expm1((-other * one).args[0])
        return node

    return visit(expr)


def _others(f: sympy.Expr) -> sympy.Expr:
    """sum(f) - f per entry: for f = c*onehot(k) exactly that (the row has one nonzero
    entry, its sum is exact), else the compensated SumOthers."""
    if any(isinstance(factor, OneHot) for factor in sympy.Mul.make_args(f)):
        return ClassSum(f) - f
    return SumOthers(f)


def _two_inputs(g: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(a, c) with g = a - c, each of a and c a term in one input along the axis (a different
    one), where the row shift left such a difference (x/T - t/T)."""
    entries = _ENTRIES.get()
    terms = sympy.Add.make_args(g)
    if not entries or len(terms) != 2:
        return None
    inputs = [t.free_symbols & entries for t in terms]
    if any(len(i) != 1 for i in inputs) or inputs[0] == inputs[1]:
        return None
    return terms[0], -terms[1]


def _row_shifted(g: sympy.Expr) -> sympy.Expr:
    """g less what is one number per row: b - sum(p*b) is the same for b + c, c constant along
    the row (p sums to 1). So log_softmax(z) is z there (a difference of two log-softmaxes is
    the difference of their arguments, with no rounded logsumexp in it), and terms free of the
    entries go."""
    if not g.has(LogSoftmax):
        return g
    shifted = sympy.expand(g.replace(LogSoftmax, lambda z: z))
    entries = _ENTRIES.get()
    if not entries:
        return g

    def per_entry(term):
        # a symbol of the entries outside every reduction
        plain = term.replace(lambda n: is_reduction(n), lambda n: sympy.S.One)
        return bool(plain.free_symbols & entries)

    kept = [t for t in sympy.Add.make_args(shifted) if per_entry(t)]
    if not kept:
        return g
    shifts = _SHIFTS.get()
    if shifts is not None:
        shifts.append(g)
    return sympy.Add(*kept)


def _centered(lone: sympy.Expr, mu: sympy.Expr, f: sympy.Expr) -> sympy.Expr | None:
    """lam*g + mu*sum(p*g) with mu = -lam and p = exp(LogSoftmax(b)): lam*Centered(g, b)."""
    for factor in sympy.Mul.make_args(f):
        if isinstance(factor, sympy.exp) and isinstance(factor.args[0], LogSoftmax):
            g = f / factor
            if g.has(ClassSum) or g == 0:
                continue
            lam = lone / g
            if sympy.expand(lam + mu, deep=True) != 0:
                try:  # (r + 1) / (-r - 1): cancelled only on request
                    lam = sympy.cancel(lam)
                except sympy.PolynomialError:
                    continue
                if sympy.expand(lam + mu, deep=True) != 0:
                    continue
            log_p = factor.args[0]
            shifted = _row_shifted(g)
            split = _two_inputs(shifted)
            if split is not None:
                return lam * CenteredDiff(*split, log_p.args[0], log_p)
            return lam * Centered(shifted, log_p.args[0], log_p)
    return None


def _nonnegative(f: sympy.Expr, nonneg: frozenset) -> bool:
    """Whether every factor of the product f is >= 0 by its form: exp(...), a number >= 0, a
    symbol whose domain is >= 0, a one-hot entry, the number of classes."""
    for factor in sympy.Mul.make_args(f):
        base, power = factor.as_base_exp()
        # (is_real is None for t/T: a parameter is real, and its domain keeps it from 0)
        if power.is_real is False:
            return False
        if isinstance(factor, sympy.exp) or isinstance(base, (OneHot, NumClasses)):
            continue
        if base.is_Number and base >= 0 or base in nonneg:
            continue
        return False
    return True


def _softmax_delta(lone: sympy.Expr, mu: sympy.Expr, f: sympy.Expr) -> sympy.Expr | None:
    """lam*f + mu*sum(f) with mu = -lam*exp(LogSoftmax(b)): -lam*SoftmaxDelta(b, f), the
    cross-entropy gradient's p*A - a, for soft targets (one-hot ones keep the plain form, exact
    for them)."""
    if f.has(OneHot) or not _nonnegative(f, _NONNEG.get()):
        return None
    lam = lone / f
    if lam.has(ClassSum) or lam == 0:
        return None
    p = sympy.powsimp(sympy.expand(-mu / lam))
    if not (isinstance(p, sympy.exp) and isinstance(p.args[0], LogSoftmax)):
        return None
    from sympy.codegen.cfunctions import expm1

    b = p.args[0].args[0]
    if isinstance(f, sympy.exp) and isinstance(f.args[0], LogSoftmax):
        # the targets are a softmax too (they sum to 1): p - q from the two logits
        return -lam * SoftmaxDiff(b, f.args[0].args[0])
    plain = f * expm1(p.args[0]) + p * SumOthers(f)
    return -lam * SoftmaxDelta(b, f, plain)


#: the symbols (inputs, parameters) whose domain is >= 0, for the spec being derived
_NONNEG: contextvars.ContextVar[frozenset] = contextvars.ContextVar("nonneg", default=frozenset())
#: the symbols of the inputs along the class axis, for the spec being derived
_ENTRIES: contextvars.ContextVar[frozenset] = contextvars.ContextVar("entries", default=frozenset())
#: where a caller asks: the arguments of b - sum(p*b) that ``_row_shifted`` changed
_SHIFTS: contextvars.ContextVar[list | None] = contextvars.ContextVar("shifts", default=None)


def complements(
    expr: sympy.Expr, nonneg: frozenset = frozenset(), entries: frozenset = frozenset(),
    shifts: list | None = None,
) -> sympy.Expr:
    """A term lam*e beside mu*sum(f), where e*(lam + mu*f/e) has a factor 1 - exp(u): the
    entry's own term of the sum joins it, lam*e + mu*sum(f) = (lam*e + mu*f) + mu*others(f),
    and 1 - exp(u) becomes -expm1(u). So softmax's p_c*A - a_c is a_c*(-expm1(log p_c))
    - p_c*(the other entries' sum), with no cancellation as p_c -> 1."""

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if not node.is_Add:
            return node
        terms = list(node.args)
        for i, s in enumerate(terms):
            sums = [f for f in sympy.Mul.make_args(s) if isinstance(f, ClassSum)]
            for total in sums:
                mu = s / total
                f = sympy.factor_terms(total.args[0])
                # the other terms together (the Jacobian of a softmax applied to r + 1 comes as
                # q*r + q beside q*sum(-q*(r + 1))), then each on its own
                others = sympy.Add(*(t for k, t in enumerate(terms) if k != i))
                if len(terms) > 2 and not others.has(ClassSum):
                    centered = _centered(sympy.factor_terms(others), mu, f)
                    if centered is not None:
                        return visit(centered)
                for j, lone in enumerate(terms):
                    if j == i:
                        continue
                    centered = _centered(lone, mu, f)
                    if centered is not None:
                        rest = [t for k, t in enumerate(terms) if k not in (i, j)]
                        return visit(sympy.Add(*rest, centered))
                    delta = _softmax_delta(lone, mu, f)
                    if delta is not None:
                        rest = [t for k, t in enumerate(terms) if k not in (i, j)]
                        return visit(sympy.Add(*rest, delta))
                    joined = sympy.factor(lone + mu * f)
                    stable = one_minus_exp(joined)
                    if stable == joined or sympy.count_ops(stable) > sympy.count_ops(lone) + 12:
                        continue
                    rest = [t for k, t in enumerate(terms) if k not in (i, j)]
                    return visit(sympy.Add(*rest, stable, mu * _others(f)))
        return node

    tokens = (
        (_NONNEG, _NONNEG.set(frozenset(nonneg))), (_ENTRIES, _ENTRIES.set(frozenset(entries))),
        (_SHIFTS, _SHIFTS.set(shifts)),
    )
    try:
        return visit(expr)
    finally:
        for var, token in tokens:
            var.reset(token)


def merge_sums(expr: sympy.Expr) -> sympy.Expr:
    """c1*sum(f) + c2*sum(g) -> sum(c1*f + c2*g), for coefficients of one number per row: a
    loss written as two reductions (label smoothing's (1 - eps)*pick(...) + eps*mean(...)) is
    derived as one, so that its gradient is one p*A - a, not two that cancel."""

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if not node.is_Add:
            return node
        inside, outside = [], []
        for term in node.args:
            sums = [f for f in sympy.Mul.make_args(term) if isinstance(f, ClassSum)]
            if len(sums) == 1 and not (term / sums[0]).has(ClassSum, LogSumExp):
                inside.append((term / sums[0]) * sums[0].args[0])
            else:
                outside.append(term)
        if len(inside) < 2:
            return node
        return sympy.Add(*outside, ClassSum(sympy.factor_terms(sympy.Add(*inside))))

    return visit(expr)


def ratio_complement(expr: sympy.Expr, constants: frozenset) -> sympy.Expr:
    """c - N/D with N and D sums over the axis -> (c*D - N)/D, the numerator merged into one
    sum (``one_signed``): soft Dice's 1 - (2*sum(p*y) + s)/(sum(p) + sum(y) + s) is
    sum(p*(1 - y) + (1 - p)*y)/(sum(p) + sum(y) + s), no difference of two numbers near 1."""
    if expr.is_Atom or not expr.args:
        return expr
    expr = expr.func(*(ratio_complement(a, constants) for a in expr.args))
    if not (expr.is_Add and len(expr.args) == 2 and any(a.is_Number for a in expr.args)):
        return expr
    numerator, denominator = sympy.fraction(sympy.together(expr))
    if not denominator.has(ClassSum):
        return expr
    merged = one_signed(numerator, constants)
    return expr if merged is None else merged / denominator


def one_signed(expr: sympy.Expr, constants: frozenset) -> sympy.Expr | None:
    """A combination of sums over the axis merged into one sum (None where it does not merge),
    its body, where it is affine in a constant input y with values in [0, 1] (a0 + a1*y), as
    a0*(1 - y) + (a0 + a1)*y, 1 - sigmoid(x) as sigmoid(-x): terms of one sign where a0 and
    a0 + a1 have one, as D - N = sum(p*(1 - y) + (1 - p)*y) for D = s + sum(p + y) and
    N = s + 2*sum(p*y)."""
    from ._primitives import Sigmoid

    merged = merge_sums(sympy.expand(expr))
    # (a sum takes a number out of its body: 2*sum(f) is a Mul)
    sums = [
        f for t in sympy.Add.make_args(merged) for f in sympy.Mul.make_args(t)
        if isinstance(f, ClassSum)
    ]
    if len(sums) != 1:
        return None
    body = sympy.expand(sums[0].args[0])
    for y in sorted(body.free_symbols & constants, key=str):
        if sympy.degree(body, y) != 1 or not body.is_polynomial(y):
            continue
        a1, a0 = body.coeff(y, 1), body.coeff(y, 0)
        both = sympy.factor_terms(sympy.expand(a0 + a1)).replace(
            lambda n: n.is_Add, lambda n: _one_minus_sigmoid(n, Sigmoid)
        )
        body = a0 * (1 - y) + both * y
        break
    return merged.xreplace({sums[0]: ClassSum(body)})


def factored(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` factored with each reduction held as one symbol."""
    hidden, table = _hide(expr)
    return _restore(sympy.factor(hidden), table)


def sigmoid_differences(expr: sympy.Expr) -> sympy.Expr:
    """c*sigmoid(u) - c*sigmoid(-u) -> c*tanh(u/2): the difference of two numbers near 1/2
    loses its digits where u is near 0, tanh keeps them."""
    from ._primitives import Sigmoid

    def visit(node):
        if node.is_Atom or not node.args:
            return node
        node = node.func(*(visit(a) for a in node.args))
        if not node.is_Add:
            return node
        terms = list(node.args)
        for i, term in enumerate(terms):
            sigmoids = [f for f in sympy.Mul.make_args(term) if isinstance(f, Sigmoid)]
            if len(sigmoids) != 1:
                continue
            (sig,) = sigmoids
            c = term / sig
            mirror = -c * Sigmoid(-sig.args[0])
            for j, other in enumerate(terms):
                if j != i and sympy.expand(other - mirror) == 0:
                    rest = [t for k, t in enumerate(terms) if k not in (i, j)]
                    return visit(sympy.Add(*rest, c * sympy.tanh(sig.args[0] / 2)))
        return node

    return visit(expr)


def corner_pairs(pairs: list, constants: frozenset, entries: frozenset) -> list | None:
    """The off-diagonal part sum_k u_k w_k^T of a Hessian block, where its entry (i, j) is
    affine in y_i and in y_j for one constant input y with values in [0, 1], written at the
    corners: sum over c, d in {0, 1} of f(c, d)*b_c(y_i)*b_d(y_j), b_1(y) = y, b_0(y) = 1 - y,
    each f(c, d) = g(entry i)*h(entry j)*S with S one number per row whose numerator is
    merged into one sum (``one_signed``). For hard targets one corner is left per pair, and S
    keeps its digits: soft Dice's 2*a_i*a_j*(y_i + y_j - N/D)/D**2 at y_i + y_j = 1 is
    2*a_i*a_j*sum(p*(1 - y) + (1 - p)*y)/D**3, not a difference of two numbers near 1. None
    where the block is not of that form."""
    hidden, table = _hide(sympy.Tuple(*pairs))
    ys = sorted(hidden.free_symbols & constants & entries, key=str)
    if len(ys) != 1:
        return None
    (y,) = ys
    if not all(e.is_polynomial(y) and sympy.degree(e, y) <= 1 for e in hidden):
        return None
    us, ws = hidden[0::2], hidden[1::2]

    def split(e):  # (one number per row, the entry's part)
        scalar, part = sympy.factor(e).as_independent(*entries, as_Add=False)
        return scalar, part

    out = []
    for c in (0, 1):
        for d in (0, 1):
            scalar, i_part, j_part = sympy.S.Zero, None, None
            for u, w in zip(us, ws):
                su, pu = split(u.subs(y, c))
                sw, pw = split(w.subs(y, d))
                if su * sw == 0 or pu == 0 or pw == 0:
                    continue
                i_part, j_part = i_part or pu, j_part or pw
                ru, rw = sympy.cancel(pu / i_part), sympy.cancel(pw / j_part)
                if not (ru.is_Number and rw.is_Number):
                    return None
                scalar += su * sw * ru * rw
            scalar = sympy.together(scalar)
            if i_part is None or scalar == 0:
                continue
            numerator, denominator = sympy.fraction(scalar)
            merged = one_signed(_restore(numerator, table), constants)
            numerator = _restore(numerator, table) if merged is None else merged
            corner = {0: 1 - y, 1: y}
            out += [
                corner[c] * _restore(i_part, table) * numerator / _restore(denominator, table),
                corner[d] * _restore(j_part, table),
            ]
    return out


def _one_minus_sigmoid(node: sympy.Expr, sigmoid) -> sympy.Expr:
    """1 - sigmoid(x) -> sigmoid(-x)."""
    for term in node.args:
        if isinstance(-term, sigmoid) and sympy.expand(node - 1 + (-term)) == 0:
            return sigmoid(-(-term).args[0])
    return node


def expand(expr: sympy.Expr, entries: dict, index: dict | None = None) -> sympy.Expr:
    """The row expression for a fixed number of classes, in plain SymPy: ``entries`` maps each
    classes symbol to its list of per-entry symbols; ``index`` maps an index symbol to its
    one-hot list (for the oracle)."""
    n = len(next(iter(entries.values())))
    index = index or {}
    memo: dict = {}

    def at(node, c):
        # a reduction is one number per row, whichever entry it is read from: written out
        # once (each entry of a hinge holds pick(x, k), a sum over the C entries)
        key = (node, None if isinstance(node, REDUCTIONS) else c)
        if key not in memo:
            memo[key] = written(node, c)
        return memo[key]

    def written(node, c):
        if isinstance(node, ClassSum):
            return sympy.Add(*(at(node.args[0], j) for j in range(n)))
        if isinstance(node, LogSumExp):
            return sympy.log(sympy.Add(*(sympy.exp(at(node.args[0], j)) for j in range(n))))
        if isinstance(node, LogSoftmax):
            body = node.args[0]
            return at(body, c) - sympy.log(sympy.Add(*(sympy.exp(at(body, j)) for j in range(n))))
        if isinstance(node, LogSoftmaxComplement):
            return at(LogSoftmaxComplement.textbook(*node.args), c)
        if isinstance(node, OneHot):
            return index[node.args[0]][c]
        if isinstance(node, NumClasses):
            return sympy.Integer(n)
        if node in entries:
            if c is None:
                raise ValueError(f"{node} outside a reduction over the class axis")
            return entries[node][c]
        if node.is_Atom or not node.args:
            return node
        args = (at(a, c) for a in node.args)
        if isinstance(node, (sympy.Max, sympy.Min)):
            # (SymPy orders a Max's arguments by asking which is larger: over a sum of C
            # terms that takes a second per entry)
            return node.func(*args, evaluate=False)
        return node.func(*args)

    return at(expr, None)


#: the stable forms of the entries that class_hvp differentiates by a rule of their own:
#: each rule takes the node and d (the derivative of an argument along the directions)
_ENTRY_JVP = {
    LogSoftmax: _jvp_log_softmax,
    Centered: _jvp_centered,
    CenteredDiff: _jvp_centered_diff,
    SoftmaxDiff: _jvp_softmax_diff,
    SumOthers: _jvp_sum_others,
}
