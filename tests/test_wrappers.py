"""The training wrappers: `<name>(..., reduction=)` in every backend, the torch autograd.Function
and nn.Module, the jax custom_jvp, numpy's value_and_grad, low precision and validate=True.

The wrappers must differentiate through the generated grad and hess, not through autodiff of
value: gradcheck/gradgradcheck in float64, jax.grad == grad, jax.hessian == hess, and at
logits of +-1e4 (where autodiff of the textbook form gives NaN) finite results equal to the
generated ones.
"""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _support import FIXTURES, spec_paths

import lossgen
from lossgen._accuracy import autodiff_outputs, grade
from lossgen._fixtures import load_fixture

SPECS = {s.name: s for s in lossgen.load_specs(spec_paths())}
#: float64 results of two routes through the same generated code agree to a few ulps
TIGHT = dict(rtol=16 * np.finfo(np.float64).eps, atol=1e-300)


def _close_jit(got, want):
    """Under jit XLA may reassociate: a few ulps of the largest entry."""
    want = np.asarray(want)
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=64 * np.finfo(want.dtype).eps, atol=1e-14 * scale)


def _module(name, backend):
    try:
        return lossgen.load(name, backend)
    except ModuleNotFoundError:
        pytest.skip(f"generated/{backend}/{name}.py is missing (run `make generate`)")


def _spec(name):
    return SPECS[name]


def _axis(spec):
    """Whether the loss reduces over an axis (classes, a vector, a set): hess gives blocks."""
    return any(i.shape != "scalar" for i in spec.inputs)


def _inside(domain, rng, shape):
    """Values strictly inside ``domain`` (away from its ends), float64."""
    if domain.kind == "set":
        return rng.choice([float(e) for e in domain.elements], shape)
    if domain.kind == "index":
        return rng.integers(0, 3, shape).astype(float)
    lo, hi = domain.lo, domain.hi
    if lo.is_infinite and hi.is_infinite:
        return rng.uniform(-2, 2, shape)
    if hi.is_infinite:
        return float(lo) + rng.uniform(0.2, 3, shape)
    if lo.is_infinite:
        return float(hi) - rng.uniform(0.2, 3, shape)
    return float(lo) + (float(hi) - float(lo)) * rng.uniform(0.1, 0.9, shape)


#: rows and axis length of the inputs of a loss over an axis
_ROWS, _C = 3, 4


def _sample(spec, shape=(5,), seed=0):
    """Points inside the domains: elementwise inputs of ``shape``; for a loss over an axis,
    (3, 4) arrays (a distribution along the axis for a constant input on [0, 1]) and one
    class index per row."""
    rng = np.random.default_rng(seed)
    if not _axis(spec):
        return {i.name: _inside(i.domain, rng, shape) for i in spec.inputs}
    out = {}
    for i in spec.inputs:
        if i.shape == "batch":  # (an even number of rows: two views of each sample)
            out[i.name] = _inside(i.domain, rng, (_ROWS + 1, _C))
        elif i.shape == "scalar":
            out[i.name] = _inside(i.domain, rng, (_ROWS,))
        elif i.role == "constant" and i.domain.kind == "interval" and i.domain.hi == 1:
            out[i.name] = rng.dirichlet(np.ones(_C), _ROWS)
        else:
            out[i.name] = _inside(i.domain, rng, (_ROWS, _C))
    return out


def _param_sets(spec):
    """The defaults, once per choice of each categorical parameter."""
    choices = [p.choices if p.choices else (p.default,) for p in spec.params]
    return [dict(zip([p.name for p in spec.params], c)) for c in itertools.product(*choices)]


def _blocks(h, n):
    """hess(...) as nested rows, for one or several differentiated inputs."""
    return ((h,),) if n == 1 else h


def _tuple(g):
    return g if isinstance(g, tuple) else (g,)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_torch_gradcheck_and_gradgradcheck(name):
    spec = _spec(name)
    module = _module(name, "torch")
    wrapper = getattr(module, name)
    values = _sample(spec)
    diff = [i.name for i in spec.differentiated]
    for params in _param_sets(spec):
        tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
        leaves = [tensors[k].requires_grad_() for k in diff]

        def f(*xs, params=params):
            args = dict(tensors, **dict(zip(diff, xs)))
            return wrapper(*(args[i.name] for i in spec.inputs), **params, reduction="none")

        assert torch.autograd.gradcheck(f, leaves)
        assert torch.autograd.gradgradcheck(f, leaves)


def _diagonal_blocks(full, n_rows):
    """The (row, C, C) blocks on the diagonal of the Hessian of a sum over rows."""
    return np.stack([np.asarray(full)[r, :, r, :] for r in range(n_rows)])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_torch_autodiff_uses_generated_grad_and_hess(name):
    """backward gives grad(...); double backward gives hvp(...) and, by
    autograd.functional.hessian, hess (elementwise, or one block per row over an axis)."""
    spec = _spec(name)
    if spec.is_batch:
        pytest.skip("a loss over a batch has no hess: tests/test_batch.py checks its hvp")
    module = _module(name, "torch")
    wrapper = getattr(module, name)
    values = _sample(spec, seed=1)
    diff = [i.name for i in spec.differentiated]
    n = len(diff)
    rng = np.random.default_rng(11)
    for params in _param_sets(spec):
        args = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
        plain = [args[i.name] for i in spec.inputs]
        want_g = _tuple(module.grad(*plain, **params))
        want_h = _blocks(module.hess(*plain, **params), n)
        vs = [torch.tensor(rng.normal(size=args[k].shape)) for k in diff]
        want_hv = _tuple(module.hvp(*plain, tuple(vs) if n > 1 else vs[0], **params))

        def f(*xs, params=params):
            merged = dict(args, **dict(zip(diff, xs)))
            return wrapper(*(merged[i.name] for i in spec.inputs), **params, reduction="sum")

        leaves = [args[k].clone().requires_grad_() for k in diff]
        got_g = torch.autograd.grad(f(*leaves), leaves, create_graph=True)
        for got, want in zip(got_g, want_g):
            torch.testing.assert_close(got, want, **TIGHT)
        inner = sum((g * v).sum() for g, v in zip(got_g, vs))
        got_hv = torch.autograd.grad(inner, leaves, retain_graph=True, allow_unused=True)
        for got, want in zip(got_hv, want_hv):
            torch.testing.assert_close(got, want, **TIGHT)
        if not _axis(spec):
            for i in range(n):
                row = torch.autograd.grad(
                    got_g[i].sum(), leaves, retain_graph=True, allow_unused=True
                )
                for j in range(n):
                    torch.testing.assert_close(row[j], want_h[i][j], **TIGHT)
        if n == 1:
            full = torch.autograd.functional.hessian(f, leaves[0].detach())
            if not _axis(spec):
                torch.testing.assert_close(full.diagonal(), want_h[0][0], **TIGHT)
            else:
                # double backward runs hvp, hess its own formula: a few ulps of the block
                want = want_h[0][0]
                atol = 16 * np.finfo(np.float64).eps * float(want.abs().max())
                got = torch.as_tensor(_diagonal_blocks(full, _ROWS))
                torch.testing.assert_close(got, want, rtol=TIGHT["rtol"], atol=atol)


#: torch's forward mode loads its decompositions through torch.jit.script once, which warns
_JIT_WARNING = "ignore:.*torch.jit.script. is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(_JIT_WARNING)
# (the in-place scatter of the log-sum-exp's largest entry has no batching rule: vmap runs it
# per sample, with this warning)
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("name", sorted(SPECS))
def test_torch_func_transforms_use_generated_derivatives(name):
    """torch.func.grad gives grad(...), vmap of it gives grad(...) per sample (two samples
    stacked), and torch.func.hessian (forward over reverse, through the wrapper's jvp) and
    jacrev(jacfwd(.)) applied to v give hvp(...)."""
    spec = _spec(name)
    module = _module(name, "torch")
    wrapper = getattr(module, name)
    diff = [i.name for i in spec.differentiated]
    n = len(diff)
    argnums = tuple(range(n))
    samples = [
        {k: torch.tensor(v, dtype=torch.float64) for k, v in _sample(spec, seed=s).items()}
        for s in (2, 3)
    ]
    rng = np.random.default_rng(12)
    for params in _param_sets(spec):

        def f(*xs, args, params=params):
            merged = dict(args, **dict(zip(diff, xs)))
            return wrapper(*(merged[i.name] for i in spec.inputs), **params, reduction="sum")

        others = [k for k in samples[0] if k not in diff]

        def sample_grad(*xs_and_args):
            xs, rest = xs_and_args[:n], dict(zip(others, xs_and_args[n:]))
            return torch.func.grad(lambda *a: f(*a, args=rest), argnums=argnums)(*xs)

        stacked = [torch.stack([s[k] for s in samples]) for k in diff + others]
        got_vmap = torch.func.vmap(sample_grad)(*stacked)
        for k, args in enumerate(samples):
            plain = [args[i.name] for i in spec.inputs]
            want_g = _tuple(module.grad(*plain, **params))
            xs = [args[d] for d in diff]
            got_g = torch.func.grad(lambda *a: f(*a, args=args), argnums=argnums)(*xs)
            for got, got_v, want in zip(got_g, got_vmap, want_g):
                # (value and gradient from one pass, and batched kernels, may round or sum
                # differently: a few ulps of the largest entry)
                atol = 64 * np.finfo(np.float64).eps * float(want.abs().max())
                torch.testing.assert_close(got, want, rtol=TIGHT["rtol"], atol=atol)
                torch.testing.assert_close(got_v[k], want, rtol=TIGHT["rtol"], atol=atol)
            vs = [torch.tensor(rng.normal(size=x.shape)) for x in xs]
            want_hv = _tuple(module.hvp(*plain, tuple(vs) if n > 1 else vs[0], **params))
            # forward over reverse (torch.func.hessian), and reverse over forward
            for hessian in (torch.func.hessian, _reverse_over_forward):
                full = hessian(lambda *a: f(*a, args=args), argnums=argnums)(*xs)
                _assert_hessian_times(full, xs, vs, want_hv, (name, params, hessian))


def _reverse_over_forward(f, argnums):
    return torch.func.jacrev(torch.func.jacfwd(f, argnums=argnums), argnums=argnums)


def _assert_hessian_times(full, xs, vs, want_hv, label):
    """The nested Hessian blocks ``full`` applied to ``vs`` are hvp's ``want_hv``, within a few
    ulps of the terms the contraction adds."""
    n = len(xs)
    for i in range(n):
        got = sum(
            (full[i][j].reshape(xs[i].numel(), -1) @ vs[j].reshape(-1)).reshape(xs[i].shape)
            for j in range(n)
        )
        scale = sum(
            (full[i][j].abs().reshape(xs[i].numel(), -1) @ vs[j].abs().reshape(-1))
            for j in range(n)
        ).reshape(xs[i].shape)
        assert torch.isfinite(got).all()
        error = (got - want_hv[i]).abs()
        assert (error <= 16 * np.finfo(np.float64).eps * scale).all(), (label, i, got, want_hv[i])


@pytest.mark.filterwarnings(_JIT_WARNING)
@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_focal_at_extreme_logits_through_torch_func(gamma):
    """At x = +-1e4, torch.func.grad and torch.func.hessian through the wrapper are finite and
    the generated grad and hess (autodiff of the torchvision formula gives NaN there)."""
    tm = _module("sigmoid_focal_loss", "torch")
    x = torch.tensor([1e4, -1e4, 1e4, -1e4, 1e4, -1e4], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.25, 0.875], dtype=torch.float64)

    def f(a):
        return tm.sigmoid_focal_loss(a, y, gamma=gamma, reduction="sum")

    g = torch.func.grad(f)(x)
    h = torch.func.hessian(f)(x)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()
    torch.testing.assert_close(g, tm.grad(x, y, gamma=gamma), rtol=0, atol=0)
    torch.testing.assert_close(h, torch.diag(tm.hess(x, y, gamma=gamma)), rtol=0, atol=0)


#: the losses the torch wrapper computes in blocks of rows: not over a batch or a set
_BLOCKED = sorted(
    name for name, spec in SPECS.items()
    if not spec.is_batch and all(i.shape != "set" for i in spec.inputs)
)


@pytest.mark.parametrize("shape", [(10,), (7, 3)], ids=["1d", "2d"])
@pytest.mark.parametrize("name", _BLOCKED)
def test_torch_blocks_give_the_same_numbers(name, shape, monkeypatch):
    """On CPU the wrapper computes in blocks of rows (_BLOCK entries): the loss, its backward
    and its double backward are those of one block (float32, to rounding), with a constant
    input broadcast along the first axis (over a class axis: rows of classes and an index);
    so are value, grad, hess and hvp of an elementwise loss, and hess and hvp over a class axis
    (float64)."""
    spec = _spec(name)
    if _axis(spec) and shape != (10,):
        pytest.skip("a loss over an axis is sampled as (3, 4) rows")
    module = _module(name, "torch")
    assert module._BLOCK is not None
    wrapper = getattr(module, name)
    values = _sample(spec, shape=shape, seed=3)
    diff = [i.name for i in spec.differentiated]
    for i in spec.inputs:  # a constant input of one row, broadcast by the wrapper
        if i.role == "constant" and np.ndim(values[i.name]) == 2 and i.shape != "scalar":
            values[i.name] = values[i.name][:1]
    rng = np.random.default_rng(13)
    vs = [torch.tensor(rng.normal(size=np.shape(values[k])), dtype=torch.float32) for k in diff]

    def run(block):
        monkeypatch.setattr(module, "_BLOCK", block)
        calls = []
        original = module._call
        monkeypatch.setattr(module, "_call", lambda *a, **k: calls.append(1) or original(*a, **k))
        args = {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
        leaves = [args[k].requires_grad_() for k in diff]
        loss = wrapper(*(args[i.name] for i in spec.inputs), reduction="none")
        grads = torch.autograd.grad(loss.sum(), leaves, create_graph=True)
        inner = sum((g * v).sum() for g, v in zip(grads, vs))
        second = torch.autograd.grad(inner, leaves, allow_unused=True)
        out = [loss, *grads, *second]
        # and the module's own functions, on float64 tensors (over a class axis: hess and hvp)
        joins = []
        join = module._join
        monkeypatch.setattr(module, "_join", lambda parts: joins.append(1) or join(parts))
        plain = [torch.tensor(values[i.name]) for i in spec.inputs]
        v = tuple(w.double() for w in vs) if len(vs) > 1 else vs[0].double()
        if not _axis(spec):
            out += [module.value(*plain), *_tuple(module.grad(*plain))]
        out += _tuple(module.hvp(*plain, v))
        h = module.hess(*plain)
        out += [h] if torch.is_tensor(h) else [b for row in h for b in row]
        return out, (len(calls), len(joins))

    whole, (one, _) = run(None)
    blocked, (many, joined) = run(2 if _axis(spec) else 4)
    assert many > one and joined  # the blocks did run, in the wrapper and in the functions
    for got, want in zip(blocked, whole):
        if want is None:
            assert got is None
        else:
            # the same formula entry by entry; only an entry in a kernel's scalar tail (the
            # end of a block shorter than a vector) may round differently
            eps = float(torch.finfo(want.dtype).eps)
            got, want = got.detach(), want.detach()
            scale = float(want.abs().max())
            torch.testing.assert_close(got, want, rtol=4 * eps, atol=4 * eps * scale)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_jax_grad_and_hessian_are_the_generated_ones(name):
    """jax.grad is grad(...); jax.hessian is hess(...); jax.jvp of jax.grad is hvp(...)."""
    spec = _spec(name)
    if spec.is_batch:
        pytest.skip("a loss over a batch has no hess: tests/test_batch.py checks its hvp")
    module = _module(name, "jax")
    wrapper = getattr(module, name)
    values = _sample(spec, seed=2)
    diff = [spec.inputs.index(i) for i in spec.differentiated]
    n = len(diff)
    rng = np.random.default_rng(12)
    for params in _param_sets(spec):
        args = [jnp.asarray(values[i.name]) for i in spec.inputs]
        want_g = _tuple(module.grad(*args, **params))
        want_h = _blocks(module.hess(*args, **params), n)
        vs = [jnp.asarray(rng.normal(size=args[k].shape)) for k in diff]
        want_hv = _tuple(module.hvp(*args, tuple(vs) if n > 1 else vs[0], **params))

        def f(*a, params=params):
            return wrapper(*a, **params, reduction="sum")

        argnums = tuple(diff)
        got_g = jax.jit(jax.grad(f, argnums=argnums))(*args)
        for got, want in zip(got_g, want_g):
            _close_jit(got, want)
        if _axis(spec):
            # rows do not couple: the blocks on the diagonal of the full Hessian
            full = jax.jit(jax.hessian(f, argnums=argnums))(*args)
            for i in range(n):
                for j in range(n):
                    _close_jit(_diagonal_blocks(full[i][j], _ROWS), want_h[i][j])
        else:
            # per element: vmap over the points of the Hessian of the scalar loss
            got_h = jax.jit(jax.vmap(jax.hessian(f, argnums=argnums)))(*args)
            for i in range(n):
                for j in range(n):
                    _close_jit(got_h[i][j], want_h[i][j])

        # forward over reverse: jax.jvp of jax.grad is the generated hvp
        def g(*xs, args=args, f=f, argnums=argnums):
            merged = list(args)
            for k, x in zip(diff, xs):
                merged[k] = x
            return jax.grad(f, argnums=argnums)(*merged)

        _, got_hv = jax.jvp(g, [args[k] for k in diff], vs)
        for got, want in zip(got_hv, want_hv):
            _close_jit(got, want)
        # forward mode: the same grad
        tangents = [jnp.ones_like(a) if k in diff else jnp.zeros_like(a) for k, a in enumerate(args)]
        _, jvp = jax.jvp(f, args, tangents)
        # (a softmax gradient sums to 0 along its row: a few ulps of the terms' sizes)
        scale = float(sum(np.abs(g).sum() for g in want_g))
        want = float(sum(g.sum() for g in want_g))
        assert abs(float(jvp) - want) <= 64 * np.finfo(np.float64).eps * scale


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_focal_at_extreme_logits_through_autodiff(gamma):
    """At x = +-1e4 the wrappers' autodiff grad and Hessian are finite and the generated ones."""
    x = np.array([1e4, -1e4, 1e4, -1e4, 1e4, -1e4])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.25, 0.875])
    for dtype in ("float64", "float32"):
        tm = _module("sigmoid_focal_loss", "torch")
        xt = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
        yt = torch.tensor(y, dtype=getattr(torch, dtype))
        loss = tm.sigmoid_focal_loss(xt, yt, gamma=gamma, reduction="sum")
        (g,) = torch.autograd.grad(loss, xt, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), xt)
        assert torch.isfinite(g).all() and torch.isfinite(h).all()
        torch.testing.assert_close(g, tm.grad(xt.detach(), yt, gamma=gamma), rtol=0, atol=0)
        torch.testing.assert_close(h, tm.hess(xt.detach(), yt, gamma=gamma), rtol=0, atol=0)

        jm = _module("sigmoid_focal_loss", "jax")
        xj, yj = jnp.asarray(x, dtype=dtype), jnp.asarray(y, dtype=dtype)

        def f(a, b):
            return jm.sigmoid_focal_loss(a, b, gamma=gamma, reduction="sum")

        gj = jax.jit(jax.grad(f))(xj, yj)
        hj = jax.jit(jax.vmap(jax.hessian(f)))(xj, yj)
        assert np.isfinite(gj).all() and np.isfinite(hj).all()
        _close_jit(gj, jm.grad(xj, yj, gamma=gamma))
        _close_jit(hj, jm.hess(xj, yj, gamma=gamma))


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_focal_autodiff_through_the_wrapper_against_the_oracle(backend, dtype):
    """At x = +-1e4 with gamma = 0 or 0.5 (every label and alpha of the extreme grid there):
    the value, gradient and Hessian that autodiff takes through the wrapper (backward and
    double backward; jax.grad of jax.grad) graded against the committed oracle fixture, no
    NaN or Inf where the truth is finite and within 4 bits of the conditioning."""
    spec = _spec("sigmoid_focal_loss")
    module = _module("sigmoid_focal_loss", backend)
    fixture = load_fixture(FIXTURES, spec.name, "extreme")
    assert fixture is not None, "run `make fixtures` for sigmoid_focal_loss"
    x, gamma = np.asarray(fixture["columns"]["x"]), np.asarray(fixture["columns"]["gamma"])
    rows = np.isin(np.abs(x), [1e4]) & np.isin(gamma, [0.0, 0.5])
    rows[list(fixture.get("refused") or [])] = False
    picked = np.flatnonzero(rows)
    assert len(picked) >= 32
    part = {
        "columns": {k: [v[i] for i in picked] for k, v in fixture["columns"].items()},
        "truth": {k: [v[i] for i in picked] for k, v in fixture["truth"].items()},
        "kappa": {k: [v[i] for i in picked] for k, v in fixture["kappa"].items()},
        "refused": [],
    }

    def through_wrapper(**kw):
        return module.sigmoid_focal_loss(**kw, reduction="none")

    grades = grade(autodiff_outputs(spec, through_wrapper, backend), part, dtype)
    assert {g.label for g in grades} == {"value", "grad[0]", "hess[0][0]"}
    for g in grades:
        assert g.summary.count == len(picked), g.label
        assert g.summary.nonfinite == 0, f"{g.label}: NaN/Inf where the truth is finite"
        assert g.summary.max_beyond <= 4, (
            f"{g.label}: {g.summary.max_beyond:.1f} bits beyond conditioning"
        )


def _focal_args(backend, dtype="float64"):
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-3, 3, (1, 4)), rng.uniform(0, 1, (3, 4))
    if backend == "torch":
        return torch.tensor(x, dtype=getattr(torch, dtype)), torch.tensor(y)
    if backend == "jax":
        return jnp.asarray(x, dtype=dtype), jnp.asarray(y)
    return x.astype(dtype), y


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_reductions_scale_value_and_gradient(backend):
    """mean divides the value and the gradient by the broadcast size (12 here, x is (1, 4))."""
    module = _module("sigmoid_focal_loss", backend)
    x, y = _focal_args(backend)
    per_point = np.asarray(module.value(x, y, gamma=1.5))
    g = np.asarray(module.grad(x, y, gamma=1.5))
    size = per_point.size
    for reduction, scale in [("sum", 1.0), ("mean", 1.0 / size), ("none", None)]:
        loss = module.sigmoid_focal_loss(x, y, gamma=1.5, reduction=reduction)
        want = per_point if scale is None else per_point.sum() * scale
        np.testing.assert_allclose(np.asarray(loss), want, rtol=1e-14)
        weight = 1.0 if scale is None else scale
        if backend == "torch":
            xg = x.clone().requires_grad_()
            out = module.sigmoid_focal_loss(xg, y, gamma=1.5, reduction=reduction)
            out.backward(torch.ones_like(out))
            got = xg.grad.numpy()
        elif backend == "jax":
            got = jax.grad(
                lambda a: module.sigmoid_focal_loss(a, y, gamma=1.5, reduction=reduction).sum()
            )(x)
        else:
            value, got = module.value_and_grad(x, y, gamma=1.5, reduction=reduction)
            np.testing.assert_allclose(value, want, rtol=1e-14)
        assert np.shape(got) == (1, 4)
        np.testing.assert_allclose(got, g * weight, rtol=1e-14)
    with pytest.raises(ValueError, match="reduction must be one of"):
        module.sigmoid_focal_loss(x, y, reduction="average")


def test_torch_module_holds_params_and_reduction():
    module = _module("sigmoid_focal_loss", "torch")
    x, y = _focal_args("torch")
    loss = module.SigmoidFocalLoss(gamma=0.5, reduction="sum")
    assert isinstance(loss, torch.nn.Module)
    assert repr(loss) == "SigmoidFocalLoss(alpha=0.25, gamma=0.5, reduction='sum')"
    torch.testing.assert_close(loss(x, y), module.sigmoid_focal_loss(x, y, gamma=0.5, reduction="sum"))
    per_point = module.SigmoidFocalLoss(gamma=torch.tensor([0.0, 1.0, 2.0, 3.0]), reduction="none")
    assert "gamma" in dict(per_point.named_buffers())
    assert per_point(x, y).shape == (3, 4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_in_gives_low_precision_out(dtype):
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-3, 3, 8).astype(np.float32), rng.uniform(0, 1, 8).astype(np.float32)
    want = lossgen.load("sigmoid_focal_loss", "numpy").value(x.astype(np.float64), y).mean()

    tm = _module("sigmoid_focal_loss", "torch")
    xt = torch.tensor(x).to(getattr(torch, dtype)).requires_grad_()
    loss = tm.sigmoid_focal_loss(xt, torch.tensor(y))
    loss.backward()
    assert loss.dtype == xt.dtype and xt.grad.dtype == xt.dtype
    eps = torch.finfo(xt.dtype).eps
    # computed in float32 from the rounded x: one rounding of the result, plus x's own
    np.testing.assert_allclose(loss.float().item(), want, rtol=8 * eps)

    jm = _module("sigmoid_focal_loss", "jax")
    xj = jnp.asarray(x).astype(dtype)
    value, g = jax.value_and_grad(lambda a: jm.sigmoid_focal_loss(a, jnp.asarray(y)))(xj)
    assert value.dtype == xj.dtype and g.dtype == xj.dtype
    np.testing.assert_allclose(float(value), want, rtol=8 * eps)

    if dtype == "float16":
        nm = _module("sigmoid_focal_loss", "numpy")
        value, g = nm.value_and_grad(x.astype(np.float16), y)
        assert value.dtype == np.float16 and g.dtype == np.float16
        assert nm.sigmoid_focal_loss(x.astype(np.float16), y).dtype == np.float16


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_validate_names_the_argument(backend):
    module = _module("sigmoid_focal_loss", backend)
    x, y = _focal_args(backend)
    for function in (module.value, module.grad, module.hess, module.sigmoid_focal_loss):
        function(x, y, validate=True)  # inside the domain: no error
        with pytest.raises(ValueError, match=r"^y = 1\.5 lies outside its domain \[0, 1\]"):
            function(x, y * 0 + 1.5, validate=True)
        with pytest.raises(ValueError, match=r"^gamma = -1\.0 lies outside its domain \[0, oo\)"):
            function(x, y, gamma=-1.0, validate=True)
        function(x, y * 0 + 1.5)  # off by default: no check
    with pytest.raises(ValueError, match="alpha"):
        module.hvp(x, y, x, alpha=2.0, validate=True)
    if backend == "jax":
        with pytest.raises(ValueError, match="unavailable on traced arguments"):
            jax.jit(lambda a, b: module.value(a, b, validate=True))(x, y)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_nan_in_gives_nan_out(backend):
    module = _module("sigmoid_focal_loss", backend)
    x, y = _focal_args(backend)
    x = x * float("nan")
    for function in (module.value, module.grad, module.hess, module.sigmoid_focal_loss):
        assert np.isnan(np.asarray(function(x, y))).all()


def test_categorical_parameters_are_static_under_jit():
    spec = SPECS.get("gelu")
    if spec is None or not any(p.choices for p in spec.params):
        pytest.skip("no spec with a categorical parameter")
    module = _module("gelu", "jax")
    x = jnp.linspace(-3, 3, 7)
    for choice in next(p for p in spec.params if p.choices).choices:
        f = jax.jit(jax.grad(lambda a, c=choice: module.gelu(a, approximate=c, reduction="sum")))
        np.testing.assert_allclose(f(x), module.grad(x, approximate=choice), rtol=1e-12)


# dynamo itself instantiates torch.autograd.Function while tracing one (torch 2.13)
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        pytest.param(
            "inductor",
            marks=pytest.mark.skipif(
                not os.environ.get("LOSSGEN_SLOW"),
                reason="inductor compiles C++ for ~30 s on this CPU; set LOSSGEN_SLOW=1",
            ),
        ),
    ],
)
def test_torch_compile_forward_and_backward(backend):
    torch._dynamo.reset()
    module = _module("sigmoid_focal_loss", "torch")
    x, y = _focal_args("torch", "float32")
    compiled = torch.compile(
        lambda a, b: module.sigmoid_focal_loss(a, b, gamma=0.5), backend=backend, fullgraph=True
    )
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = compiled(xc, y), module.sigmoid_focal_loss(xe, y, gamma=0.5)
    got.backward()
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(xc.grad, xe.grad)


_CATEGORICAL_SPEC = """\
name: categorical_demo
summary: Two differentiated inputs and a categorical switch, to exercise the wrappers.
references: ["tests/test_wrappers.py"]
inputs:
  x: {role: differentiated, domain: "(-oo, oo)", shape: scalar}
  t: {role: differentiated, domain: "(0, oo)", shape: scalar}
  w: {role: constant, domain: "[0, 1]", shape: scalar}
params:
  mode: {default: soft, choices: [soft, square]}
  k: {default: 2, domain: "(0, oo)"}
loss: >-
  w*k*log(1 + exp(x*t)) if mode == "soft" else w*k*(x*t)**2
"""


@pytest.fixture(scope="module")
def categorical_modules():
    """The three backends of a spec with a string parameter and two differentiated inputs."""
    spec = lossgen.parse_spec_text(_CATEGORICAL_SPEC, "specs/categorical_demo.yaml")
    modules = {}
    for backend, source in lossgen.run(spec).sources.items():
        namespace = {"__name__": f"categorical_demo_{backend}"}
        exec(compile(source, f"<categorical_demo {backend}>", "exec"), namespace)
        modules[backend] = namespace
    return modules


@pytest.mark.parametrize("mode", ["soft", "square"])
def test_categorical_parameter_and_two_differentiated_inputs(categorical_modules, mode):
    rng = np.random.default_rng(5)
    x, t, w = rng.uniform(-2, 2, 4), rng.uniform(0.2, 2, 4), rng.uniform(0, 1, 4)

    tm = categorical_modules["torch"]
    xt, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)

    def f(a, b):
        return tm["categorical_demo"](a, b, torch.tensor(w), mode=mode, k=1.5, reduction="none")

    assert torch.autograd.gradcheck(f, (xt, tt))
    assert torch.autograd.gradgradcheck(f, (xt, tt))
    assert repr(tm["CategoricalDemo"](mode=mode)) == (
        f"CategoricalDemo(mode='{mode}', k=2.0, reduction='mean')"
    )

    jm = categorical_modules["jax"]
    args = [jnp.asarray(a) for a in (x, t, w)]
    want_g = jm["grad"](*args, mode=mode, k=1.5)
    want_h = jm["hess"](*args, mode=mode, k=1.5)

    def g(a, b, c):
        return jm["categorical_demo"](a, b, c, mode=mode, k=1.5, reduction="sum")

    got_g = jax.jit(jax.grad(g, argnums=(0, 1)))(*args)
    got_h = jax.jit(jax.vmap(jax.hessian(g, argnums=(0, 1))))(*args)
    for i in range(2):
        _close_jit(got_g[i], want_g[i])
        for j in range(2):
            _close_jit(got_h[i][j], want_h[i][j])
    with pytest.raises(ValueError, match="mode must be one of"):
        jm["categorical_demo"](*args, mode="hard", validate=True)

    nm = categorical_modules["numpy"]
    value, (gx, gt) = nm["value_and_grad"](x, t, w, mode=mode, k=1.5, reduction="mean")
    np.testing.assert_allclose(value, nm["value"](x, t, w, mode=mode, k=1.5).mean(), rtol=1e-15)
    np.testing.assert_allclose(gx, want_g[0] / 4, rtol=1e-12)
    np.testing.assert_allclose(gt, want_g[1] / 4, rtol=1e-12)
