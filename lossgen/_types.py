"""The spec as lossgen reads it: frozen dataclasses shared by every pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import sympy

__all__ = [
    "CHOICE_PREFIX",
    "Diagnostic",
    "Domain",
    "Input",
    "Param",
    "Spec",
    "SpecError",
    "choice_symbol",
    "specialize",
]

ROLES = ("differentiated", "constant")
SHAPES = ("scalar", "classes", "vector", "set", "batch")
#: shapes with a last axis that the loss reduces (class probabilities, embedding coordinates)
AXIS_SHAPES = ("classes", "vector", "set")
#: what generation does when the passes leave a term unstabilized (the spec's ``on_unstable``)
ON_UNSTABLE = ("warn", "error")
#: extra functions a spec may ask its generated modules for (the spec's ``exports``):
#: ``grad_norm``, |d loss / d x| from the derived gradient (one differentiated elementwise
#: input); ``GHMWeights``, gradient-harmonizing weights from binned gradient norms
EXPORTS = ("grad_norm", "GHMWeights")
#: names the generated modules use themselves (modules, arguments, builtins): a spec symbol of
#: that name would shadow them. Private helpers start with "_", which symbol names cannot.
RESERVED_NAMES = frozenset(
    {
        "np", "jnp", "jax", "torch", "math", "scipy", "numbers",
        "shape", "out", "v", "blocks", "value", "grad", "hess", "hvp",
        "sum", "zip", "float", "tuple", "isinstance", "next",
    }
)


#: the name prefix of the symbols that stand for a categorical parameter's choices
CHOICE_PREFIX = "choice:"


def choice_symbol(choice: str) -> sympy.Symbol:
    """What a categorical parameter is compared with: ``approximate == "tanh"`` in a spec is
    ``Eq(approximate, choice_symbol("tanh"))``."""
    return sympy.Symbol(CHOICE_PREFIX + choice)


def specialize(expr: sympy.Expr, choices: dict[str, str]) -> sympy.Expr:
    """``expr`` with every test of a categorical parameter in ``choices`` decided: the
    conditionals on them collapse to the chosen branch."""

    def decided(node):
        lhs, rhs = node.args
        return sympy.true if rhs.name == CHOICE_PREFIX + choices[lhs.name] else sympy.false

    def is_test(node):
        return (
            isinstance(node, sympy.Eq)
            and isinstance(node.rhs, sympy.Symbol)
            and node.rhs.name.startswith(CHOICE_PREFIX)
            and node.lhs.name in choices
        )

    return expr.replace(is_test, decided)


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a spec file, printed as ``path:LINE:COL: message`` (1-based)."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class SpecError(Exception):
    """Every problem found in one or more spec files."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


@dataclass(frozen=True)
class Domain:
    """A set of allowed values, from a domain string.

    kind ``interval``: ``lo``/``hi`` are SymPy numbers or +-oo, with open/closed ends;
    kind ``set``: ``elements`` lists the values; kind ``index``: an integer class index.
    """

    text: str
    kind: Literal["interval", "set", "index"]
    lo: sympy.Expr | None = None
    hi: sympy.Expr | None = None
    lo_closed: bool = False
    hi_closed: bool = False
    elements: tuple[sympy.Expr, ...] = ()

    def as_sympy(self) -> sympy.Set:
        if self.kind == "interval":
            return sympy.Interval(
                self.lo, self.hi, left_open=not self.lo_closed, right_open=not self.hi_closed
            )
        if self.kind == "set":
            return sympy.FiniteSet(*self.elements)
        return sympy.Naturals0

    def contains(self, value: float) -> bool:
        return bool(self.as_sympy().contains(sympy.nsimplify(value)))


@dataclass(frozen=True)
class Input:
    name: str
    role: Literal["differentiated", "constant"]
    domain: Domain
    shape: Literal["scalar", "classes", "vector", "set", "batch"]
    symbol: sympy.Symbol
    line: int = 0
    col: int = 0


@dataclass(frozen=True)
class Param:
    name: str
    symbol: sympy.Symbol
    default: float | str
    domain: Domain | None = None
    choices: tuple[str, ...] | None = None
    line: int = 0
    col: int = 0


@dataclass(frozen=True)
class Spec:
    """A validated spec file."""

    name: str
    summary: str
    references: tuple[str, ...]
    inputs: tuple[Input, ...]
    params: tuple[Param, ...]
    #: ordered named intermediates, each may use inputs, params and earlier names
    define: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    loss: sympy.Expr
    path: str
    #: sha256 of the file's bytes
    source_hash: str
    source_text: str = field(default="", repr=False)
    #: ``warn`` (the default): report terms the passes could not stabilize and generate;
    #: ``error``: refuse to generate
    on_unstable: Literal["warn", "error"] = "warn"
    #: 1-based position of the ``on_unstable`` value in the file (0 when the field is absent)
    on_unstable_at: tuple[int, int] = (0, 0)
    #: conventions the generated code follows (subgradients at kinks, ...), in the docstring
    notes: str = ""
    #: extra functions of the generated modules, from :data:`EXPORTS`
    exports: tuple[str, ...] = ()
    #: the defines and the loss as the file writes them: (name, text) pairs, "loss" last
    formula_text: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def has_classes(self) -> bool:
        """Whether the loss reduces over a last axis (an input of shape ``classes`` or
        ``vector``): both are derived by the chain rule over reductions (``_classes``)."""
        return any(i.shape in AXIS_SHAPES for i in self.inputs)

    @property
    def is_batch(self) -> bool:
        """Whether the loss couples the rows of a batch (an input of shape ``batch``)."""
        return any(i.shape == "batch" for i in self.inputs)

    @property
    def is_elementwise(self) -> bool:
        """Whether the loss is elementwise: no class axis, no batch coupling its rows."""
        return not (self.has_classes or self.is_batch)

    @property
    def differentiated(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.role == "differentiated")

    @property
    def categorical(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.choices is not None)

    def variants(self) -> list[dict[str, str]]:
        """Every combination of the categorical parameters' choices (one empty one if none)."""
        combos: list[dict[str, str]] = [{}]
        for p in self.categorical:
            combos = [{**combo, p.name: choice} for combo in combos for choice in p.choices]
        return combos

    def expression(self, choices: dict[str, str] | None = None) -> sympy.Expr:
        """The loss with every ``define`` substituted: the textbook expression, with the
        categorical parameters at ``choices`` (their defaults where not given)."""
        expr = self.loss
        for symbol, definition in reversed(self.define):
            expr = expr.subs(symbol, definition)
        chosen = {p.name: str(p.default) for p in self.categorical} | dict(choices or {})
        expr = specialize(expr, chosen) if chosen else expr
        if self.has_classes and expr.has(sympy.Abs):
            from ._norms import drop_abs

            # abs of the triangle inequality's slack is the slack: its derivatives there
            expr = drop_abs(expr)
        return expr
