"""Backends as data: the functions each one calls, and one printer that uses those tables.

A backend is a name, a table from SymPy function to a call format, a few literal forms, and a
template (``templates/<backend>.py.j2``). The printer raises on any node it has no entry for:
a silent fallback would emit wrong code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy
from sympy.printing.precedence import PRECEDENCE, precedence

from ._primitives import JAX_LOG1P, Primitive, ScaledProduct, ScaledSum, ScaledTerm
from ._types import CHOICE_PREFIX

__all__ = ["BACKENDS", "Backend", "UnprintableError", "print_expr"]


class UnprintableError(ValueError):
    """The expression holds a node this backend has no lowering for."""


@dataclass(frozen=True)
class Backend:
    name: str
    #: SymPy function class name -> format string over printed arguments
    functions: dict[str, str]
    #: broadcasting select: cond, then, else
    where: str
    #: SymPy function class name -> helper definitions its format string calls
    helpers: dict[str, str] = field(default_factory=dict)


_NUMPY = {
    "exp": "np.exp({0})",
    "log": "np.log({0})",
    "sqrt": "np.sqrt({0})",
    "Abs": "np.abs({0})",
    "sign": "np.sign({0})",
    "Max": "np.maximum({0}, {1})",
    "Min": "np.minimum({0}, {1})",
    "tanh": "np.tanh({0})",
    "sinh": "np.sinh({0})",
    "cosh": "np.cosh({0})",
    "erf": "_special.erf({0})",
    "erfc": "_special.erfc({0})",
    "Heaviside": "np.where({0} > 0, 1.0, 0.0)",
    "log1p": "np.log1p({0})",
    "expm1": "np.expm1({0})",
}
_JAX = {
    "exp": "jnp.exp({0})",
    "log": "jnp.log({0})",
    "sqrt": "jnp.sqrt({0})",
    "Abs": "jnp.abs({0})",
    "sign": "jnp.sign({0})",
    "Max": "jnp.maximum({0}, {1})",
    "Min": "jnp.minimum({0}, {1})",
    "tanh": "jnp.tanh({0})",
    "sinh": "jnp.sinh({0})",
    "cosh": "jnp.cosh({0})",
    "erf": "jax.scipy.special.erf({0})",
    "erfc": "jax.scipy.special.erfc({0})",
    "Heaviside": "jnp.where({0} > 0, 1.0, 0.0)",
    "log1p": "_log1p({0})",
    "expm1": "jnp.expm1({0})",
}
_TORCH = {
    "exp": "torch.exp({0})",
    "log": "torch.log({0})",
    "sqrt": "torch.sqrt({0})",
    "Abs": "torch.abs({0})",
    "sign": "torch.sign({0})",
    "Max": "torch.maximum({0}, {1})",
    "Min": "torch.minimum({0}, {1})",
    "tanh": "torch.tanh({0})",
    "sinh": "torch.sinh({0})",
    "cosh": "torch.cosh({0})",
    "erf": "torch.special.erf({0})",
    "erfc": "torch.special.erfc({0})",
    "Heaviside": "torch.sign(torch.relu({0}))",
    "log1p": "torch.log1p({0})",
    "expm1": "torch.expm1({0})",
}

BACKENDS: dict[str, Backend] = {
    "numpy": Backend("numpy", _NUMPY, "np.where({0}, {1}, {2})"),
    "jax": Backend("jax", _JAX, "jnp.where({0}, {1}, {2})", {"log1p": JAX_LOG1P}),
    "torch": Backend("torch", _TORCH, "torch.where(torch.as_tensor({0}), {1}, {2})"),
}


def _number(expr: sympy.Expr) -> str:
    if expr.is_Integer:
        # beyond int32 a float literal: JAX without x64 cannot take the integer as an operand
        return str(int(expr)) if abs(int(expr)) < 2**31 else repr(float(expr))
    if expr.is_Rational:
        value = float(expr)
        # a float literal when the fraction is exact in binary, else an exact quotient
        if sympy.Rational(value) == expr:
            return repr(value)
        return f"({expr.p} / {expr.q})"
    if expr.is_Float:
        return repr(float(expr))
    if expr is sympy.pi:
        return repr(float(sympy.pi))
    if expr is sympy.E:
        return repr(float(sympy.E))
    raise UnprintableError(f"cannot print the number {expr}")


def _is_choice_test(cond) -> bool:
    """Whether ``cond`` tests categorical parameters (it mentions a choice symbol)."""
    return any(s.name.startswith(CHOICE_PREFIX) for s in getattr(cond, "free_symbols", ()))


def _as_term(expr: sympy.Expr) -> sympy.Expr:
    """A term of a ScaledSum with its scaled product (itself, or a branch's) as a ScaledTerm."""
    if type(expr) is ScaledProduct:
        return ScaledTerm(*expr.args)
    if isinstance(expr, sympy.Piecewise):
        return sympy.Piecewise(*((_as_term(e), c) for e, c in expr.args), evaluate=False)
    return expr


class _Printer:
    def __init__(self, backend: Backend):
        self.backend = backend

    def paren(self, expr: sympy.Expr, level: int, *, strict: bool = False) -> str:
        text = self.print(expr)
        prec = precedence(expr)
        if text.startswith("-") and isinstance(expr, Primitive):
            prec = PRECEDENCE["Add"]  # a lowering like "-np.logaddexp(0, x)" is a negation
        if prec < level or (strict and prec == level):
            return f"({text})"
        return text

    def print(self, expr: sympy.Expr) -> str:
        if expr.is_Symbol:
            if expr.name.startswith(CHOICE_PREFIX):  # a categorical parameter's choice
                return repr(expr.name[len(CHOICE_PREFIX) :])
            return expr.name
        if expr.is_Number or expr in (sympy.pi, sympy.E):
            if expr.is_negative:
                return f"-{_number(-expr)}"
            return _number(expr)
        if expr.is_number and expr.is_real and not expr.has(Primitive):
            # a constant such as sqrt(2/pi): one float literal, not backend calls on numbers
            value = float(expr)
            return repr(value) if value >= 0 else f"({value!r})"
        if expr.is_Add:
            return self._add(expr)
        if expr.is_Mul:
            return self._mul(expr)
        if expr.is_Pow:
            return self._pow(expr)
        if isinstance(expr, (sympy.core.relational.Relational, sympy.Or, sympy.And)):
            return self.condition(expr)
        if isinstance(expr, sympy.Piecewise):
            *head, (default, always) = expr.args
            if always is not sympy.true:
                raise UnprintableError(f"a Piecewise without a default branch: {expr}")
            out = self.print(default)
            for value, condition in reversed(head):
                if _is_choice_test(condition):  # decided once per call, in Python
                    out = f"({self.print(value)} if {self.choice_test(condition)} else {out})"
                else:
                    out = self.backend.where.format(self.condition(condition), self.print(value), out)
            return out
        if isinstance(expr, Primitive):
            fmt = type(expr).lowering.get(self.backend.name)
            if fmt is None:
                raise UnprintableError(
                    f"{type(expr).__name__} has no lowering for the {self.backend.name} backend"
                )
            if isinstance(expr, ScaledSum):  # (its terms' scaled products: see ScaledTerm)
                args = [self.print(_as_term(a) if k % 4 == 0 else a) for k, a in enumerate(expr.args)]
            else:
                args = [self.print(arg) for arg in expr.args]
            negated = {f"n{i}": self.print(-arg) for i, arg in enumerate(expr.args)}
            # {p0}: the argument parenthesized for use as an operand
            operands = {f"p{i}": self.paren(arg, PRECEDENCE["Pow"], strict=True) for i, arg in enumerate(expr.args)}
            if "{all}" in fmt or "{sum}" in fmt:  # variadic: the arguments joined
                terms = expr.args[0::4] if isinstance(expr, ScaledSum) else expr.args
                return fmt.format(all=", ".join(args), sum=self.print(sympy.Add(*terms)))
            return fmt.format(*args, **negated, **operands)
        if isinstance(expr, sympy.Function) or isinstance(expr, (sympy.Max, sympy.Min)):
            name = type(expr).__name__
            fmt = self.backend.functions.get(name)
            if fmt is None:
                raise UnprintableError(f"{name} has no lowering for the {self.backend.name} backend")
            if len(expr.args) > 2 and name in ("Max", "Min"):
                head, *rest = expr.args
                return self.print(type(expr)(head, type(expr)(*rest), evaluate=False))
            if name in ("Max", "Min") and self.backend.name == "torch":
                numbers = [a for a in expr.args if a.is_Number]
                if numbers:  # torch.maximum takes tensors only
                    (other,) = [a for a in expr.args if not a.is_Number]
                    bound = "min" if name == "Max" else "max"
                    return f"torch.clamp({self.print(other)}, {bound}={self.print(numbers[0])})"
            return fmt.format(*(self.print(arg) for arg in expr.args))
        raise UnprintableError(
            f"cannot print {type(expr).__name__} ({expr}) for the {self.backend.name} backend"
        )

    def choice_test(self, cond) -> str:
        """A Python bool: categorical parameters compared with their choices."""
        if isinstance(cond, (sympy.Or, sympy.And)):
            joiner = " or " if isinstance(cond, sympy.Or) else " and "
            return joiner.join(f"({self.choice_test(c)})" for c in cond.args)
        if isinstance(cond, sympy.Not):
            return f"not ({self.choice_test(cond.args[0])})"
        return f"{self.print(cond.lhs)} {cond.rel_op} {self.print(cond.rhs)}"

    _RELATIONS = {"==": "==", "!=": "!=", ">=": ">=", ">": ">", "<=": "<=", "<": "<"}

    def condition(self, cond) -> str:
        """A boolean array expression: comparisons joined by | and &."""
        if isinstance(cond, (sympy.Or, sympy.And)):
            joiner = " | " if isinstance(cond, sympy.Or) else " & "
            parts = sorted((self.condition(c) for c in cond.args))
            return joiner.join(f"({p})" for p in parts)
        if isinstance(cond, sympy.Symbol):  # a condition named by the simplify pass
            return cond.name
        if isinstance(cond, sympy.core.relational.Relational) and cond.rel_op in self._RELATIONS:
            return f"{self.print(cond.lhs)} {cond.rel_op} {self.print(cond.rhs)}"
        raise UnprintableError(f"cannot print the condition {cond} for the {self.backend.name} backend")

    def _add(self, expr: sympy.Add) -> str:
        terms = sympy.Add.make_args(expr)
        # a stable, readable order: sympy's canonical printing order
        terms = sorted(terms, key=sympy.default_sort_key)
        out = ""
        for i, term in enumerate(terms):
            coeff, _ = term.as_coeff_Mul()
            if i and coeff.is_negative:
                out += " - " + self.paren(-term, PRECEDENCE["Add"], strict=True)
            elif i:
                out += " + " + self.paren(term, PRECEDENCE["Add"])
            else:
                out += self.paren(term, PRECEDENCE["Add"])
        return out

    def _mul(self, expr: sympy.Mul) -> str:
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_negative:
            inner = self._mul_positive(-expr)
            return f"-{inner}" if precedence(-expr) >= PRECEDENCE["Mul"] else f"-({inner})"
        return self._mul_positive(expr)

    def _mul_positive(self, expr: sympy.Expr) -> str:
        if not expr.is_Mul:
            return self.paren(expr, PRECEDENCE["Mul"])
        numer, denom = [], []
        for factor in sympy.Mul.make_args(expr):
            if factor.is_Pow and factor.exp.is_Rational and factor.exp.is_negative:
                if factor.exp.is_Integer and factor.exp >= -3:
                    # b**-2 as two divisions by b: b**2 can underflow (or overflow) where
                    # the quotient does not
                    denom += [factor.base] * int(-factor.exp)
                else:
                    denom.append(sympy.Pow(factor.base, -factor.exp, evaluate=False))
            elif factor.is_Rational and not factor.is_Integer:
                if factor.p != 1:
                    numer.append(sympy.Integer(factor.p))
                denom.append(sympy.Integer(factor.q))
            else:
                numer.append(factor)
        numer.sort(key=lambda f: (not f.is_Number, sympy.default_sort_key(f)))
        denom.sort(key=lambda f: (not f.is_Number, sympy.default_sort_key(f)))
        top = " * ".join(self.paren(f, PRECEDENCE["Mul"]) for f in numer) or "1"
        if not denom:
            return top
        # one division at a time: a product of denominators can overflow or underflow first
        return " / ".join([top, *(self.paren(f, PRECEDENCE["Mul"], strict=True) for f in denom)])

    def _pow(self, expr: sympy.Pow) -> str:
        base, exp = expr.base, expr.exp
        if exp == sympy.Rational(1, 2):
            return self.backend.functions["sqrt"].format(self.print(base))
        if exp == -1:
            return f"1 / {self.paren(base, PRECEDENCE['Mul'], strict=True)}"
        if exp.is_Rational and exp.is_negative:
            return f"1 / {self.paren(sympy.Pow(base, -exp, evaluate=False), PRECEDENCE['Mul'], strict=True)}"
        if base is sympy.E:
            return self.print(sympy.exp(exp, evaluate=False))
        return f"{self.paren(base, PRECEDENCE['Pow'], strict=True)}**{self.paren(exp, PRECEDENCE['Pow'], strict=True)}"


def print_expr(expr: sympy.Expr, backend: str) -> str:
    """Print ``expr`` as a Python expression for ``backend``; raise on anything unknown."""
    return _Printer(BACKENDS[backend]).print(expr)
