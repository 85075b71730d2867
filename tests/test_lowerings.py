"""The helpers behind the precision-aware lowerings, in every backend, against mpmath:
erfc(c*x) with x**2 formed exactly, log(tanh(u)) from log(u), and (JAX) sums whose terms XLA
on CPU would flush to zero; log(A) - log(B) and sqrt(X) - B given their differences."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy

from lossgen._backends import print_expr
from lossgen._primitives import Erfc, ErfcScaled, LogTanh, ScaledSum, erfc_scaled
from lossgen.metrics import bits_of_error, round_truth

from _support import BACKENDS, NAMESPACES


def _namespace(backend: str) -> dict:
    namespace: dict = {}
    exec(NAMESPACES[backend], namespace)  # the generated modules' own imports
    return namespace


def _helper(cls, backend: str, name: str):
    namespace = _namespace(backend)
    exec(cls.helpers[backend], namespace)  # the helper exactly as generated modules carry it
    return namespace[name]


def _array(values, backend: str, dtype: str):
    values = np.asarray(values, dtype=dtype)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(values)
    if backend == "torch":
        import torch

        return torch.from_numpy(values.copy())
    return values


def ulp_distance(got, truth, dtype) -> np.ndarray:
    """ULPs between ``got`` and the correctly rounded exact values (subnormal pairs count 0)."""
    return 2 ** bits_of_error(got, round_truth(truth, dtype), dtype) - 1


def _numpy(result) -> np.ndarray:
    return np.asarray(result.numpy() if hasattr(result, "numpy") else result)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_erfc_scaled_is_accurate_where_erfc_of_a_rounded_argument_is_not(backend, dtype):
    """gelu's erfc(-x/sqrt(2)): within 4 ulps from u = -x/sqrt(2) = 2 down to the underflow,
    where erfc of the rounded argument is off by about u**2 ulps (hundreds at x = -37 in
    float64)."""
    lo = -37.0 if dtype == "float64" else -13.0
    x = np.concatenate([np.linspace(lo, 3.0, 161), [-0.25, 0.0, 0.5, 1e-8]]).astype(dtype)
    fn = _helper(ErfcScaled, backend, "_erfc_scaled")
    got = _numpy(fn(_array(x, backend, dtype), -0.7071067811865476, 0.5))
    with mpmath.workdps(60):
        truth = [mpmath.erfc(-mpmath.mpf(float(v)) / mpmath.sqrt(2)) for v in x]
    ulps = ulp_distance(got, truth, dtype)
    u = -x.astype(np.float64) / math.sqrt(2)
    tail = u > 2  # the product with erfcx; below, the backend's own erfc of c*x
    assert np.max(ulps[tail]) <= 4, (x[tail][np.argmax(ulps[tail])], np.max(ulps[tail]))
    namespace = _namespace(backend)
    erfc = {"numpy": "_special.erfc", "jax": "jax.scipy.special.erfc", "torch": "torch.special.erfc"}
    plain = _numpy(eval(erfc[backend], namespace)(-0.7071067811865476 * _array(x, backend, dtype)))
    np.testing.assert_array_equal(got[~tail], plain[~tail])
    naive = ulp_distance(plain, truth, dtype)
    if dtype == "float64":  # what the exact square buys at x = -37
        assert naive[0] > 100 and ulps[0] <= 4, (naive[0], ulps[0])


def test_erfc_scaled_takes_the_linear_arguments_it_can_square_exactly():
    x = sympy.Symbol("x", real=True)
    node = erfc_scaled(Erfc(-sympy.sqrt(2) * x / 2))
    assert isinstance(node, ErfcScaled)
    assert node.args[0] == x and float(node.args[2]) == 0.5
    assert erfc_scaled(Erfc(x / 3)) is None  # 1/9 is not a power of two
    assert erfc_scaled(Erfc(x**2)) is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_tanh_from_log_u(backend, dtype):
    """log(tanh(u)) for u from the subnormal range to where tanh rounds to 1, given log(u):
    within 4 ulps plus the 2**-p absolute error of a log near 0."""
    u = np.array([1e-300, 1e-40, 1e-12, 9e-5, 1e-4, 1.1e-4, 0.01, 0.5, 1.0, 3.0, 20.0, 400.0])
    if dtype == "float32":
        u = u[(u > 1e-37)]
    u = u.astype(dtype)
    log_u = np.log(u.astype(np.float64)).astype(dtype)
    fn = _helper(LogTanh, backend, "_log_tanh")
    got = _numpy(fn(_array(u, backend, dtype), _array(log_u, backend, dtype)))
    eps = float(np.finfo(dtype).eps)
    with mpmath.workdps(60):
        for value, g in zip(u, got):
            truth = mpmath.log(mpmath.tanh(mpmath.mpf(float(value))))
            err = abs(mpmath.mpf(float(g)) - truth)
            assert err <= 4 * eps * abs(truth) + eps, (value, g, truth)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaled_sum_keeps_terms_that_xla_flushes(dtype):
    """Terms of 0.75 * tiny each (subnormal, flushed to 0 by XLA on CPU) add up to a normal
    1.5 * tiny: the helper adds them relative to the largest, the plain sum returns 0. Where
    the largest term's factor d is normal the result is exact; where d itself was flushed it
    comes from log space, within the rounding of log d."""
    import jax.numpy as jnp

    fn = _helper(ScaledSum, "jax", "_scaled_sum")
    tiny = np.finfo(dtype).tiny
    eps = np.finfo(dtype).eps

    def a(v):
        return jnp.asarray(v, dtype=dtype)

    c, d, log_d = a(0.75), a(tiny), a(math.log(tiny))
    flushed = c * d  # what XLA computes for each term: 0
    assert float(flushed + flushed) == 0.0
    assert float(fn(flushed, c, d, log_d, flushed, c, d, log_d)) == 1.5 * tiny
    # d = tiny / 4 is flushed too: log space, with the rounding of log(tiny / 4)
    c, d, log_d = a(3.0), c * 0, a(math.log(tiny / 4))
    got = float(fn(a(0.0), c, d, log_d, a(0.0), c, d, log_d))
    bound = (abs(math.log(tiny / 4)) / 2 + 4) * eps * 1.5 * tiny
    assert abs(got - 1.5 * tiny) <= bound, (got, 1.5 * tiny)
    # no term below tiny: the plain sum, as it is
    one, third = a(1.0), a(1 / 3)
    assert float(fn(one, one, a(1.0), a(0.0), third, third, a(1.0), a(0.0))) == float(one + third)


def test_large_integers_print_as_floats():
    """JAX without x64 cannot take 5000000000 as an operand (int32 overflow)."""
    x = sympy.Symbol("x", real=True)
    assert "5000000000.0" in print_expr(x / 5000000000, "jax")
    assert "/ 3" in print_expr(x / 3, "jax")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_quotient_in_each_branch(backend, dtype):
    """log(A) - log(B) given D = A - B: near A = B (log1p of D/B), far with a normal quotient
    (log of it) and far with a quotient that overflows or underflows (difference of the logs),
    each within 2 ulps of the exact value; the plain difference of the logs loses the digits
    near A = B (in float64: thousands of ulps)."""
    from lossgen._primitives import LogQuotient

    helper = _helper(LogQuotient, backend, "_log_quotient")
    big = 1e300 if dtype == "float64" else 1e30
    pairs = [  # (A, B) exact in the dtype
        (3 + 3 * 2.0**-20, 3.0), (3.0, 3 + 3 * 2.0**-20), (3.0, 2.0), (2.0**-30, 2.0**-31 * 3),
        (7.0, 2.0), (2.0, 7.0), (big, 1 / big), (1 / big, big), (2.0**-100, 1.0), (1.0, 2.0**-100),
    ]
    a = np.array([p[0] for p in pairs], dtype=dtype)
    b = np.array([p[1] for p in pairs], dtype=dtype)
    with mpmath.workdps(60):
        d = np.array([float(mpmath.mpf(float(x)) - mpmath.mpf(float(y))) for x, y in zip(a, b)], dtype=dtype)
        truth = [mpmath.log(mpmath.mpf(float(x))) - mpmath.log(mpmath.mpf(float(y))) for x, y in zip(a, b)]
    with np.errstate(all="ignore"):  # as the generated modules call it: both branches are formed
        got = _numpy(helper(*(_array(v, backend, dtype) for v in (a, b, d))))
    assert ulp_distance(got, truth, dtype).max() <= 2, (got, truth)
    if dtype == "float64":
        plain = np.log(a[:2]) - np.log(b[:2])
        assert ulp_distance(plain, truth[:2], dtype).max() > 1000


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sqrt_difference_keeps_small_differences(backend, dtype):
    """sqrt(1 + u**2) - 1 as printed for each backend, within 2 ulps for u from 2**-60 to 2**60
    (the plain difference is 0 below u = 2**-27 in float64)."""
    from lossgen._primitives import SqrtDifference

    u = sympy.Symbol("u", real=True)
    code = print_expr(SqrtDifference(1 + u**2, 1, u**2), backend)
    values = np.array([2.0**k for k in range(-60, 61, 6)], dtype=dtype)
    namespace = _namespace(backend)
    namespace["u"] = _array(values, backend, dtype)
    with np.errstate(all="ignore"):
        got = _numpy(eval(code, namespace))
    with mpmath.workdps(60):
        truth = [mpmath.sqrt(1 + mpmath.mpf(float(v)) ** 2) - 1 for v in values]
    assert ulp_distance(got, truth, dtype).max() <= 2, (code, got)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shared_sigmoid_family_is_accurate(backend, dtype):
    """sigmoid, log_sigmoid and softplus of u and -u expanded onto one exp(-|u|) and one
    log1p (share_sigmoid_family): within 2 ulps of mpmath from u = -800 to 800, and the
    expansion holds one exp."""
    from lossgen._primitives import Exp, LogSigmoid, Sigmoid, Softplus
    from lossgen._simplify import share_sigmoid_family

    u = sympy.Symbol("u", real=True)
    members = [Sigmoid(u), Sigmoid(-u), LogSigmoid(u), LogSigmoid(-u), Softplus(u), Softplus(-u)]
    expanded = share_sigmoid_family(members)
    assert not any(e.has(Sigmoid, LogSigmoid, Softplus) for e in expanded)
    assert set().union(*(e.atoms(Exp) for e in expanded)) == {Exp(-sympy.Abs(u))}
    grid = np.concatenate([-np.geomspace(800, 1e-6, 60), [0.0], np.geomspace(1e-6, 800, 60)])
    grid = grid.astype(dtype)  # (the truth at the rounded arguments)
    namespace = _namespace(backend)
    namespace["u"] = _array(grid, backend, dtype)
    exact = {
        "sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)),
        "log_sigmoid": lambda v: -mpmath.log1p(mpmath.exp(-v)),
        "softplus": lambda v: mpmath.log1p(mpmath.exp(v)),
    }
    with mpmath.workdps(60):
        for member, form in zip(members, expanded):
            (arg,) = member.args
            sign = 1 if arg == u else -1
            truth = [exact[member.display](mpmath.mpf(float(v)) * sign) for v in grid]
            got = _numpy(eval(print_expr(form, backend), namespace))
            assert got.dtype == np.dtype(dtype)
            if backend == "jax":  # XLA on CPU flushes subnormal results
                tiny = np.finfo(dtype).tiny
                keep = np.array([abs(t) >= tiny or t == 0 for t in truth])
                got, truth = got[keep], [t for t, k in zip(truth, keep) if k]
            worst = ulp_distance(got, truth, dtype).max()
            assert worst <= 2, (member, worst)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pick_is_the_one_hot_sum(backend):
    """_pick(a, k, shape), the gather a class-axis sum(a*onehot(k)) is printed as, equals that
    sum: 0 for an index outside the classes, a fraction or NaN; the entry itself where another
    entry of the row is inf or NaN (where the product would give NaN)."""
    import lossgen

    module = lossgen.load("softmax_cross_entropy_index", backend)
    rng = np.random.default_rng(3)
    a = rng.integers(-8, 8, (7, 5)) / 4  # (exact in float32)
    a[2, 0], a[1, 0], a[5, 2] = np.inf, np.nan, np.inf
    k = np.array([0.0, 4.0, 2.0, -100.0, 5.0, 2.5, np.nan])[:, None]
    hot = k == np.arange(5)
    expected = np.where(hot, np.nan_to_num(a, nan=0.0, posinf=0.0), 0.0).sum(axis=-1, keepdims=True)
    if backend == "torch":
        import torch

        to = torch.tensor
    elif backend == "jax":
        import jax.numpy as jnp

        to = jnp.asarray
    else:
        to = np.asarray
    got = np.asarray(module._pick(to(a), to(k), a.shape))
    np.testing.assert_array_equal(got, expected)
    # a number broadcast against the rows: the count of rows with a class index
    np.testing.assert_array_equal(np.asarray(module._pick(1, to(k), a.shape)), hot.sum(-1, keepdims=True))
