"""The functions a spec's expression may call: name -> (SymPy constructor, arity, meaning).

This is the whole expression vocabulary of the spec language. A spec states the textbook
formula, so numerically motivated forms (log1p, expm1, logaddexp, ...) are deliberately absent:
stability comes from lossgen's passes. Every entry must be printable by every backend
(``tests/test_backends.py`` checks that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy

from ._batch import Other
from ._classes import ClassSum, LogSumExp, OneHot
from ._primitives import Sigmoid, Softplus

__all__ = ["SPEC_FUNCTIONS", "SpecFunction"]


@dataclass(frozen=True)
class SpecFunction:
    name: str
    build: Callable[..., sympy.Expr]
    #: allowed numbers of arguments
    arity: tuple[int, ...]
    meaning: str


def _table(*entries: SpecFunction) -> dict[str, SpecFunction]:
    return {entry.name: entry for entry in entries}


SPEC_FUNCTIONS: dict[str, SpecFunction] = _table(
    SpecFunction("exp", sympy.exp, (1,), "e**x"),
    SpecFunction("log", sympy.log, (1,), "natural logarithm"),
    SpecFunction("sqrt", sympy.sqrt, (1,), "square root"),
    SpecFunction("abs", sympy.Abs, (1,), "absolute value"),
    SpecFunction("sign", sympy.sign, (1,), "sign, 0 at 0"),
    SpecFunction("min", sympy.Min, (2,), "smaller of two values"),
    SpecFunction("max", sympy.Max, (2,), "larger of two values"),
    SpecFunction("tanh", sympy.tanh, (1,), "hyperbolic tangent"),
    SpecFunction("sinh", sympy.sinh, (1,), "hyperbolic sine"),
    SpecFunction("cosh", sympy.cosh, (1,), "hyperbolic cosine"),
    SpecFunction("erf", sympy.erf, (1,), "error function"),
    SpecFunction("sigmoid", Sigmoid, (1,), "logistic function 1 / (1 + exp(-x))"),
    SpecFunction("softplus", Softplus, (1,), "log(1 + exp(x))"),
    # over the class axis (the last): one number per row, or per entry for softmax
    SpecFunction("sum", ClassSum, (1,), "sum over the class axis"),
    SpecFunction("logsumexp", LogSumExp, (1,), "log(sum(exp(e))) over the class axis"),
    SpecFunction("softmax", lambda e: sympy.exp(e - LogSumExp(e)), (1,), "exp(e) / sum(exp(e))"),
    SpecFunction("log_softmax", lambda e: e - LogSumExp(e), (1,), "e - logsumexp(e)"),
    SpecFunction("pick", lambda x, k: ClassSum(OneHot(k) * x), (2,), "x at the class index k"),
    # over a batch (shape batch): the loss of row i written over the other rows j
    SpecFunction("other", Other, (1,), "e at another row j of the batch (its reductions run over j)"),
)

#: the functions that reduce over (or need) a class axis, or a batch's other rows
CLASS_FUNCTIONS = ("sum", "logsumexp", "softmax", "log_softmax", "pick", "other")
