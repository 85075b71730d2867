"""Stable primitives: SymPy functions that lossgen emits as one accurate backend call.

Each primitive keeps, side by side, its meaning (``textbook``: the same function in plain
SymPy, used by the oracle), its derivative (``fdiff``, expressed again in primitives, so that
differentiating twice never leaves the vocabulary), and its lowering per backend (a format
string over the printed arguments).
"""

from __future__ import annotations

from typing import ClassVar

import sympy
from sympy.codegen.cfunctions import expm1, log1p

__all__ = [
    "PRIMITIVES",
    "Erfc",
    "ErfcScaled",
    "Exp",
    "Expm1",
    "LogAddExp",
    "LogCosh",
    "LogQuotient",
    "LogSoftplus",
    "LogTanh",
    "ScaledProduct",
    "ScaledSum",
    "ScaledTerm",
    "XLogY",
    "LogRatio",
    "LogSigmoid",
    "Primitive",
    "Sigmoid",
    "Softplus",
    "SoftplusMinusSigmoid",
    "SqrtDifference",
    "erfc_scaled",
    "to_textbook",
]


#: backend -> (array namespace, elementwise maximum with a scalar, minimum with a scalar), for
#: helpers written once for all three backends
_ARRAY_API = {
    "numpy": ("np", "maximum", "minimum"),
    "jax": ("jnp", "maximum", "minimum"),
    "torch": ("torch", "clamp_min", "clamp_max"),
}


#: XLA's float64 log1p on CPU is up to 120 ulps off for x in [-0.415, -0.364] (measured with
#: jax 0.10.2 against numpy's); there 1 + x is formed with one rounding, and x*log(u)/(u - 1)
#: for u = 1 + x as rounded corrects it to 2 ulps (Goldberg, "What every computer scientist
#: should know about floating-point arithmetic", Theorem 4). Every log1p in a JAX module calls this.
JAX_LOG1P = (
    "def _log1p(x):\n"
    "    bad = (x > -0.4375) & (x < -0.34375)\n"
    "    u = jnp.where(bad, 1 + x, 0.5)\n"
    "    return jnp.where(bad, x * jnp.log(u) / (u - 1), jnp.log1p(x))\n"
)


class Primitive(sympy.Function):
    """A function with an accurate implementation in every backend."""

    #: backend name -> format string; ``{0}``, ``{1}`` are the printed arguments.
    lowering: ClassVar[dict[str, str]] = {}
    #: the name shown in explanations and docstrings
    display: ClassVar[str] = ""
    #: backend -> helper functions the lowering calls, emitted once into each module using them
    helpers: ClassVar[dict[str, str]] = {}

    @classmethod
    def textbook(cls, *args: sympy.Expr) -> sympy.Expr:
        """The same function in plain SymPy (exp, log, ...), for the oracle."""
        raise NotImplementedError

    def _eval_is_real(self):
        return all(arg.is_real for arg in self.args) or None

    def _sympystr(self, printer) -> str:
        args = ", ".join(printer._print(arg) for arg in self.args)
        return f"{self.display}({args})"


class Sigmoid(Primitive):
    """sigmoid(x) = 1 / (1 + exp(-x)); never computed as a quotient that can be 0/0."""

    display = "sigmoid"
    nargs = 1
    lowering = {
        "numpy": "_sigmoid({0})",
        "jax": "jax.nn.sigmoid({0})",
        "torch": "_sigmoid({0})",
    }
    # scipy's expit and torch.sigmoid compute 1 / (1 + exp(-x)), which is 0 where the result
    # is subnormal (x < -709 in float64); exp(-|x|) keeps those digits, and neither branch
    # can be NaN. (XLA on CPU flushes subnormals anyway.)
    helpers = {
        "numpy": (
            "def _sigmoid(x):\n"
            "    e = np.exp(-np.abs(x))\n"
            "    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))\n"
        ),
        # the same quotients without a select: exp(min(x, 0)) is 1 or e (torch.where is a
        # slow, scalar kernel on CPU), and each temporary is reused in place
        "torch": (
            "def _sigmoid(x):\n"
            "    return torch.clamp_max(x, 0).exp_().div_(torch.abs(x).neg_().exp_().add_(1))\n"
        ),
    }

    @classmethod
    def textbook(cls, x):
        return 1 / (1 + sympy.exp(-x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sympy.Rational(1, 2)
        return None

    def fdiff(self, argindex=1):
        x = self.args[0]
        return Sigmoid(x) * Sigmoid(-x)

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class LogSigmoid(Primitive):
    """log(sigmoid(x)) = -softplus(-x)."""

    display = "log_sigmoid"
    nargs = 1
    lowering = {
        "numpy": "-np.logaddexp(0, {n0})",
        "jax": "jax.nn.log_sigmoid({0})",
        "torch": "torch.nn.functional.logsigmoid({0})",
    }

    @classmethod
    def textbook(cls, x):
        return -sympy.log(1 + sympy.exp(-x))

    def fdiff(self, argindex=1):
        return Sigmoid(-self.args[0])

    def _eval_is_negative(self):
        return True if self.args[0].is_real else None


class Softplus(Primitive):
    """softplus(x) = log(1 + exp(x))."""

    display = "softplus"
    nargs = 1
    lowering = {
        "numpy": "np.logaddexp(0, {0})",
        "jax": "jax.nn.softplus({0})",
        "torch": "_softplus({0})",
    }
    # torch.nn.functional.softplus returns x itself above its threshold (20), 2e-9 off at x = 20
    helpers = {
        "torch": (
            "def _softplus(x):\n"
            "    return torch.clamp_min(x, 0) + torch.log1p(torch.exp(-torch.abs(x)))\n"
        ),
    }

    @classmethod
    def textbook(cls, x):
        return sympy.log(1 + sympy.exp(x))

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class SigmoidNumerator(Primitive):
    """1 where u >= 0, else e: with e = exp(-|u|), sigmoid(u) = sigmoid_numerator(u, e) / (1 + e).

    The sigmoid family of one |u| (sigmoid, log_sigmoid, softplus of u and of -u) shares e and
    log1p(e) once the simplify pass has expanded it (``share_sigmoid_family``, for JAX). Every
    backend can print it; torch's form is a maximum (e <= 1, the step 0 or 1), not torch.where."""

    display = "sigmoid_numerator"
    nargs = 2
    lowering = {
        "numpy": "np.where({0} >= 0, 1.0, {1})",
        "jax": "jnp.where({0} >= 0, 1.0, {1})",
        "torch": "torch.maximum({1}, torch.relu({0}).sign_())",
    }

    @classmethod
    def textbook(cls, u, e):
        return sympy.Piecewise((1, u >= 0), (e, True))

    def _eval_is_positive(self):
        return True if self.args[1].is_positive else None


class Log1pSmall(Primitive):
    """log1p(z) for z in [0, 1] (z = exp(-|u|) of the sigmoid family): the backend's log1p as
    it is; the JAX correction for arguments near -0.4 (``JAX_LOG1P``) never applies there."""

    display = "log1p"
    nargs = 1
    lowering = {
        "numpy": "np.log1p({0})",
        "jax": "jnp.log1p({0})",
        "torch": "torch.log1p({0})",
    }

    @classmethod
    def textbook(cls, z):
        return sympy.log(1 + z)

    def _eval_is_nonnegative(self):
        return True if self.args[0].is_nonnegative else None


class SoftplusMinusSigmoid(Primitive):
    """softplus(u) - sigmoid(u), which cancels to exp(2u)/2 as u -> -oo (poly-1 loss with
    epsilon = -1). With s = sigmoid(u) it is -log1p(-s) - s, and for u <= 0 (s <= 1/2) that is
    s**2/(2 - s) + 2 * (w**3/3 + w**5/5 + ...) with w = s/(2 - s) <= 1/3: every term positive,
    sixteen of them reach float64's resolution. Above 0 the difference does not cancel."""

    display = "softplus_minus_sigmoid"
    nargs = 1
    lowering = {b: "_softplus_minus_sigmoid({0})" for b in ("numpy", "jax", "torch")}
    helpers = {
        backend: (
            "def _softplus_minus_sigmoid(u):\n"
            f"    e = {ns}.exp(-{ns}.abs(u))\n"
            "    s = e / (1 + e)\n"
            "    w = s / (2 - s)\n"
            "    w2 = w * w\n"
            "    tail = 0.0\n"
            "    for k in range(33, 1, -2):\n"
            "        tail = w2 * (1 / k + tail)\n"
            "    series = s * s / (2 - s) + 2 * w * tail\n"
            f"    direct = {ns}.{maximum}(u, 0.0) + {ns}.log1p(e) - 1 / (1 + e)\n"
            f"    return {ns}.where(u <= 0, series, direct)\n"
        )
        for backend, (ns, maximum, _) in _ARRAY_API.items()
    }

    @classmethod
    def textbook(cls, u):
        return sympy.log(1 + sympy.exp(u)) - 1 / (1 + sympy.exp(-u))

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0]) ** 2

    def _eval_is_nonnegative(self):
        return True if self.args[0].is_real else None


class Exp(Primitive):
    """exp(u), kept whole: SymPy would pull exp(log(y) + u) apart into y*exp(u), and at y = 0
    that is 0 * exp(u), a NaN once exp(u) overflows. Weights of log-sum-exp stay in this form."""

    display = "exp"
    nargs = 1
    lowering = {
        "numpy": "np.exp({0})",
        "jax": "jnp.exp({0})",
        "torch": "torch.exp({0})",
    }

    @classmethod
    def textbook(cls, u):
        return sympy.exp(u)

    def fdiff(self, argindex=1):
        return self

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class Expm1(Primitive):
    """exp(u) - 1, kept whole (SymPy would expand expm1(log(b) - u) into b*exp(-u) - 1)."""

    display = "expm1"
    nargs = 1
    lowering = {
        "numpy": "np.expm1({0})",
        "jax": "jnp.expm1({0})",
        "torch": "torch.expm1({0})",
    }

    @classmethod
    def textbook(cls, u):
        return sympy.exp(u) - 1

    def fdiff(self, argindex=1):
        return Exp(self.args[0])


class LogRatio(Primitive):
    """log(b / a) for a, b >= 0, given also d = b - a in closed form: log1p(d / a) keeps the
    digits when b ~ a; at a = 0 or b = 0, log(b) - log(a) gives the right infinity."""

    display = "log_ratio"
    nargs = 3
    lowering = {
        "numpy": "np.where(({p1} == 0) | ({p0} == 0), np.log({0}) - np.log({1}), np.log1p({p2} / {p1}))",
        "jax": "jnp.where(({p1} == 0) | ({p0} == 0), jnp.log({0}) - jnp.log({1}), _log1p({p2} / {p1}))",
        # at a zero, log1p(|b / a| - 1) is the same infinity (or NaN) as log(b) - log(a)
        # (|.|: a may be -0.0), without torch's slow path for the log of 0 on CPU
        "torch": (
            "torch.log1p(torch.where(({p1} == 0) | ({p0} == 0), torch.abs({p0} / {p1}) - 1, {p2} / {p1}))"
        ),
    }
    helpers = {"jax": JAX_LOG1P}

    @classmethod
    def textbook(cls, b, a, d):
        return sympy.log(b) - sympy.log(a)


def _log_quotient_helper(xp: str, log1p: str, extra: str = "") -> str:
    asarray = "torch.as_tensor" if xp == "torch" else f"{xp}.asarray"
    return (
        extra
        + "def _log_quotient(a, b, d):\n"
        f"    a, b, d = {asarray}(a), {asarray}(b), {asarray}(d)\n"
        f"    info = {xp}.finfo((a / b).dtype)\n"
        "    q = a / b\n"
        "    normal = (q >= info.tiny) & (q <= info.max)\n"
        f"    near = {xp}.abs(d) <= 0.5 * b\n"
        f"    far = {xp}.where(normal, {xp}.log({xp}.where(normal, q, 1)), {xp}.log(a) - {xp}.log(b))\n"
        f"    return {xp}.where(near, {log1p}(d / b), far)\n"
    )


class LogQuotient(Primitive):
    """log(A) - log(B) for A, B > 0, given also D = A - B formed symbolically: log1p(D/B)
    where A/B is within [1/2, 3/2] (there the logs cancel), log(A/B) elsewhere while the
    quotient is a normal number (its rounding is then small beside |log(A/B)| > 0.4), and the
    difference of the logs where it is not (their sizes differ too much to cancel)."""

    display = "log_quotient"
    nargs = 3
    lowering = {
        "numpy": "_log_quotient({0}, {1}, {2})",
        "jax": "_log_quotient({0}, {1}, {2})",
        "torch": "_log_quotient({0}, {1}, {2})",
    }
    helpers = {
        "numpy": _log_quotient_helper("np", "np.log1p"),
        "jax": _log_quotient_helper("jnp", "_log1p", JAX_LOG1P + "\n\n"),
        "torch": _log_quotient_helper("torch", "torch.log1p"),
    }

    @classmethod
    def textbook(cls, a, b, d):
        return sympy.log(a) - sympy.log(b)

    def fdiff(self, argindex=1):
        if argindex == 1:
            return 1 / self.args[0]
        return -1 / self.args[1] if argindex == 2 else sympy.S.Zero


def _xlogy_helper(ns: str) -> str:
    return (
        "def _xlogy(a, b):\n"
        "    # a*log(b), 0 where a = 0 (also where b = 0: 0*log(0) = 0, its limit)\n"
        f"    zero = a == 0\n"
        f"    return {ns}.where(zero, 0.0, a * {ns}.log({ns}.where(zero, 1.0, b)))\n"
    )


class XLogY(Primitive):
    """a*log(b) with 0 where a = 0 (scipy's xlogy): a product that is 0*(-inf) = NaN at
    a = b = 0, where its limit (t*log(t) as t -> 0) is 0. Its derivatives are log(b) in a and
    a/b in b, so that of xlogy(t, t) is log(t) + 1: -inf at t = 0, the true derivative."""

    display = "xlogy"
    nargs = 2
    lowering = {
        "numpy": "_xlogy({0}, {1})",
        "jax": "_xlogy({0}, {1})",
        "torch": "torch.xlogy({0}, {1})",
    }
    helpers = {"numpy": _xlogy_helper("np"), "jax": _xlogy_helper("jnp")}

    @classmethod
    def textbook(cls, a, b):
        return a * sympy.log(b)

    def fdiff(self, argindex=1):
        a, b = self.args
        return sympy.log(b) if argindex == 1 else a / b


class SqrtDifference(Primitive):
    """sqrt(X) - B for X, B >= 0, given also D = X - B**2 formed symbolically: D/(sqrt(X) + B)
    keeps the digits where sqrt(X) ~ B (sqrt(1 + u**2) - 1 = u**2/(sqrt(1 + u**2) + 1)).
    Its derivative is that of the difference, 1/(2 sqrt(X)) in X and -1 in B."""

    display = "sqrt_difference"
    nargs = 3
    lowering = {
        "numpy": "{p2} / (np.sqrt({0}) + {p1})",
        "jax": "{p2} / (jnp.sqrt({0}) + {p1})",
        "torch": "{p2} / (torch.sqrt(torch.as_tensor({0})) + {p1})",
    }

    @classmethod
    def textbook(cls, x, b, d):
        return sympy.sqrt(x) - b

    def fdiff(self, argindex=1):
        if argindex == 1:
            return 1 / (2 * sympy.sqrt(self.args[0]))
        return sympy.S.NegativeOne if argindex == 2 else sympy.S.Zero


class LogAddExp(Primitive):
    """logaddexp(a, b) = log(exp(a) + exp(b)); its weights are exp(a - lae), exp(b - lae)."""

    display = "logaddexp"
    nargs = 2
    lowering = {
        "numpy": "np.logaddexp({0}, {1})",
        "jax": "jnp.logaddexp({0}, {1})",
        "torch": "torch.logaddexp({0}, {1})",
    }

    @classmethod
    def textbook(cls, a, b):
        return sympy.log(sympy.exp(a) + sympy.exp(b))

    @classmethod
    def eval(cls, a, b):
        # log 0 = -oo: a term of weight 0 drops out
        if a is sympy.S.NegativeInfinity:
            return b
        if b is sympy.S.NegativeInfinity:
            return a
        return None

    def fdiff(self, argindex=1):
        return Exp(self.args[argindex - 1] - self)


class Erfc(Primitive):
    """erfc(u) = 1 - erf(u), kept whole: SymPy rewrites erfc(-u) as 2 - erfc(u), the very
    difference that cancels."""

    display = "erfc"
    nargs = 1
    lowering = {
        "numpy": "_special.erfc({0})",
        "jax": "jax.scipy.special.erfc({0})",
        "torch": "torch.special.erfc({0})",
    }

    @classmethod
    def textbook(cls, u):
        return sympy.erfc(u)

    def fdiff(self, argindex=1):
        u = self.args[0]
        return -2 / sympy.sqrt(sympy.pi) * sympy.exp(-(u**2))

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None


class ErfcScaled(Primitive):
    """erfc(c*x) for a number c with c**2 a power of two (gelu's erfc(-x/sqrt(2))). For
    u = c*x > 2 it is exp(-c**2 x**2) * erfcx(u) with x**2 formed exactly, as m**2 + f*(2m + f)
    for m = x rounded to 1/256: erfc of the rounded u is off by about u**2 ulps (9 bits at
    x = -37 in float64), while erfcx is well conditioned."""

    display = "erfc_scaled"
    nargs = 3
    lowering = {b: "_erfc_scaled({0}, {1}, {2})" for b in ("numpy", "jax", "torch")}
    helpers = {
        backend: (
            "def _erfc_scaled(x, c, c2):\n"
            "    u = c * x\n"
            f"    m = {ns}.round(x * 256) / 256\n"
            "    f = x - m\n"
            f"    tail = {ns}.exp(-c2 * (m * m)) * {ns}.exp(-c2 * (f * (2 * m + f)))\n"
            f"    tail = tail * {erfcx}({ns}.{maximum}(u, 2.0))\n"
            f"    return {ns}.where(u > 2, tail, {erfc}(u))\n"
        )
        for backend, ns, erfcx, erfc, maximum in (
            ("numpy", "np", "_special.erfcx", "_special.erfc", "maximum"),
            ("jax", "jnp", "jax.scipy.special.erfcx", "jax.scipy.special.erfc", "maximum"),
            ("torch", "torch", "torch.special.erfcx", "torch.special.erfc", "clamp_min"),
        )
    }

    @classmethod
    def textbook(cls, x, c, c2):
        return sympy.erfc(c * x)


def erfc_scaled(node: Erfc) -> sympy.Expr | None:
    """ErfcScaled(x, c, c**2) for erfc(c*x) with c**2 a power of two; else None."""
    u = node.args[0]
    if len(u.free_symbols) != 1:
        return None
    (x,) = u.free_symbols
    c = u.diff(x)
    if not c.is_number or sympy.expand(u - c * x) != 0:
        return None
    c2 = sympy.nsimplify(c**2)
    if not (c2.is_Rational and c2 > 0 and sympy.log(c2, 2).is_Integer):
        return None
    return ErfcScaled(x, sympy.Float(c.evalf(20), 17), sympy.Float(c2, 17))


class LogCosh(Primitive):
    """log(cosh(x)): cosh overflows for |x| > 710 and log(cosh(x)) loses every digit for tiny x
    (cosh(x) rounds to 1). With b = min(|x|, 20) and m = expm1(b), cosh(b) - 1 = m*m/(2*(1 + m))
    exactly, so log(cosh(b)) = log1p(m * (m / (2*(1 + m)))) keeps the digits of tiny x; above
    20, log(cosh(x)) = |x| - log(2) + log1p(exp(-2|x|)) differs from log(cosh(20)) + (|x| - 20)
    by under exp(-40), far below float64's resolution. One expm1 and one log1p, no select."""

    display = "log_cosh"
    nargs = 1
    lowering = {"numpy": "_log_cosh({0})", "jax": "_log_cosh({0})", "torch": "_log_cosh({0})"}
    helpers = {
        backend: (
            "def _log_cosh(x):\n"
            f"    a = {ns}.abs(x)\n"
            f"    b = {ns}.{minimum}(a, 20.0)\n"
            f"    m = {ns}.expm1(b)\n"
            f"    return {ns}.log1p(m * (m / (2 * (1 + m)))) + (a - b)\n"
        )
        for backend, (ns, _, minimum) in _ARRAY_API.items()
        if backend != "torch"
    } | {
        # the same, the temporaries reused in place (not through out=: vmap cannot batch it)
        "torch": (
            "def _log_cosh(x):\n"
            "    a = torch.abs(x)\n"
            "    b = torch.clamp_max(a, 20.0)\n"
            "    a.sub_(b)\n"
            "    m = b.expm1_()\n"
            "    return (m / (m + 1).mul_(2)).mul_(m).log1p_().add_(a)\n"
        ),
    }

    @classmethod
    def textbook(cls, x):
        return sympy.log(sympy.cosh(x))

    def fdiff(self, argindex=1):
        return sympy.tanh(self.args[0])

    def _eval_is_nonnegative(self):
        return True if self.args[0].is_real else None


class LogSoftplus(Primitive):
    """log(softplus(u)): for u < -30, softplus(u) = exp(u)*(1 - exp(u)/2 + ...) and its log is
    u - exp(u)/2 to the last bit, without forming the (possibly subnormal) softplus itself."""

    display = "log_softplus"
    nargs = 1
    lowering = {b: "_log_softplus({0})" for b in ("numpy", "jax", "torch")}
    helpers = {
        backend: (
            "def _log_softplus(u):\n"
            f"    far = u - {ns}.exp(u) / 2\n"
            f"    w = {ns}.{maximum}(u, -30.0)\n"
            f"    near = {ns}.log({ns}.{maximum}(w, 0.0) + {ns}.log1p({ns}.exp(-{ns}.abs(w))))\n"
            f"    return {ns}.where(u < -30, far, near)\n"
        )
        for backend, (ns, maximum, _) in _ARRAY_API.items()
    }

    @classmethod
    def textbook(cls, u):
        return sympy.log(sympy.log(1 + sympy.exp(u)))


class LogTanh(Primitive):
    """log(tanh(u)) for u >= 0, given also L = log(u) in stable form: L + log(tanh(u)/u) up to
    u = 1/2, the correction being -u**2/3 for u < 1e-4 (the next term, 7u**4/90, is below
    float64's resolution there); above, log1p(-e) - log1p(e) for e = exp(-2u). It never forms
    tanh(u) of a u that may be subnormal (tanh(softplus(x)) in mish, x -> -oo), so JAX can
    scale a product of it in log space."""

    display = "log_tanh"
    nargs = 2
    lowering = {b: "_log_tanh({0}, {1})" for b in ("numpy", "jax", "torch")}
    helpers = {
        backend: (
            "def _log_tanh(u, log_u):\n"
            "    small = u < 1e-4\n"
            f"    safe = {ns}.where(small, 1.0, u)\n"
            f"    near = log_u + {ns}.where(small, -u * u / 3, {log1p}({ns}.tanh(safe) / safe - 1))\n"
            f"    e = {ns}.exp(-2 * {ns}.{maximum}(u, 0.5))\n"
            f"    return {ns}.where(u > 0.5, {log1p}(-e) - {log1p}(e), near)\n"
            + (JAX_LOG1P if backend == "jax" else "")
        )
        for backend, (ns, maximum, _) in _ARRAY_API.items()
        for log1p in ["_log1p" if backend == "jax" else f"{ns}.log1p"]
    }

    @classmethod
    def textbook(cls, u, log_u):
        return sympy.log(sympy.tanh(u))


#: the mode of JAX's scaled products and sums, shared by their helpers (see _plain_first in
#: the JAX template)
JAX_PLAIN = (
    "#: whether the scaled products and sums are in a plain pass (see _plain_first)\n"
    "_PLAIN = [False]\n\n\n"
)


class ScaledProduct(Primitive):
    """c*d, where d is a product of factors that vanish at some end (sigmoids, exponentials)
    and L = log(d) is known in stable form. NumPy and PyTorch compute c*d as it stands; JAX
    computes sign(c)*exp(log|c| + L) where d would be subnormal or overflow: XLA on CPU flushes
    a subnormal d to 0 even where c*d is a normal number (x*sigmoid(x) at x = -88 in float32),
    and a power of an input can overflow where c*d is finite (p**(gamma - 2) * p)."""

    display = "scaled_product"
    nargs = 3
    lowering = {
        "numpy": "({p0} * {p1})",
        "jax": "_scaled_product({0}, {1}, {2})",
        "torch": "({p0} * {p1})",
    }
    # log space only where d as computed is not a normal number (flushed, or an intermediate
    # of it was: 0, inf or NaN): elsewhere c*d is the more accurate (exp of a large sum has the
    # sum's rounding error, up to |log d| / 2 ulps). In a plain pass (_plain_first) c*d, NaN
    # where that may differ (d not normal, unless c = 0 and d finite); a term of a scaled sum
    # (``term``) is left to the sum, whose quadruple holds the same c and d
    helpers = {
        "jax": JAX_PLAIN + (
            "def _scaled_product(c, d, log_d, term=False):\n"
            "    info = jnp.finfo(jnp.asarray(log_d).dtype)\n"
            "    normal = (d >= info.tiny) & (d <= info.max)\n"
            "    if _PLAIN[-1]:\n"
            "        exact = normal | (c == 0) & jnp.isfinite(d)\n"
            "        return c * d if term else jnp.where(exact, c * d, jnp.nan)\n"
            "    logged = jnp.sign(c) * jnp.exp(jnp.log(jnp.abs(c)) + log_d)\n"
            "    return jnp.where(normal, c * d, logged)\n"
        ),
    }

    @classmethod
    def textbook(cls, c, d, log_d):
        return c * d


class ScaledTerm(ScaledProduct):
    """A ScaledProduct as a term of a ScaledSum (or a branch of a conditional that is one), as
    the printer writes it: in JAX's plain pass the sum checks it, from the same c and d."""

    lowering = {**ScaledProduct.lowering, "jax": "_scaled_product({0}, {1}, {2}, term=True)"}


class ScaledSum(Primitive):
    """t1 + t2 + ..., from quadruples (t_i, c_i, d_i, L_i) where t_i = c_i*d_i, d_i > 0 and
    L_i = log(d_i) (a term that is not a scaled product comes as (t, t, 1, 0)). NumPy and
    PyTorch add the terms. So does JAX, unless a term that is not negligible beside the sum
    (above eps/n of it) is below the smallest normal number: XLA on CPU flushes such terms to
    zero, and subnormal terms can add up to a normal number (the focal Hessian at x = -709,
    the focal gradient on probabilities at p = 2**-126). There the terms are added relative to
    the largest one, s = sum(sign(c_i) * exp(log|c_i| + L_i - L_max)), and the sum is
    |c_max| * d_max * s, formed at 2**mantissa bits times its size so that no intermediate is
    subnormal, where d_max is a normal number; else exp(L_max + log|s|), whose error is
    |L_max| * eps relative (up to 48 ulps in float32 at 2**-126). That one, where it falls below
    the smallest normal number by no more than its rounding, is returned as that number.

    In JAX's plain pass (_plain_first) the sum is the plain one, or NaN unless every term is
    exact as it stands: its factor and itself normal numbers (at least 2x the smallest: then
    its log is above the flushing threshold), its cofactor 0, or its largest possible size
    (|c| times d, or the smallest normal number for a flushed d) below eps / (256 n) of the
    sum, where the scaled sum too counts it negligible; and the sum itself finite and normal."""

    display = "scaled_sum"
    lowering = {
        "numpy": "({sum})",
        "jax": "_scaled_sum({all})",
        "torch": "({sum})",
    }
    helpers = {
        "jax": JAX_PLAIN + (
            "def _scaled_sum(*quads):\n"
            "    terms, cofactors, factors, logs = quads[0::4], quads[1::4], quads[2::4], quads[3::4]\n"
            "    plain = sum(terms)\n"
            "    info = jnp.finfo(jnp.asarray(plain).dtype)\n"
            "    if _PLAIN[-1]:  # the plain sum, NaN where a term may be flushed and matter\n"
            "        size = jnp.abs(plain)\n"
            "        exact = jnp.isfinite(plain) & (size >= 2 * info.tiny)\n"
            "        negligible = size * (info.eps / (256 * len(terms)))\n"
            "        for t, c, d in zip(terms, cofactors, factors):\n"
            "            normal = (d >= info.tiny) & (d <= info.max) & (jnp.abs(t) >= 2 * info.tiny)\n"
            "            below = jnp.abs(c) * jnp.maximum(d, info.tiny) < negligible\n"
            "            exact = exact & (normal | (c == 0) | below)\n"
            "        return jnp.where(exact, plain, jnp.nan)\n"
            "    logs = [jnp.log(jnp.abs(c)) + log_d for c, log_d in zip(cofactors, logs)]\n"
            "    # (a term within the logs' rounding of tiny counts as flushed)\n"
            "    small = math.log(info.tiny) * (1 - 8 * info.eps)\n"
            "    negligible = jnp.log(jnp.abs(plain)) + math.log(info.eps / len(terms))\n"
            "    top, c_top, d_top = logs[0], cofactors[0], factors[0]\n"
            "    flushed = (top < small) & (top >= negligible)\n"
            "    for c, d, log in zip(cofactors[1:], factors[1:], logs[1:]):\n"
            "        above = log > top\n"
            "        top = jnp.where(above, log, top)\n"
            "        c_top, d_top = jnp.where(above, c, c_top), jnp.where(above, d, d_top)\n"
            "        flushed = flushed | ((log < small) & (log >= negligible))\n"
            "    # (as is a sum that overflowed while its terms did not)\n"
            "    flushed = flushed | ~jnp.isfinite(plain)\n"
            "    top = jnp.where(jnp.isfinite(top), top, 0)\n"
            "    total = sum(jnp.sign(c) * jnp.exp(log - top) for c, log in zip(cofactors, logs))\n"
            "    direct = jnp.abs(total) * jnp.abs(c_top) / info.eps * d_top * info.eps\n"
            "    log_sum = jnp.log(jnp.abs(total)) + top\n"
            "    near = log_sum > math.log(info.tiny) * (1 + 8 * info.eps)\n"
            "    logged = jnp.where(near, jnp.maximum(jnp.exp(log_sum), info.tiny), jnp.exp(log_sum))\n"
            "    exact = (d_top >= info.tiny) & (direct >= info.tiny) & jnp.isfinite(direct)\n"
            "    magnitude = jnp.where(exact, direct, logged)\n"
            "    return jnp.where(flushed, jnp.sign(total) * magnitude, plain)\n"
        ),
    }

    @classmethod
    def textbook(cls, *quads):
        return sympy.Add(*quads[0::4])

PRIMITIVES: tuple[type[Primitive], ...] = (
    Sigmoid, LogSigmoid, Softplus, Exp, Expm1, LogRatio, LogQuotient, SqrtDifference, XLogY,
    LogAddExp, LogCosh, Erfc, ScaledProduct, ScaledSum, LogSoftplus, LogTanh, ErfcScaled, SoftplusMinusSigmoid,
    SigmoidNumerator, Log1pSmall,
)


def to_textbook(expr: sympy.Expr) -> sympy.Expr:
    """Replace every primitive (and log1p, expm1) by its plain SymPy meaning."""
    expr = expr.replace(
        lambda node: isinstance(node, Primitive),
        lambda node: type(node).textbook(*node.args),
    )
    return expr.replace(log1p, lambda u: sympy.log(1 + u)).replace(expm1, lambda u: sympy.exp(u) - 1)
