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
    "Exp",
    "Expm1",
    "LogAddExp",
    "LogCosh",
    "LogSoftplus",
    "ScaledProduct",
    "LogRatio",
    "LogSigmoid",
    "Primitive",
    "Sigmoid",
    "Softplus",
    "to_textbook",
]


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
        "torch": (
            "def _sigmoid(x):\n"
            "    e = torch.exp(-torch.abs(x))\n"
            "    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))\n"
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
        "jax": "jnp.where(({p1} == 0) | ({p0} == 0), jnp.log({0}) - jnp.log({1}), jnp.log1p({p2} / {p1}))",
        "torch": (
            "torch.where(torch.as_tensor(({p1} == 0) | ({p0} == 0)), torch.log({0}) - torch.log({1}), "
            "torch.log1p({p2} / {p1}))"
        ),
    }

    @classmethod
    def textbook(cls, b, a, d):
        return sympy.log(b) - sympy.log(a)


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


class LogCosh(Primitive):
    """log(cosh(x)): cosh overflows for |x| > 710 and log(cosh(x)) loses every digit for tiny x
    (cosh(x) rounds to 1). Below |x| = 1 it is log1p(2*sinh(|x|/2)**2) (cosh(x) - 1 exactly),
    above |x| + log1p(exp(-2|x|)) - log(2); the sinh branch sees min(|x|, 1), so neither branch
    overflows."""

    display = "log_cosh"
    nargs = 1
    lowering = {"numpy": "_log_cosh({0})", "jax": "_log_cosh({0})", "torch": "_log_cosh({0})"}
    helpers = {
        backend: (
            "def _log_cosh(x):\n"
            f"    a = {ns}.abs(x)\n"
            f"    near = {ns}.log1p(2 * {ns}.sinh({ns}.{minimum}(a, 1.0) / 2) ** 2)\n"
            f"    far = a + {ns}.log1p({ns}.exp(-2 * a)) - 0.6931471805599453\n"
            f"    return {ns}.where(a < 1, near, far)\n"
        )
        for backend, ns, minimum in (
            ("numpy", "np", "minimum"), ("jax", "jnp", "minimum"), ("torch", "torch", "clamp_max")
        )
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
        for backend, ns, maximum in (
            ("numpy", "np", "maximum"), ("jax", "jnp", "maximum"), ("torch", "torch", "clamp_min")
        )
    }

    @classmethod
    def textbook(cls, u):
        return sympy.log(sympy.log(1 + sympy.exp(u)))


class ScaledProduct(Primitive):
    """c*d, where d is a product of factors that vanish at some end (sigmoids, exponentials)
    and L = log(d) is known in stable form. NumPy and PyTorch compute c*d as it stands; JAX
    computes sign(c)*exp(log|c| + L): XLA on CPU flushes a subnormal d to 0 even where c*d is
    a normal number (x*sigmoid(x) at x = -88 in float32)."""

    display = "scaled_product"
    nargs = 3
    lowering = {
        "numpy": "({p0} * {p1})",
        "jax": "_scaled_product({0}, {1}, {2})",
        "torch": "({p0} * {p1})",
    }
    # log space only where d is below the smallest normal number: elsewhere c*d is the more
    # accurate (exp of a large sum has the sum's rounding error, |log d| ulps)
    helpers = {
        "jax": (
            "def _scaled_product(c, d, log_d):\n"
            "    log_tiny = math.log(jnp.finfo(jnp.asarray(log_d).dtype).tiny)\n"
            "    logged = jnp.sign(c) * jnp.exp(jnp.log(jnp.abs(c)) + log_d)\n"
            "    return jnp.where(log_d > log_tiny, c * d, logged)\n"
        ),
    }

    @classmethod
    def textbook(cls, c, d, log_d):
        return c * d


PRIMITIVES: tuple[type[Primitive], ...] = (
    Sigmoid, LogSigmoid, Softplus, Exp, Expm1, LogRatio, LogAddExp, LogCosh, Erfc, ScaledProduct,
    LogSoftplus,
)


def to_textbook(expr: sympy.Expr) -> sympy.Expr:
    """Replace every primitive (and log1p, expm1) by its plain SymPy meaning."""
    expr = expr.replace(
        lambda node: isinstance(node, Primitive),
        lambda node: type(node).textbook(*node.args),
    )
    return expr.replace(log1p, lambda u: sympy.log(1 + u)).replace(expm1, lambda u: sympy.exp(u) - 1)
