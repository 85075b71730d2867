"""The rewrite pass: replace the terms that break by stable primitives, citing why.

The textbook expression is walked bottom-up. At each node, after its children are rewritten,
the rules of ``_rules.RULES`` are tried in order: an ``always`` rule fires wherever it matches;
a guided rule fires only where the analysis found the node vanishing (or tending to 1) at a
domain boundary. A rule's result is walked again, so that the terms it creates (the log in
``exp(a*log(b))``) meet the rules too. Each application is recorded with the findings it
answers.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from ._analyse import Analysis, display
from ._classes import ClassSum, entrywise_of, log_softmax_forms, picked_forms
from ._ir import Derivation, Finding, Rewrite
from ._rules import RULES, Context, Rule

__all__ = ["rewrite", "rewrite_expression"]

_MAX_STEPS = 500


class _Walker:
    def __init__(self, d: Derivation, analysis: Analysis):
        self.d = d
        self.analysis = analysis
        self.records: list[Rewrite] = []
        #: rewritten node -> the textbook node it stands for (to look up the analysis)
        self.origin: dict[sympy.Expr, sympy.Expr] = {}
        #: nodes a rule has already rewritten: a rule that wraps its input (a guard) must not
        #: meet that input again
        self.rewritten: set[sympy.Expr] = set()
        self.steps = 0

    def _lookup(self, table: dict, node: sympy.Expr) -> list[str]:
        out: list[str] = []
        for key in {node, self.origin.get(node, node)}:
            out += table.get(key, [])
        return out

    def _context(self) -> Context:
        return Context(
            self.d.spec,
            vanishing=lambda node: self._lookup(self.analysis.vanishing, node),
            near_one=lambda node: self._lookup(self.analysis.near_one, node),
        )

    def _answers(self, rule: Rule, original: sympy.Expr) -> list[Finding]:
        keys = {original, self.origin.get(original, original)}
        found = [f for f in self.d.findings if f.node in keys]
        if original.is_Pow or isinstance(original, sympy.log):
            inner = original.args[0]
            inner_keys = {inner, self.origin.get(inner, inner)}
            found += [
                f for f in self.d.findings
                if f.node is not None and (f.node in inner_keys or (f.node.is_Pow and f.node.base in inner_keys))
            ]
        return found

    def walk(self, node: sympy.Expr) -> sympy.Expr:
        if node.is_Atom:
            return node
        args = [self.walk(arg) for arg in node.args]
        current = node.func(*args) if tuple(args) != node.args else node
        for arg, new in zip(node.args, args):
            self.origin.setdefault(new, self.origin.get(arg, arg))
        self.origin.setdefault(current, node)
        return self._apply(current, node)

    def _apply(self, current: sympy.Expr, original: sympy.Expr) -> sympy.Expr:
        ctx = self._context()
        for rule in RULES:
            result = rule.apply(current, ctx)
            if result is None or result == current:
                continue
            self.steps += 1
            if self.steps > _MAX_STEPS:
                raise RuntimeError(f"rewriting {self.d.spec.name} did not terminate")
            self._record(rule, current, result, original)
            self.rewritten.add(current)
            # the new terms stand for the same textbook node; walk them through the rules again
            for arg in result.args:
                self.origin.setdefault(arg, self.origin.get(arg, arg))
            self.origin.setdefault(result, self.origin.get(original, original))
            return self.walk_fresh(result, original)
        return current

    def walk_fresh(self, node: sympy.Expr, original: sympy.Expr) -> sympy.Expr:
        if node.is_Atom or node in self.rewritten:
            return node
        args = [self.walk_fresh(arg, self.origin.get(arg, arg)) for arg in node.args]
        current = node.func(*args) if tuple(args) != node.args else node
        self.origin.setdefault(current, self.origin.get(node, original))
        return self._apply(current, self.origin.get(node, original))

    def _record(self, rule: Rule, before, after, original) -> None:
        spec = self.d.spec
        answers = self._answers(rule, original)
        reason = rule.reason
        if answers:
            reason = "answers: " + "; ".join(str(f) for f in answers[:2])
            if len(answers) > 2:
                reason += f"; and {len(answers) - 2} more"
        self.records.append(
            Rewrite(rule=rule.name, before=display(before, spec), after=sympy.sstr(after), reason=reason)
        )


def rewrite_expression(
    d: Derivation, expr: sympy.Expr | None = None, analysis: Analysis | None = None
) -> tuple[sympy.Expr, list[Rewrite]]:
    """Rewrite ``expr`` (default: the textbook expression) with the rule base."""
    if analysis is None:
        analysis = d.analysis if d.analysis is not None else Analysis()
    walker = _Walker(d, analysis)
    stable = walker.walk(d.textbook if expr is None else expr)
    return stable, walker.records


def rewrite(d: Derivation) -> Derivation:
    if d.spec.has_classes:
        split = entrywise_of(d.spec, d.textbook)
        if split is None:
            return replace(d, stable=log_softmax_forms(picked_forms(d.textbook)))
        coeff, body = split  # a sum of an elementwise term: the term goes through the rule base
        stable, records = rewrite_expression(d, body)
        return replace(d, stable=coeff * ClassSum(stable), rewrites=tuple(records))
    stable, records = rewrite_expression(d)
    return replace(d, stable=stable, rewrites=tuple(records))
