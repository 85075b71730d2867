"""Grading an implementation of a spec against its oracle fixture, with ``lossgen.metrics``.

An implementation is anything that maps the fixture's columns (numpy arrays of one dtype) to
``{label: array}`` for the oracle's labels ("value", "grad[0]", "hess[0][0]", ...): a
generated module, the spec's naive formula autodiffed in a backend, or a library's function.
Used by the test suite and by the accuracy benchmark alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from . import metrics
from ._types import AXIS_SHAPES, Spec

__all__ = [
    "Grade",
    "autodiff_outputs",
    "generated_outputs",
    "grade",
    "naive_function",
    "to_backend",
    "to_numpy",
]

Outputs = Mapping[str, np.ndarray]
Implementation = Callable[[Mapping[str, np.ndarray], str], Outputs]


def to_backend(array, backend: str, dtype: str):
    """``array`` as a ``backend`` array of ``dtype`` (float16 and bfloat16 included)."""
    if dtype == "bfloat16":
        wide = np.asarray(array, dtype=np.float32)
        if backend == "jax":
            import jax.numpy as jnp

            return jnp.asarray(wide, dtype=jnp.bfloat16)
        if backend == "torch":
            import torch

            return torch.from_numpy(wide.copy()).to(torch.bfloat16)
        return wide.astype(metrics.as_dtype("bfloat16"))
    array = np.asarray(array, dtype=dtype)
    if backend == "numpy":
        return array
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    import torch

    return torch.from_numpy(array.copy())


def to_numpy(result):
    if isinstance(result, tuple):
        return tuple(to_numpy(r) for r in result)
    if hasattr(result, "detach"):
        result = result.detach().cpu()
        if result._is_zerotensor():  # torch's double backward of abs, sign, ...: no storage
            result = result.new_zeros(result.shape)
        if str(result.dtype) == "torch.bfloat16":
            return result.float().numpy().astype(metrics.as_dtype("bfloat16"))
        return result.numpy()
    return np.asarray(result)


def _stack(columns: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Columns ``name[0]``, ``name[1]``, ... as one (rows, C) array."""
    n = sum(1 for key in columns if key.startswith(f"{name}["))
    return np.stack([columns[f"{name}[{c}]"] for c in range(n)], axis=-1)


def class_outputs(spec: Spec, module, backend: str) -> Implementation:
    """The generated module of a loss over a class axis as an implementation: the fixture's
    entry columns stacked into rows, the outputs split into components (value, grad[c],
    hvp[c], hess[c][d])."""

    def run(columns: Mapping[str, np.ndarray], dtype: str) -> Outputs:
        inputs = [
            to_backend(_stack(columns, i.name) if i.shape in AXIS_SHAPES else columns[i.name], backend, dtype)
            for i in spec.inputs
        ]
        params = {
            p.name: to_backend(columns[p.name], backend, dtype)[..., None]
            for p in spec.params
            if p.name in columns
        }
        value = to_numpy(module.value(*inputs, **params))
        out = {"value": value}
        if len(spec.differentiated) > 1:
            vs = tuple(
                to_backend(_stack(columns, f"v{k}"), backend, dtype)
                for k in range(len(spec.differentiated))
            )
            grads = to_numpy(module.grad(*inputs, **params))
            hvps = to_numpy(module.hvp(*inputs, vs, **params))
            for k, (g, h) in enumerate(zip(grads, hvps)):
                out.update({f"grad[{k}][{c}]": g[..., c] for c in range(g.shape[-1])})
                out.update({f"hvp[{k}][{c}]": h[..., c] for c in range(h.shape[-1])})
            return out
        v = to_backend(_stack(columns, "v"), backend, dtype)
        grad = to_numpy(module.grad(*inputs, **params))
        hvp = to_numpy(module.hvp(*inputs, v, **params))
        hess = to_numpy(module.hess(*inputs, **params))
        n = grad.shape[-1]
        out.update({f"grad[{c}]": grad[..., c] for c in range(n)})
        out.update({f"hvp[{c}]": hvp[..., c] for c in range(n)})
        out.update({f"hess[{i}][{j}]": hess[..., i, j] for i in range(n) for j in range(n)})
        return out

    return run


def batch_outputs(spec: Spec, module, backend: str, shape: tuple[int, int]) -> Implementation:
    """The generated module of a loss over a batch of ``shape`` = (B, D) as an implementation:
    the fixture's entry columns ``z[k]`` as one (points, B, D) array, the outputs split into
    components (value[i] for row i, grad[k] and hvp[k] for entry k)."""
    b, d = shape

    def run(columns: Mapping[str, np.ndarray], dtype: str) -> Outputs:
        (z,) = spec.inputs
        rows = to_backend(_stack(columns, z.name).reshape(-1, b, d), backend, dtype)
        v = to_backend(_stack(columns, "v").reshape(-1, b, d), backend, dtype)
        params = {
            p.name: to_backend(columns[p.name], backend, dtype)[..., None, None]
            for p in spec.params
            if p.name in columns
        }
        value = to_numpy(module.value(rows, **params))
        grad = to_numpy(module.grad(rows, **params)).reshape(-1, b * d)
        hvp = to_numpy(module.hvp(rows, v, **params)).reshape(-1, b * d)
        out = {f"value[{i}]": value[:, i] for i in range(b)}
        out.update({f"grad[{k}]": grad[:, k] for k in range(b * d)})
        out.update({f"hvp[{k}]": hvp[:, k] for k in range(b * d)})
        return out

    return run


def generated_outputs(spec: Spec, module, backend: str, grid_name: str | None = None) -> Implementation:
    """The generated module of ``backend`` as an implementation (a loss over a batch needs the
    ``grid_name``: its grids differ in the batch's shape)."""
    if spec.is_batch:
        from ._grid import BATCH_GRIDS

        return batch_outputs(spec, module, backend, BATCH_GRIDS[grid_name])
    if spec.has_classes:
        return class_outputs(spec, module, backend)

    def run(columns: Mapping[str, np.ndarray], dtype: str) -> Outputs:
        inputs = [to_backend(columns[i.name], backend, dtype) for i in spec.inputs]
        params = {
            p.name: to_backend(columns[p.name], backend, dtype) for p in spec.params if p.name in columns
        }
        n = len(spec.differentiated)
        value = to_numpy(module.value(*inputs, **params))
        grad = to_numpy(module.grad(*inputs, **params))
        hess = to_numpy(module.hess(*inputs, **params))
        if n == 1:
            grad, hess = (grad,), ((hess,),)
        out = {"value": value}
        out.update({f"grad[{i}]": g for i, g in enumerate(grad)})
        out.update({f"hess[{i}][{j}]": h for i, row in enumerate(hess) for j, h in enumerate(row)})
        return out

    return run


@dataclass(frozen=True)
class Grade:
    label: str
    dtype: str
    bits: np.ndarray
    beyond: np.ndarray
    summary: metrics.ErrorSummary
    got: np.ndarray
    #: which fixture points were graded (the arrays above hold only those)
    points: np.ndarray

    @property
    def output(self) -> str:
        return self.label.split("[")[0]


def grade(implementation: Implementation, fixture: dict, dtype: str) -> list[Grade]:
    """Grade every output of ``implementation`` on ``fixture``'s points in ``dtype``.

    Left out: points the oracle refused, and points whose inputs are not exactly representable
    in ``dtype`` (float16 and bfloat16 grade the grid's representable points only).
    """
    np_dtype = metrics.as_dtype(dtype)
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in fixture["columns"].items()}
    keep = np.ones(len(next(iter(columns.values()))), dtype=bool)
    if fixture.get("refused"):
        keep[fixture["refused"]] = False
    with np.errstate(over="ignore"):  # (a value beyond the dtype's range is not representable)
        for values in columns.values():
            keep &= values.astype(np_dtype).astype(np.float64) == values
    outputs = implementation({k: v[keep] for k, v in columns.items()}, dtype)
    grades = []
    for label, truth in fixture["truth"].items():
        if label not in outputs:
            continue
        got = np.asarray(outputs[label]).astype(np_dtype)
        truths = [t for t, k in zip(truth, keep) if k]
        kappa = [c for c, k in zip(fixture["kappa"][label], keep) if k]
        bits, beyond, summary = metrics.error_report(got, truths, dtype, kappa=kappa)
        grades.append(Grade(label, dtype, bits, beyond, summary, got, keep))
    return grades


def naive_function(spec: Spec, backend: str) -> Callable:
    """The spec's textbook formula (sigmoid as 1 / (1 + exp(-x))) as a ``backend`` function of
    the inputs and params, for autodiff: what a user who types the formula gets."""
    import sympy

    from ._backends import print_expr
    from ._primitives import to_textbook

    expr = to_textbook(spec.expression())
    names = [i.name for i in spec.inputs] + [p.name for p in spec.params]
    code = f"lambda {', '.join(names)}: {print_expr(sympy.sympify(expr), backend)}"
    namespace: dict = {}
    exec(  # the printed formula, evaluated with the backend's own functions
        {"numpy": "import numpy as np", "jax": "import jax\nimport jax.numpy as jnp",
         "torch": "import torch"}[backend],
        namespace,
    )
    return eval(code, namespace)


def autodiff_outputs(spec: Spec, function: Callable, backend: str) -> Implementation:
    """value, gradient and elementwise Hessian of ``function`` by the backend's autodiff
    (torch: backward, then double backward; jax: grad of grad), for every differentiated input:
    "grad[i]" and, the loss being elementwise, the diagonal "hess[i][j]" of each 2-D block.

    ``function`` is called with the spec's inputs and params by name; a param that is not a
    column of the fixture (a categorical one, say) gets the spec's default."""
    diff = [i.name for i in spec.differentiated]
    names = [i.name for i in spec.inputs] + [p.name for p in spec.params]
    defaults = {p.name: p.default for p in spec.params}

    def run(columns: Mapping[str, np.ndarray], dtype: str) -> Outputs:
        args = {k: to_backend(v, backend, dtype) for k, v in columns.items()}
        fixed = {n: args[n] if n in args else defaults[n] for n in names if n in args or n in defaults}

        def f(*xs):
            return function(**{**fixed, **dict(zip(diff, xs))})

        n = len(diff)
        if backend == "torch":
            import torch

            xs = [args[x].clone().requires_grad_(True) for x in diff]
            value = f(*xs)
            grads = torch.autograd.grad(value.sum(), xs, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs)]
            hess = []
            for g in grads:
                row = (
                    torch.autograd.grad(g.sum(), xs, retain_graph=True, allow_unused=True)
                    if g.requires_grad else [None] * n
                )
                hess.append([torch.zeros_like(x) if h is None else h for h, x in zip(row, xs)])
        else:
            import jax

            xs = [args[x] for x in diff]
            argnums = tuple(range(n))
            g = jax.grad(lambda *v: f(*v).sum(), argnums=argnums)
            value = f(*xs)
            grads = g(*xs)
            hess = [jax.grad(lambda *v, i=i: g(*v)[i].sum(), argnums=argnums)(*xs) for i in range(n)]
        out = {"value": to_numpy(value)}
        out.update({f"grad[{i}]": to_numpy(gi) for i, gi in enumerate(grads)})
        out.update({f"hess[{i}][{j}]": to_numpy(h) for i, row in enumerate(hess) for j, h in enumerate(row)})
        return out

    return run
