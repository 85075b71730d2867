"""The analyse pass: find the terms that break in floating point, and where, and when.

For the textbook expression and its naive derivatives (value, grad, hess), every subterm is
looked at each boundary of each differentiated input's domain (see ``_asymptotics``):

- cancellation: a sum that vanishes although one of its computed terms does not (1 - sigmoid(x)
  as x -> oo), or a log whose argument tends to 1;
- pole: a power of a vanishing base with a negative exponent, e.g. ``(1 - p_t)**(gamma - 2)``
  when gamma < 2 (the condition is solved from the symbolic exponent);
- vanishing base: a power with a symbolic exponent of a base that tends to 0 (underflow, and the
  poles of its derivatives);
- log of a vanishing argument: the argument underflows to 0 and the log to -inf;
- overflow: exp of an argument that tends to +oo;
- zero times infinity: a product with a vanishing and a diverging factor.

Whether the whole quantity diverges there is reported separately (kind ``divergence``): that is
a property of the loss, to be reported, not fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy

from ._asymptotics import Boundary, Scenario, boundaries, leading, scenarios
from ._classes import entrywise_of
from ._ir import Derivation, Finding
from ._primitives import Primitive
from ._types import Spec

__all__ = ["Analysis", "analyse", "analyse_quantities", "display"]


@dataclass
class Analysis:
    """Findings, and for each subterm the boundaries at which it tends to 0."""

    findings: list[Finding] = field(default_factory=list)
    #: subterm -> labels of the boundaries (with scenario) where it vanishes
    vanishing: dict[sympy.Expr, list[str]] = field(default_factory=dict)
    #: subterm -> labels where it tends to 1 (for logs)
    near_one: dict[sympy.Expr, list[str]] = field(default_factory=dict)


def _condition(boolean: sympy.Basic, spec: Spec, coeff: sympy.Expr | None = None) -> str | None:
    """A readable parameter condition restricted to the parameters' domains; None: never.

    ``coeff``: the leading coefficient; parameter values where it is 0 are excluded (at
    gamma = 0 the factor gamma kills the term whatever its exponent says).
    """
    boolean = sympy.sympify(boolean)
    if boolean is sympy.true:
        return "always"
    if boolean is sympy.false:
        return None
    params = {p.symbol: p for p in spec.params if p.domain is not None}
    free = boolean.free_symbols
    if len(free) == 1 and next(iter(free)) in params:
        (symbol,) = free
        domain = params[symbol].domain.as_sympy()
        try:
            where = boolean.as_set().intersect(domain)
            if coeff is not None and symbol in coeff.free_symbols:
                zeros = sympy.solveset(coeff, symbol, domain)
                if isinstance(zeros, sympy.FiniteSet):
                    where = where - zeros
        except (NotImplementedError, TypeError, ValueError):
            return str(boolean)
        if where.is_empty:
            return None
        if where == domain:
            return "always"
        return _relational_text(where, symbol)
    return str(boolean)


def _relational_text(where: sympy.Set, symbol: sympy.Symbol) -> str:
    if isinstance(where, sympy.Interval):
        lo, hi = where.start, where.end
        parts = []
        if lo.is_finite:
            parts.append(f"{lo} {'<' if where.left_open else '<='} ")
        parts.append(str(symbol))
        if hi.is_finite:
            parts.append(f" {'<' if where.right_open else '<='} {hi}")
        return "".join(parts)
    if isinstance(where, sympy.FiniteSet):
        return " or ".join(f"{symbol} = {v}" for v in where)
    return str(where.as_relational(symbol))


def display(expr: sympy.Expr, spec: Spec) -> str:
    """``expr`` printed with the spec's own names for its intermediates (p_t, ce, ...)."""
    expanded = []
    for symbol, definition in spec.define:
        for earlier, value in expanded:
            definition = definition.subs(earlier, value)
        expanded.append((symbol, definition))
    for symbol, definition in reversed(expanded):
        expr = expr.subs(definition, symbol)
        if definition.is_Add:
            expr = expr.subs(-definition, -symbol)
    return sympy.sstr(expr)


def _chosen_at(cond, boundary, scenario) -> bool | None:
    """Whether the condition ``x >= c`` (or <=, >, <) of a conditional holds as x tends to an
    infinite end of its domain, c free of x: True or False where it is decided there, None
    where it is not (a finite end, another form, or c may be infinite in the scenario)."""
    if cond is sympy.true:
        return True
    x = boundary.input.symbol if boundary is not None else None
    if boundary is None or boundary.label not in (f"{x} -> oo", f"{x} -> -oo"):
        return None
    if not isinstance(cond, (sympy.GreaterThan, sympy.StrictGreaterThan, sympy.LessThan,
                             sympy.StrictLessThan)):
        return None
    gap = cond.lhs - cond.rhs
    for sign in (1, -1):
        rest = gap - sign * x
        if x not in rest.free_symbols:
            break
    else:
        return None
    # c is the generic value of interior constants, or finite where the scenario sets them
    fixed = {symbol for symbol, _ in scenario.values} if scenario is not None else set()
    if rest.free_symbols & fixed and rest.subs(dict(scenario.values)).is_finite is not True:
        return None
    grows = sign * (1 if boundary.label == f"{x} -> oo" else -1) > 0
    return grows == isinstance(cond, (sympy.GreaterThan, sympy.StrictGreaterThan))


def _candidates(
    expr: sympy.Expr, xs: set, wholes: bool = True, boundary=None, scenario=None
) -> list[sympy.Expr]:
    """Subterms worth a look: they depend on a differentiated input; primitives are atoms.
    ``wholes=False`` (the emitted forms) leaves out terms that hold a conditional: each branch
    is looked at, and at an infinite end of the domain only the branch chosen there (the
    other, NaN or not, is discarded by the select)."""
    seen, out = set(), []

    def visit(node):
        if node in seen or not isinstance(node, sympy.Expr) or not (node.free_symbols & xs):
            return
        seen.add(node)
        if isinstance(node, sympy.Piecewise):
            for branch, cond in node.args:  # each branch is used on its own side only
                chosen = None if wholes else _chosen_at(cond, boundary, scenario)
                if chosen is False:
                    continue
                visit(branch)
                if chosen:
                    break
            return
        if wholes or not node.has(sympy.Piecewise):
            out.append(node)
        if isinstance(node, Primitive):
            return
        for arg in node.args:
            visit(arg)

    visit(expr)
    return out


def _computed(term: sympy.Expr, xs: set) -> bool:
    """Whether a term is the result of a transcendental function of the inputs (sigmoid, exp,
    a symbolic power), rather than a few roundings of exact inputs (1 - p, 1/p)."""
    return bool(term.free_symbols & xs) and not term.is_rational_function(*xs)


class _Analyser:
    def __init__(self, spec: Spec, wholes: bool = True):
        self.wholes = wholes
        self.spec = spec
        self.xs = {i.symbol for i in spec.differentiated}
        self.boundaries = boundaries(spec)
        self.scenarios = scenarios(spec)
        self.analysis = Analysis()
        self._seen: dict = {}

    def where(self, boundary: Boundary, scenario: Scenario) -> str:
        return boundary.label + (f" ({scenario.label})" if scenario.label else "")

    def add(self, kind, node, boundary, scenario, condition, found_in, result=""):
        if condition is None:
            return
        term = display(node, self.spec)
        key = (kind, term, boundary.label, condition)
        if key not in self._seen:
            self._seen[key] = (len(self.analysis.findings), [], [])
            self.analysis.findings.append(
                Finding(kind, term, boundary.label, condition, found_in, result, node=node)
            )
        index, labels, places = self._seen[key]
        labels.append(scenario.label or "generic")
        places.append(found_in)
        labels[:] = list(dict.fromkeys(labels))
        places[:] = list(dict.fromkeys(places))
        where = boundary.label
        if len(labels) < len(self.scenarios):
            where += " (" + "; ".join(labels) + ")"
        self.analysis.findings[index] = replace(
            self.analysis.findings[index], where=where, found_in=", ".join(places)
        )

    def look(self, quantity: sympy.Expr, found_in: str) -> None:
        spec = self.spec
        for boundary in self.boundaries:
            for scenario in self.scenarios:
                whole = leading(quantity, boundary, scenario)
                if whole is not None:
                    # growth like |x| at an infinite end is the loss's nature, not a blow-up
                    finite_end = not boundary.label.endswith("oo")
                    grows = whole.diverges() if finite_end else whole.exponent < 0
                    cond = _condition(grows, spec, whole.coeff)
                    if cond is not None:
                        self.add("divergence", quantity, boundary, scenario, cond, found_in,
                                 result="the result itself diverges")
                for node in _candidates(quantity, self.xs, self.wholes, boundary, scenario):
                    # (the quantity as a whole is looked at above, but a product evaluated at
                    # an end of the domain itself is 0*inf there even where its limit is not)
                    if node is quantity and not (boundary.attained and node.is_Mul):
                        continue
                    self._node(node, boundary, scenario, found_in)

    def _node(self, node, boundary: Boundary, scenario: Scenario, found_in: str) -> None:
        spec = self.spec
        here = leading(node, boundary, scenario)
        if here is None:
            return
        label = self.where(boundary, scenario)
        vanish = _condition(here.vanishes(), spec)
        if vanish is not None:
            self.analysis.vanishing.setdefault(node, []).append(label)
        if node.is_Add:
            terms = [leading(term, boundary, scenario) for term in node.args]
            if vanish is not None and any(
                b is not None and _condition(b.vanishes(), spec) != "always" and _computed(t, self.xs)
                for t, b in zip(node.args, terms)
            ):
                self.add("cancellation", node, boundary, scenario, vanish, found_in)
        elif node.is_Pow:
            base, exponent = node.args
            base_here = leading(base, boundary, scenario)
            if base_here is None:
                return
            base_vanishes = _condition(base_here.vanishes(), spec)
            if base_vanishes is None:
                return
            diverges = _condition(here.diverges(), spec, here.coeff)
            if diverges is not None:
                self.add("pole", node, boundary, scenario, diverges, found_in)
            elif not exponent.is_Number and _computed(base, self.xs):
                self.add("vanishing base", node, boundary, scenario, base_vanishes, found_in)
        elif isinstance(node, sympy.log):
            (arg,) = node.args
            arg_here = leading(arg, boundary, scenario)
            if arg_here is None or arg.is_Symbol:
                return  # the log of an exact input is accurate
            arg_vanishes = _condition(arg_here.vanishes(), spec)
            if arg_vanishes is not None:
                if _computed(arg, self.xs):
                    self.add("log of a vanishing argument", node, boundary, scenario, arg_vanishes, found_in)
            elif vanish is not None:
                self.analysis.near_one.setdefault(arg, []).append(label)
                self.add("cancellation", node, boundary, scenario, vanish, found_in,
                         result="the argument tends to 1")
        elif isinstance(node, sympy.exp):
            (arg,) = node.args
            arg_here = leading(arg, boundary, scenario)
            if arg_here is not None and arg_here.coeff.is_positive is not False:
                if arg_here.coeff.is_positive:
                    cond = _condition(arg_here.diverges(), spec)
                    self.add("overflow", node, boundary, scenario, cond, found_in)
        elif node.is_Mul:
            factors = [leading(f, boundary, scenario) for f in node.args]
            if any(f is None for f in factors):
                return
            grows_any = [_condition(f.diverges(), spec) for f in factors]
            shrinks = [_condition(f.vanishes(), spec) for f in factors]
            # log growth (|x| at an infinite end) stays finite in floating point; only a
            # power-law blow-up (exp(k|x|), 1/p**k) multiplies a vanishing factor into 0*inf
            infinite_end = boundary.label.endswith("oo")
            grows = [
                _condition(f.exponent < 0, spec, f.coeff)
                if f.coeff != 0 and (infinite_end or _computed(arg, self.xs)) else None
                for f, arg in zip(factors, node.args)
            ]
            if boundary.attained:  # at the end itself log(0) is -inf: any divergence is inf
                grows = [c if c is not None else g for c, g in zip(grows, grows_any)]
            big = [c for c in grows if c is not None]
            if big and any(c is not None for c in shrinks) and _condition(here.diverges(), spec) is None:
                self.add("zero times infinity", node, boundary, scenario, big[0], found_in)


def analyse_quantities(
    spec: Spec, quantities: dict[str, list[sympy.Expr]], wholes: bool = True
) -> Analysis:
    """``wholes=False`` (the verify pass) looks at the branches of a conditional, not at the
    terms around it: where a rule has branched, each branch holds on its own side, and the
    series of a whole conditional costs more than all the rest (a minute for the asymmetric
    loss)."""
    analyser = _Analyser(spec, wholes)
    for found_in, exprs in quantities.items():
        for expr in exprs:
            analyser.look(expr, found_in)
    return analyser.analysis


def naive_quantities(expr: sympy.Expr, spec: Spec) -> dict[str, list[sympy.Expr]]:
    xs = [i.symbol for i in spec.differentiated]
    grad = [sympy.powsimp(sympy.diff(expr, x)) for x in xs]
    hess = [sympy.powsimp(sympy.diff(g, x)) for g in grad for x in xs]
    return {"value": [expr], "grad": grad, "hess": hess}


def analyse(d: Derivation) -> Derivation:
    expr = d.textbook
    if d.spec.has_classes:
        # reductions over the class axis: see _classes (no series analysis), unless the loss is
        # a sum of an elementwise term over the axis (analysed as the term of one entry)
        split = entrywise_of(d.spec, expr)
        if split is None:
            return d
        expr = split[1]
    analysis = analyse_quantities(d.spec, naive_quantities(expr, d.spec))
    return replace(d, findings=tuple(analysis.findings), analysis=analysis)
