"""Expression text -> SymPy, without ever evaluating the text.

A spec's expressions are parsed with ``ast.parse(text, mode="eval")`` and the tree is walked
by :class:`_Builder`, which admits only:

* int and float literals (floats exactly, from their source text: ``0.1`` is 1/10);
* names of declared symbols, and the constant ``pi``;
* unary ``+``/``-`` and binary ``+ - * / **``;
* calls ``f(a, b)`` of a function in :data:`SPEC_FUNCTIONS` with an allowed number of
  positional arguments;
* conditionals ``a if COND else b``, where COND compares two expressions with ``< <= > >=``
  (joined by ``and``/``or``), or a categorical parameter with one of its choices
  (``approximate == "tanh"``, ``!=``). They become a SymPy ``Piecewise``; a categorical test
  becomes ``Eq(param, choice_symbol(choice))``, resolved per choice by the pipeline.

Everything else (attribute access, subscripts, lambdas, other comparisons, strings, ...) is refused
with an :class:`ExprError` naming the construct and the column where it starts. ``eval``,
``sympify`` and ``parse_expr`` are never used: they would execute or interpret the text.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping

import sympy

from ._functions import SPEC_FUNCTIONS
from ._types import CHOICE_PREFIX, choice_symbol

__all__ = ["CONSTANTS", "ExprError", "free_names", "parse_expression"]

#: named constants an expression may use (a declared symbol of the same name wins)
CONSTANTS = {"pi": sympy.pi}


_ALLOWED = "numbers, declared symbols, + - * / ** and calls of " + ", ".join(SPEC_FUNCTIONS)

#: numerically motivated functions left out of the vocabulary on purpose -> textbook form
_TEXTBOOK_FORMS = {
    "log1p": "log(1 + x)",
    "expm1": "exp(x) - 1",
    "logaddexp": "log(exp(a) + exp(b))",
    "logsumexp": "log(exp(a) + exp(b))",
    "log_sigmoid": "log(sigmoid(x))",
    "logsigmoid": "log(sigmoid(x))",
    "log1mexp": "log(1 - exp(x))",
    "xlogy": "x*log(y)",
    "xlog1py": "x*log(1 + y)",
    "expit": "sigmoid(x)",
    "logit": "log(p/(1 - p))",
    "pow": "a**b",
    "square": "x**2",
    "fabs": "abs(x)",
}

_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_OPERATOR_HINTS = {
    ast.BitXor: "'^' is bitwise xor in Python; write '**' for a power",
    ast.FloorDiv: "floor division '//' is not allowed; write '/' for division",
    ast.Mod: "the remainder operator '%' is not allowed",
    ast.MatMult: "matrix multiplication '@' is not allowed; write '*' for a product",
    ast.LShift: "the shift operator '<<' is not allowed",
    ast.RShift: "the shift operator '>>' is not allowed",
    ast.BitAnd: "the bitwise operator '&' is not allowed",
    ast.BitOr: "the bitwise operator '|' is not allowed",
}
_UNARY_HINTS = {
    ast.Not: "boolean 'not' is not allowed in an expression",
    ast.Invert: "bitwise inversion '~' is not allowed in an expression",
}
#: node type -> how to name the construct in a message
_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts (indexing) are",
    ast.Slice: "slices are",
    ast.Lambda: "lambda functions are",
    ast.Compare: "comparisons outside a conditional ('a if x < c else b') are",
    ast.BoolOp: "boolean operators ('and', 'or') outside a conditional are",
    ast.List: "list literals are",
    ast.Tuple: "tuples (is there a stray comma?) are",
    ast.Set: "set literals are",
    ast.Dict: "dict literals are",
    ast.ListComp: "list comprehensions are",
    ast.SetComp: "set comprehensions are",
    ast.DictComp: "dict comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.NamedExpr: "assignment expressions (':=') are",
    ast.Starred: "starred arguments ('*args') are",
    ast.Await: "'await' is",
    ast.Yield: "'yield' is",
    ast.YieldFrom: "'yield from' is",
    ast.Call: "calling the result of a call is",
}
#: integer exponents beyond this are refused: 10**10**10 would never finish
_MAX_EXPONENT = 1000
_MAX_NUMBER_BITS = 20_000


class ExprError(ValueError):
    """An expression that lossgen refuses; ``col`` is the 0-based offset in the text.

    ``problems`` lists every ``(col, message)`` found in the expression, first one first;
    ``message`` and ``col`` are the first.
    """

    def __init__(self, message: str, col: int, *, problems: tuple[tuple[int, str], ...] = ()):
        self.message = message
        self.col = col
        self.problems = problems or ((col, message),)
        super().__init__(f"column {col}: {message}")


def parse_expression(
    text: str,
    names: Mapping[str, sympy.Symbol],
    *,
    refused: Mapping[str, str] | None = None,
    categorical: Mapping[str, tuple[sympy.Symbol, tuple[str, ...]]] | None = None,
) -> sympy.Expr:
    """Build the SymPy expression that ``text`` denotes over the symbols in ``names``.

    ``refused`` maps names that exist but may not be used here (a categorical parameter, a
    ``define`` further down) to the message explaining why; ``categorical`` maps a categorical
    parameter's name to its symbol and choices, for the tests of conditionals. Raises
    :class:`ExprError` carrying every problem found.
    """
    if not isinstance(text, str):
        raise ExprError(f"an expression must be a string, not {type(text).__name__}", 0)
    if not text.strip():
        raise ExprError("the expression is empty; write the formula, e.g. 'log(1 + exp(-x))'", 0)
    tree = _parse_tree(text)
    builder = _Builder(text, names, refused or {}, categorical or {})
    try:
        result = builder.build(tree.body)
    except RecursionError:
        raise ExprError("the expression is nested too deeply; split it with 'define'", 0) from None
    if builder.problems:
        col, message = builder.problems[0]
        raise ExprError(message, col, problems=tuple(builder.problems))
    assert result is not None
    return result


def free_names(expr: sympy.Expr) -> set[str]:
    """Names of the symbols that ``expr`` depends on (a choice is not a symbol of the spec)."""
    return {
        symbol.name
        for symbol in expr.free_symbols
        if isinstance(symbol, sympy.Symbol) and not symbol.name.startswith(CHOICE_PREFIX)
    }


def _parse_tree(text: str) -> ast.Expression:
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError as error:
        if error.offset:
            col = _offset(text, error.lineno or 1, error.offset - 1, chars=True)
        else:  # no position: Python gives none when the text ends too early
            col = len(text.rstrip())
        message = error.msg
        hint = "check for unbalanced parentheses or a missing operator"
        if "\n" in text.strip() and "parenthes" not in message:
            hint += "; to split a long expression over lines, wrap it in parentheses"
        if message.startswith("unexpected indent"):
            hint = "remove the leading spaces"
        raise ExprError(f"syntax error in expression: {message}; {hint}", col) from None
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes, huge literals
        raise ExprError(f"cannot parse expression: {error}", 0) from None


def _offset(text: str, lineno: int, col: int, *, chars: bool = False) -> int:
    """Absolute 0-based character offset in ``text`` of (1-based line, column).

    ``ast`` node columns count UTF-8 bytes; ``chars=True`` says ``col`` already counts
    characters (as SyntaxError offsets do).
    """
    lines = text.split("\n")
    lineno = max(1, min(lineno, len(lines)))
    line = lines[lineno - 1]
    if not chars:
        col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
    start = sum(len(previous) + 1 for previous in lines[: lineno - 1])
    return max(0, min(start + col, len(text)))


class _Builder:
    """Walks an ``ast`` expression; records problems and goes on where it sensibly can."""

    def __init__(
        self,
        text: str,
        names: Mapping[str, sympy.Symbol],
        refused: Mapping[str, str],
        categorical: Mapping[str, tuple[sympy.Symbol, tuple[str, ...]]],
    ):
        self.text = text
        self.names = names
        self.refused = refused
        self.categorical = categorical
        self.problems: list[tuple[int, str]] = []

    def col(self, node: ast.AST) -> int:
        return _offset(self.text, getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def fail(self, node: ast.AST, message: str) -> None:
        self.problems.append((self.col(node), message))
        return None

    def build(self, node: ast.AST) -> sympy.Expr | None:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.IfExp):
            return self.conditional(node)
        construct = _CONSTRUCTS.get(type(node), f"'{type(node).__name__}' syntax is")
        return self.fail(node, f"{construct} not allowed in an expression; use {_ALLOWED}")

    def constant(self, node: ast.Constant) -> sympy.Expr | None:
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            return self.fail(
                node, f"the constant {value!r} is not allowed in an expression; use a number"
            )
        if isinstance(value, (str, bytes)):
            return self.fail(
                node,
                "string literals are not allowed in an expression (only as the choice in "
                "a test such as approximate == \"tanh\"); names are written without quotes",
            )
        if isinstance(value, complex):
            return self.fail(node, "complex numbers are not allowed in an expression")
        if isinstance(value, int):
            if value.bit_length() > _MAX_NUMBER_BITS:
                return self.fail(node, "this integer literal is too large")
            return sympy.Integer(value)
        if isinstance(value, float):
            literal = (ast.get_source_segment(self.text, node) or repr(value)).replace("_", "")
            exponent = re.search(r"[eE]([+-]?\d+)$", literal)
            if exponent and abs(int(exponent.group(1))) > _MAX_EXPONENT:
                return self.fail(
                    node, f"the literal {literal} has an exponent beyond ±{_MAX_EXPONENT}"
                )
            try:
                return sympy.Rational(literal)
            except (TypeError, ValueError):
                return sympy.nsimplify(value, rational=True)
        return self.fail(node, f"the literal {value!r} is not allowed in an expression")

    def name(self, node: ast.Name) -> sympy.Expr | None:
        name = node.id
        if name in self.names:
            return self.names[name]
        if name in self.refused:
            return self.fail(node, self.refused[name])
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name.startswith("__"):
            return self.fail(
                node, f"dunder names such as '{name}' are not allowed in an expression"
            )
        if name in SPEC_FUNCTIONS:
            return self.fail(
                node, f"'{name}' is a function; call it with an argument, e.g. {name}(x)"
            )
        suggestion = _did_you_mean(name, [*self.names, *self.refused, *SPEC_FUNCTIONS])
        fix = "declare it under inputs, params or define"
        if suggestion:
            return self.fail(node, f"unknown symbol '{name}'; {suggestion} Otherwise {fix}")
        return self.fail(node, f"unknown symbol '{name}'; {fix}")

    def unary(self, node: ast.UnaryOp) -> sympy.Expr | None:
        if isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = self.build(node.operand)
            if operand is None:
                return None
            return operand if isinstance(node.op, ast.UAdd) else -operand
        return self.fail(
            node, _UNARY_HINTS.get(type(node.op), "this unary operator is not allowed")
        )

    def binary(self, node: ast.BinOp) -> sympy.Expr | None:
        if type(node.op) not in _OPERATORS:
            message = _OPERATOR_HINTS.get(type(node.op), "this operator is not allowed")
            return self.fail(node, f"{message}; use {_ALLOWED}")
        left, right = self.build(node.left), self.build(node.right)
        if left is None or right is None:
            return None
        op = type(node.op)
        if op is ast.Add:
            return left + right
        if op is ast.Sub:
            return left - right
        if op is ast.Mult:
            return left * right
        if op is ast.Div:
            if right.is_zero:
                return self.fail(node.right, "division by zero")
            return left / right
        return self.power(node, left, right)

    def power(self, node: ast.BinOp, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr | None:
        if exponent.is_Number:
            if abs(exponent) > _MAX_EXPONENT:
                return self.fail(node.right, f"the exponent {exponent} is beyond ±{_MAX_EXPONENT}")
            if base.is_Rational:
                bits = max(int(abs(base.p)).bit_length(), int(base.q).bit_length())
                if bits * abs(exponent) > _MAX_NUMBER_BITS:
                    return self.fail(node, "this power is too large a number")
                if base.is_zero and exponent.is_negative:
                    return self.fail(node, "division by zero (0 raised to a negative power)")
        return base**exponent

    def conditional(self, node: ast.IfExp) -> sympy.Expr | None:
        condition = self.condition(node.test)
        yes, no = self.build(node.body), self.build(node.orelse)
        if condition is None or yes is None or no is None:
            return None
        return sympy.Piecewise((yes, condition), (no, True))

    _RELATIONS = {ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt, ast.GtE: sympy.Ge}

    def condition(self, node: ast.AST):
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(value) for value in node.values]
            if any(part is None for part in parts):
                return None
            return (sympy.And if isinstance(node.op, ast.And) else sympy.Or)(*parts)
        if not isinstance(node, ast.Compare):
            return self.fail(
                node,
                "the test of a conditional must be a comparison, e.g. 'a if abs(r) <= delta "
                "else b', or a categorical parameter against a choice, e.g. "
                "'a if approximate == \"tanh\" else b'",
            )
        if len(node.ops) != 1:
            return self.fail(node, "chained comparisons are not allowed; join two with 'and'")
        op, left, right = type(node.ops[0]), node.left, node.comparators[0]
        if isinstance(left, ast.Name) and left.id in self.categorical:
            return self.choice_test(node, op, left.id, right)
        if op in (ast.Eq, ast.NotEq) and any(
            isinstance(side, ast.Name) and getattr(self.names.get(side.id), "is_integer", False)
            for side in (left, right)
        ):  # a class index against a number: integers, compared exactly
            lhs, rhs = self.build(left), self.build(right)
            if lhs is None or rhs is None:
                return None
            return (sympy.Eq if op is ast.Eq else sympy.Ne)(lhs, rhs, evaluate=False)
        if op not in self._RELATIONS:
            if op in (ast.Eq, ast.NotEq):
                return self.fail(
                    node,
                    "'==' and '!=' compare a categorical parameter with one of its choices, "
                    "or a class index with a number; compare other numbers with < <= > >=",
                )
            return self.fail(node, "only the comparisons < <= > >= and == / != of a choice are allowed")
        lhs, rhs = self.build(left), self.build(right)
        if lhs is None or rhs is None:
            return None
        return self._RELATIONS[op](lhs, rhs, evaluate=False)

    def choice_test(self, node: ast.Compare, op: type, name: str, right: ast.AST):
        symbol, choices = self.categorical[name]
        if op not in (ast.Eq, ast.NotEq):
            return self.fail(node, f"categorical parameter '{name}' is compared with == or !=")
        if not (isinstance(right, ast.Constant) and isinstance(right.value, str)):
            return self.fail(
                right, f"compare '{name}' with one of its choices, a quoted string: {choices}"
            )
        if right.value not in choices:
            suggestion = _did_you_mean(right.value, choices)
            return self.fail(
                right,
                f"'{right.value}' is not a choice of '{name}' ({', '.join(choices)})"
                + (f"; {suggestion}" if suggestion else ""),
            )
        test = sympy.Eq(symbol, choice_symbol(right.value), evaluate=False)
        return test if op is ast.Eq else sympy.Not(test)

    def call(self, node: ast.Call) -> sympy.Expr | None:
        if not isinstance(node.func, ast.Name):
            construct = _CONSTRUCTS.get(type(node.func), "calling the result of an expression is")
            return self.fail(
                node.func,
                f"{construct} not allowed in an expression; only the "
                f"functions {', '.join(SPEC_FUNCTIONS)} can be called, by name",
            )
        name = node.func.id
        if name not in SPEC_FUNCTIONS:
            if name in _TEXTBOOK_FORMS:
                return self.fail(
                    node.func,
                    f"'{name}' is not in the expression vocabulary on "
                    f"purpose: write the textbook form {_TEXTBOOK_FORMS[name]} "
                    "and lossgen picks the stable form itself",
                )
            if name in self.names or name in self.refused:
                return self.fail(
                    node.func,
                    f"'{name}' is a symbol, not a function; "
                    "write '*' for a product, e.g. a*(b + c)",
                )
            if name.startswith("__"):
                return self.fail(
                    node.func, f"dunder names such as '{name}' are not allowed in an expression"
                )
            suggestion = _did_you_mean(name, SPEC_FUNCTIONS)
            return self.fail(
                node.func,
                f"unknown function '{name}'; "
                f"{suggestion + ' The' if suggestion else 'the'} "
                f"functions are {', '.join(SPEC_FUNCTIONS)}",
            )
        function = SPEC_FUNCTIONS[name]
        if node.keywords:
            return self.fail(
                node.keywords[0],
                f"{name}() takes positional arguments only; keyword arguments are not allowed",
            )
        starred = [arg for arg in node.args if isinstance(arg, ast.Starred)]
        if starred:
            return self.fail(
                starred[0], "starred arguments ('*args') are not allowed in an expression"
            )
        if len(node.args) not in function.arity:
            expected = " or ".join(str(n) for n in function.arity)
            plural = "" if function.arity == (1,) else "s"
            return self.fail(
                node,
                f"{name}() takes {expected} argument{plural} "
                f"({function.meaning}), got {len(node.args)}",
            )
        args = [self.build(arg) for arg in node.args]
        if any(arg is None for arg in args):
            return None
        return function.build(*args)


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""
