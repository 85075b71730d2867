"""Spec files -> validated :class:`Spec`: the first pass of lossgen.

A spec is YAML read with ruamel.yaml's round-trip loader, which keeps line/column
information and never builds arbitrary Python objects (a ``!!python/...`` tag is reported,
not executed). Expressions are parsed by :mod:`lossgen._expr`, domains by
:mod:`lossgen._domain`. Validation collects every problem in the file, each with its
``path:LINE:COL`` (1-based), and raises one :class:`SpecError` at the end; no other exception
escapes for a bad file.

The checks, in the order the file is read:

1. the text is UTF-8 and YAML, a single mapping, with no tags beyond plain YAML types;
2. top-level fields: known (did-you-mean otherwise), required ones present, ``name``
   snake_case, free of path parts, equal to the file stem and unique among ``other_names``,
   ``summary`` one line, ``references`` a non-empty list of strings;
3. each input: known fields, ``role`` and ``domain`` present, role/shape allowed, domain
   parses, a differentiated input has an interval domain;
4. each param: known fields, a number ``default`` inside its ``domain`` or a string one among
   its ``choices``, exactly one of the two;
5. names: valid identifiers, no keyword, vocabulary function or backend module name, no name
   declared twice across inputs, params and define;
6. expressions (``define`` in order, then ``loss``): parse, use only declared symbols and
   earlier defines, no categorical parameter;
7. usage: every input and param reaches the loss through the defines, and some input is
   differentiated;
8. ``on_unstable``, when present, is ``warn`` or ``error``;
9. ``exports``, when present, lists known extra functions (``grad_norm``, ``GHMWeights``),
   each once, that the spec's inputs allow (one differentiated input, elementwise).
"""

from __future__ import annotations

import difflib
import hashlib
import keyword
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sympy
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from ._domain import parse_domain
from ._expr import ExprError, free_names, parse_expression
from ._functions import SPEC_FUNCTIONS
from ._types import AXIS_SHAPES, EXPORTS, ON_UNSTABLE, RESERVED_NAMES, ROLES, SHAPES, Diagnostic, Domain, Input, Param, Spec, SpecError

__all__ = ["load_spec", "parse_spec_text"]

#: top-level field -> (required, example shown when it is missing)
_TOP_FIELDS: dict[str, tuple[bool, str]] = {
    "name": (True, "name: my_loss"),
    "summary": (True, "summary: One line saying what the loss is."),
    "references": (True, 'references: ["Author, Title, Venue Year"]'),
    "inputs": (True, 'inputs: {x: {role: differentiated, domain: "(-oo, oo)"}}'),
    "params": (False, ""),
    "define": (False, ""),
    "loss": (True, "loss: <expression over the inputs>"),
    "on_unstable": (False, ""),
    "notes": (False, ""),
    "exports": (False, ""),
}
_INPUT_FIELDS: dict[str, tuple[bool, str]] = {
    "role": (True, f"role: {' or '.join(ROLES)}"),
    "domain": (True, 'domain: "(-oo, oo)"'),
    "shape": (False, ""),
}
_PARAM_FIELDS = ("default", "domain", "choices")

_SPEC_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SYMBOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: YAML tags a spec may carry (all resolved implicitly from plain YAML)
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge", "timestamp")
)


def load_spec(path: str | Path, *, other_names: Iterable[str] = ()) -> Spec:
    """Read and validate the spec file at ``path``; raise :class:`SpecError` listing every problem.

    ``other_names`` are the names of specs already loaded: sharing one is an error.
    """
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise SpecError(
            [Diagnostic(where, 1, 1, f"cannot read the spec file: {reason}; check the path")]
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        col = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise SpecError(
            [
                Diagnostic(
                    where,
                    line,
                    col,
                    f"the file is not UTF-8 text ({error.reason}); save it as UTF-8",
                )
            ]
        ) from None
    return _check(
        text,
        where,
        hashlib.sha256(data).hexdigest(),
        other_names=other_names,
        file_stem=Path(path).stem,
    )


def parse_spec_text(
    text: str,
    path: str = "<string>",
    *,
    other_names: Iterable[str] = (),
    file_stem: str | None = None,
) -> Spec:
    """Validate spec ``text`` as if read from ``path`` (used in messages only).

    ``file_stem``, when given, is the file name the spec's ``name`` must equal;
    :func:`load_spec` passes the real one.
    """
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    return _check(text, path, digest, other_names=other_names, file_stem=file_stem)


def _check(
    text: str, path: str, digest: str, *, other_names: Iterable[str], file_stem: str | None
) -> Spec:
    reader = _Reader(text, path)
    spec = None
    try:
        spec = reader.read(digest, other_names=set(other_names), file_stem=file_stem)
    except Exception as error:  # a bug here must still come out as a diagnostic
        reader.error(
            (0, 0),
            f"internal error while checking this spec ({type(error).__name__}: "
            f"{error}); this is a bug in lossgen, please report it with the file",
        )
    if reader.diagnostics or spec is None:
        raise SpecError(reader.sorted_diagnostics())
    return spec


Position = tuple[int, int]  # 0-based line and column, as ruamel records them


class _Reader:
    """Reads one spec text, recording a diagnostic for each problem it finds."""

    def __init__(self, text: str, path: str):
        self.text = text
        self.path = path
        self.lines = text.splitlines()
        self.diagnostics: list[Diagnostic] = []
        self.declared = _Declarations(self)

    # -- reporting ---------------------------------------------------------------------------

    def error(self, where: Position, message: str) -> None:
        line, col = where
        self.diagnostics.append(Diagnostic(self.path, line + 1, col + 1, message))

    def sorted_diagnostics(self) -> list[Diagnostic]:
        unique = dict.fromkeys(self.diagnostics)
        return sorted(unique, key=lambda d: (d.line, d.col))

    # -- the whole file ----------------------------------------------------------------------

    def read(self, digest: str, *, other_names: set[str], file_stem: str | None) -> Spec | None:
        data = self.load_yaml()
        if data is None:
            return None
        if not isinstance(data, CommentedMap):
            self.error(
                _position(data),
                f"the top level of a spec must be a mapping of fields "
                f"(name:, summary:, inputs:, loss:, ...), found "
                f"{_describe(data)}",
            )
            return None
        top = self.fields(data, _TOP_FIELDS, what="spec", where=_position(data))

        name = self.spec_name(data, other_names, file_stem) if "name" in top else None
        summary = self.summary(data) if "summary" in top else None
        references = self.references(data) if "references" in top else None
        inputs = self.inputs(data) if "inputs" in top else None
        if inputs is not None and any(i.shape == "batch" for i in inputs):
            from ._batch import POSITIVE

            # a batch loss may name each row's positive partner among the other rows
            self.declared.available.setdefault(POSITIVE.name, POSITIVE)
        params = self.params(data) if "params" in top else ()
        define, complete = self.defines(data) if "define" in top else ((), True)
        loss = None
        if "loss" in top:
            loss = self.expression(
                data, "loss", self.declared.available, self.declared.refused, what="loss"
            )
        if inputs is not None:
            self.usage(data, inputs, params, define if complete else None, loss)
        on_unstable, on_unstable_at = "warn", (0, 0)
        if "on_unstable" in top:
            on_unstable = self.choice(data, "on_unstable", ON_UNSTABLE, what="the spec")
            line, col = _value_position(data, "on_unstable")
            on_unstable_at = (line + 1, col + 1)

        notes = self.notes(data) if "notes" in top else ""
        exports = self.exports(data, inputs) if "exports" in top else ()

        if self.diagnostics or None in (
            name, summary, references, inputs, loss, on_unstable, notes, exports
        ):
            return None
        return Spec(
            name=name,
            summary=summary,
            references=references,
            inputs=inputs,
            params=params,
            define=define,
            loss=loss,
            path=self.path,
            source_hash=digest,
            source_text=self.text,
            on_unstable=on_unstable,
            on_unstable_at=on_unstable_at,
            notes=notes,
            exports=exports,
            formula_text=(
                *((str(k), str(v)) for k, v in (data.get("define") or {}).items()),
                ("loss", str(data["loss"])),
            ),
        )

    def load_yaml(self) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # compose first: tags are checked on the node tree, before any construction
                # (then built from that tree: the text is parsed once)
                yaml = _yaml()
                node = yaml.compose(self.text)
                if node is None:
                    self.error(
                        (0, 0), "the spec is empty; start from an existing spec under specs/"
                    )
                    return None
                self.check_tags(node)
                return yaml.constructor.construct_document(node)
        except DuplicateKeyError as error:
            found = re.search(r'duplicate key "([^"]*)"', str(error.problem))
            key = f" '{found.group(1)}'" if found else ""
            first = error.context_mark.line + 1 if error.context_mark else "?"
            self.error(
                _mark(error),
                f"duplicate key{key} in the "
                f"mapping that starts on line {first}; each key may appear "
                "only once, remove or rename one",
            )
        except MarkedYAMLError as error:
            context = ""
            if error.context and error.context_mark is not None:
                context = f" ({error.context} started on line {error.context_mark.line + 1})"
            self.error(
                _mark(error),
                f"YAML syntax error: {error.problem}{context}; check the "
                "indentation, and quote values that contain ':', '#', '[' "
                "or '{', e.g. domain: \"[0, oo)\"",
            )
        except ReaderError as error:  # a control character YAML refuses
            before = self.text[: max(error.position, 0)]
            where = (before.count("\n"), len(before) - (before.rfind("\n") + 1))
            self.error(
                where,
                f"the character {chr(error.character)!r} is not allowed in YAML "
                f"({error.reason}); remove it",
            )
        except (YAMLError, RecursionError, ValueError) as error:
            summary = " ".join(str(error).split())
            self.error((0, 0), f"cannot read the file as YAML: {summary}")
        return None

    def check_tags(self, root: Any) -> None:
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:  # aliases share nodes
                continue
            seen.add(id(node))
            tag = str(node.tag)
            if tag not in _PLAIN_TAGS:
                shown = tag.replace("tag:yaml.org,2002:", "!!")
                self.error(
                    (node.start_mark.line, node.start_mark.column),
                    f"YAML tag {shown!r} is not allowed in a spec; a spec holds only plain "
                    "strings, numbers, lists and mappings — remove the tag",
                )
            if isinstance(node.value, list):
                for item in node.value:
                    stack.extend(item if isinstance(item, tuple) else (item,))

    # -- fields ------------------------------------------------------------------------------

    def fields(
        self,
        mapping: CommentedMap,
        known: Mapping[str, tuple[bool, str]] | Iterable[str],
        *,
        what: str,
        where: Position,
    ) -> set[str]:
        """Report unknown and missing fields; return the known fields present."""
        known = dict(known) if isinstance(known, Mapping) else {k: (False, "") for k in known}
        present = set()
        for key in mapping:
            if not isinstance(key, str):
                self.error(
                    _key_position(mapping, key),
                    f"{what} field names must be strings, found {_describe(key)}",
                )
                continue
            if key in known:
                present.add(key)
                continue
            suggestion = _did_you_mean(key, known)
            fix = f"did you mean '{suggestion}'?" if suggestion else "remove it"
            self.error(
                _key_position(mapping, key),
                f"unknown field '{key}' in {what}; {fix} (the fields are {', '.join(known)})",
            )
        for key, (required, example) in known.items():
            if required and key not in mapping:
                self.error(
                    where, f"{what} is missing the required field '{key}'; add it, e.g. {example}"
                )
        return present

    def spec_name(
        self, data: CommentedMap, other_names: set[str], file_stem: str | None
    ) -> str | None:
        name, where = data["name"], _value_position(data, "name")
        if not isinstance(name, str):
            self.error(
                where, f"name must be a string, found {_describe(name)}; e.g. name: focal_loss"
            )
            return None
        if "/" in name or "\\" in name or ".." in name:
            self.error(
                where,
                f"name {name!r} must not contain path separators or '..': it becomes "
                "a file name under generated/; use snake_case like 'focal_loss'",
            )
            return None
        if not _SPEC_NAME.fullmatch(name) or keyword.iskeyword(name):
            fixed = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
            hint = (
                f" such as '{fixed}'"
                if _SPEC_NAME.fullmatch(fixed) and not keyword.iskeyword(fixed)
                else ""
            )
            self.error(
                where,
                f"name {name!r} is not snake_case (lowercase letters, digits and "
                f"'_', starting with a letter, not a Python keyword); use a name{hint}",
            )
            return None
        if file_stem is not None and name != file_stem:
            self.error(
                where,
                f"name '{name}' does not match the file name '{file_stem}.yaml'; "
                f"rename the file to '{name}.yaml' or set name: {file_stem}",
            )
        if name in other_names:
            self.error(
                where,
                f"name clash: another spec is already named '{name}'; every spec "
                "needs its own name, rename this one and its file",
            )
        return name

    def summary(self, data: CommentedMap) -> str | None:
        summary, where = data["summary"], _value_position(data, "summary")
        if not isinstance(summary, str) or not summary.strip():
            self.error(where, f"summary must be a one-line description, found {_describe(summary)}")
            return None
        if "\n" in summary.strip():
            self.error(
                where,
                "summary must be a single line; move the details into the references or shorten it",
            )
            return None
        return summary.strip()

    def notes(self, data: CommentedMap) -> str | None:
        notes, where = data["notes"], _value_position(data, "notes")
        if not isinstance(notes, str) or not notes.strip():
            self.error(
                where,
                f"notes must be text (conventions such as the subgradient at a kink), found "
                f"{_describe(notes)}",
            )
            return None
        return " ".join(notes.split())

    def exports(
        self, data: CommentedMap, inputs: tuple[Input, ...] | None
    ) -> tuple[str, ...] | None:
        names, where = data["exports"], _value_position(data, "exports")
        example = f"e.g. exports: [{EXPORTS[0]}]"
        if not isinstance(names, CommentedSeq):
            self.error(where, f"exports must be a list of names, found {_describe(names)}; {example}")
            return None
        good = True
        for index, name in enumerate(names):
            at = _item_position(names, index)
            if not isinstance(name, str) or name not in EXPORTS:
                suggestion = _did_you_mean(name, EXPORTS) if isinstance(name, str) else None
                fix = f"; did you mean '{suggestion}'?" if suggestion else ""
                shown = repr(name) if isinstance(name, str) else _describe(name)
                self.error(at, f"exports has {shown}, which is not one of {', '.join(EXPORTS)}{fix}")
                good = False
            elif name in names[:index]:
                self.error(at, f"exports lists {name!r} twice")
                good = False
        if good and names and inputs is not None:
            differentiated = [i for i in inputs if i.role == "differentiated"]
            if len(differentiated) != 1 or any(i.shape != "scalar" for i in inputs):
                self.error(
                    where,
                    f"exports {', '.join(names)} need an elementwise loss (every input of shape "
                    "scalar) with one differentiated input",
                )
                good = False
        return tuple(names) if good else None

    def references(self, data: CommentedMap) -> tuple[str, ...] | None:
        refs, where = data["references"], _value_position(data, "references")
        example = 'e.g. references: ["A. Author, Title of the Paper, Venue 2017"]'
        if not isinstance(refs, CommentedSeq):
            self.error(
                where, f"references must be a list of strings, found {_describe(refs)}; {example}"
            )
            return None
        if not refs:
            self.error(
                where, f"references is empty; cite at least one source for the loss, {example}"
            )
            return None
        good = True
        for index, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref.strip():
                self.error(
                    _item_position(refs, index),
                    f"reference {index + 1} must be a non-empty string, found {_describe(ref)}; "
                    "quote it if it contains ':' or '#'",
                )
                good = False
        return tuple(ref.strip() for ref in refs) if good else None

    def inputs(self, data: CommentedMap) -> tuple[Input, ...] | None:
        entries, where = data["inputs"], _value_position(data, "inputs")
        example = 'e.g. inputs: {x: {role: differentiated, domain: "(-oo, oo)"}}'
        if not isinstance(entries, CommentedMap):
            self.error(
                where,
                f"inputs must be a mapping from input name to its role and domain, "
                f"found {_describe(entries)}; {example}",
            )
            return None
        if not entries:
            self.error(where, f"inputs is empty; declare at least one input, {example}")
            return None
        result, good = [], True
        for name, fields in entries.items():
            item = self.input(entries, name, fields)
            good = good and item is not None
            if item is not None:
                result.append(item)
        return tuple(result) if good else None

    def input(self, entries: CommentedMap, name: Any, fields: Any) -> Input | None:
        at_key = _key_position(entries, name)
        if not self.symbol_name(name, "input", at_key):
            return None
        # declared even if its fields are wrong, so expressions using it raise no second error;
        # a class index is an integer (it may be compared with ==)
        index = isinstance(fields, CommentedMap) and str(fields.get("domain", "")).strip() == "index"
        symbol = sympy.Symbol(name, integer=True) if index else sympy.Symbol(name, real=True)
        self.declared.add(name, "input", at_key, symbol)
        if not isinstance(fields, CommentedMap):
            self.error(
                _value_position(entries, name),
                f"input '{name}' must be a mapping with its role and domain, found "
                f'{_describe(fields)}; e.g. {name}: {{role: differentiated, domain: "(-oo, oo)"}}',
            )
            return None
        present = self.fields(fields, _INPUT_FIELDS, what=f"input '{name}'", where=at_key)
        role = (
            self.choice(fields, "role", ROLES, what=f"input '{name}'")
            if "role" in present
            else None
        )
        shape = (
            self.choice(fields, "shape", SHAPES, what=f"input '{name}'")
            if "shape" in present
            else "scalar"
        )
        domain = self.domain(fields, what=f"input '{name}'") if "domain" in present else None
        if role == "differentiated" and domain is not None and domain.kind != "interval":
            self.error(
                _value_position(fields, "domain"),
                f"input '{name}' is differentiated but its domain {domain.text!r} is discrete; "
                "a derivative needs an interval domain, or make the input role: constant",
            )
            return None
        if None in (role, shape, domain) or len(present) != len(fields):
            return None
        line, col = at_key
        return Input(
            name=name,
            role=role,
            domain=domain,
            shape=shape,
            symbol=symbol,
            line=line + 1,
            col=col + 1,
        )

    def choice(
        self, fields: CommentedMap, key: str, allowed: tuple[str, ...], *, what: str
    ) -> str | None:
        value, where = fields[key], _value_position(fields, key)
        if isinstance(value, str) and value in allowed:
            return value
        shown = repr(value) if isinstance(value, str) else _describe(value)
        suggestion = _did_you_mean(value, allowed) if isinstance(value, str) else None
        fix = f"; did you mean '{suggestion}'?" if suggestion else ""
        self.error(
            where, f"{what} has {key} {shown}, which is not one of {', '.join(allowed)}{fix}"
        )
        return None

    def domain(self, fields: CommentedMap, *, what: str) -> Domain | None:
        text, where = fields["domain"], _value_position(fields, "domain")
        if isinstance(text, CommentedSeq):
            self.error(
                where,
                f"{what} has domain {_describe(text)}: unquoted [a, b] is a YAML list; "
                'quote the interval, e.g. domain: "[0, 1]"',
            )
            return None
        if isinstance(text, CommentedMap):
            self.error(
                where,
                f"{what} has domain {_describe(text)}: unquoted {{a, b}} is a YAML "
                'mapping; quote the set, e.g. domain: "{0, 1}"',
            )
            return None
        if not isinstance(text, str):
            self.error(
                where,
                f"{what} has domain {_describe(text)}; a domain is a quoted string "
                'like "[0, 1]", "(0, oo)", "{0, 1}" or "index"',
            )
            return None
        try:
            return parse_domain(text)
        except ValueError as error:
            self.error(where, f"{what} has a bad domain: {error}")
            return None

    def params(self, data: CommentedMap) -> tuple[Param, ...]:
        entries, where = data["params"], _value_position(data, "params")
        if entries is None:
            return ()
        if not isinstance(entries, CommentedMap):
            self.error(
                where,
                f"params must be a mapping from parameter name to its default and "
                f"domain, found {_describe(entries)}; e.g. params: "
                '{gamma: {default: 2, domain: "[0, oo)"}}',
            )
            return ()
        result = []
        for name, fields in entries.items():
            param = self.param(entries, name, fields)
            if param is not None:
                result.append(param)
        return tuple(result)

    def param(self, entries: CommentedMap, name: Any, fields: Any) -> Param | None:
        at_key = _key_position(entries, name)
        if not self.symbol_name(name, "parameter", at_key):
            return None
        symbol = sympy.Symbol(name, real=True)
        categorical = (
            isinstance(fields, CommentedMap) and "choices" in fields and "domain" not in fields
        )
        self.declared.add(name, "parameter", at_key, symbol, categorical=categorical)
        if not isinstance(fields, CommentedMap):
            self.error(
                _value_position(entries, name),
                f"parameter '{name}' must be a mapping with a default and a domain (or "
                f"choices), found {_describe(fields)}; e.g. {name}: "
                '{default: 2, domain: "[0, oo)"}',
            )
            return None
        what = f"parameter '{name}'"
        present = self.fields(
            fields,
            {"default": (True, "default: 1")} | dict.fromkeys(_PARAM_FIELDS[1:], (False, "")),
            what=what,
            where=at_key,
        )
        if "domain" in present and "choices" in present:
            self.error(
                at_key,
                f"{what} has both domain and choices; keep domain for a number or "
                "choices for a categorical value",
            )
            return None
        if "domain" not in present and "choices" not in present:
            self.error(
                at_key,
                f'{what} needs a domain (a number, e.g. domain: "[0, 1]") or '
                "choices (a categorical value, e.g. choices: [erf, tanh])",
            )
            return None
        if len(present) != len(fields) or "default" not in present:
            return None
        line, col = at_key
        default, at_default = fields["default"], _value_position(fields, "default")
        if "choices" in present:
            choices = self.param_choices(fields, what)
            if choices is None:
                return None
            if not isinstance(default, str) or default not in choices:
                suggestion = _did_you_mean(default, choices) if isinstance(default, str) else None
                fix = (
                    f"did you mean '{suggestion}'?"
                    if suggestion
                    else f"use one of {', '.join(choices)}"
                )
                self.error(
                    at_default,
                    f"{what} has default {_show(default)}, which is not among "
                    f"its choices {', '.join(choices)}; {fix}",
                )
                return None
            self.declared.categorical[name] = (symbol, choices)
            return Param(
                name=name,
                symbol=symbol,
                default=str(default),
                choices=choices,
                line=line + 1,
                col=col + 1,
            )
        domain = self.domain(fields, what=what)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            self.error(
                at_default,
                f"{what} has default {_show(default)}; a parameter with a domain "
                "needs a number, e.g. default: 0.25",
            )
            return None
        if not math.isfinite(default):
            self.error(
                at_default, f"{what} has default {default}; the default must be a finite number"
            )
            return None
        if domain is None:
            return None
        if not domain.contains(default):
            self.error(
                at_default,
                f"{what} has default {default}, which is outside its domain "
                f"{domain.text}; change the default or widen the domain",
            )
            return None
        return Param(
            name=name,
            symbol=symbol,
            default=float(default),
            domain=domain,
            line=line + 1,
            col=col + 1,
        )

    def param_choices(self, fields: CommentedMap, what: str) -> tuple[str, ...] | None:
        choices, where = fields["choices"], _value_position(fields, "choices")
        if not isinstance(choices, CommentedSeq) or not choices:
            self.error(
                where,
                f"{what} has choices {_describe(choices)}; choices is a non-empty list "
                "of strings, e.g. choices: [erf, tanh]",
            )
            return None
        if not all(isinstance(c, str) and c for c in choices):
            self.error(where, f"{what}: every choice must be a non-empty string")
            return None
        if len(set(choices)) != len(choices):
            self.error(where, f"{what} lists a choice twice; list each choice once")
            return None
        return tuple(str(c) for c in choices)

    def symbol_name(self, name: Any, kind: str, where: Position) -> bool:
        if not isinstance(name, str):
            self.error(where, f"{kind} names must be strings, found {_describe(name)}")
            return False
        if keyword.iskeyword(name):
            self.error(
                where,
                f"{kind} name '{name}' is a Python keyword; use e.g. '{name[:3]}' or '{name}_'",
            )
            return False
        if not _SYMBOL_NAME.fullmatch(name):
            self.error(
                where,
                f"{kind} name {name!r} is not a valid name: use ASCII letters, digits "
                "and '_', starting with a letter",
            )
            return False
        if name in SPEC_FUNCTIONS:
            self.error(
                where,
                f"{kind} name '{name}' is the name of the function {name}(); "
                f"rename the {kind}, e.g. '{name}_'",
            )
            return False
        if name in RESERVED_NAMES:
            self.error(
                where,
                f"{kind} name '{name}' is taken by the generated code (a module, "
                f"argument or builtin it uses); rename the {kind}, e.g. '{name}_'",
            )
            return False
        return True

    # -- expressions -------------------------------------------------------------------------

    def defines(
        self, data: CommentedMap
    ) -> tuple[tuple[tuple[sympy.Symbol, sympy.Expr], ...], bool]:
        """The ``(symbol, expression)`` pairs in order, and whether every define made one."""
        entries, where = data["define"], _value_position(data, "define")
        if entries is None:
            return (), True
        if not isinstance(entries, CommentedMap):
            self.error(
                where,
                f"define must be a mapping from a name to its expression, found "
                f"{_describe(entries)}; e.g. define: {{p: sigmoid(x)}}",
            )
            return (), False
        declared = self.declared
        names = [n for n in entries if isinstance(n, str)]
        for name in entries:
            if self.symbol_name(name, "define", _key_position(entries, name)):
                declared.add(
                    name,
                    "define",
                    _key_position(entries, name),
                    sympy.Symbol(name, real=True),
                    available=False,
                )
        result = []
        for index, name in enumerate(names):
            refused = dict(declared.refused)
            refused[name] = (
                f"define '{name}' refers to itself; a define may use only inputs, "
                "params and the defines above it"
            )
            for later in names[index + 1 :]:
                if later in declared.symbols and later not in declared.available:
                    line = _key_position(entries, later)[0] + 1
                    refused[later] = (
                        f"'{later}' is used before it is defined (on line {line}); "
                        f"move the define of '{later}' above '{name}'"
                    )
            expr = self.expression(
                entries, name, declared.available, refused, what=f"define '{name}'"
            )
            declared.make_available(name)
            if expr is not None and declared.kinds.get(name, ("",))[0] == "define":
                result.append((declared.symbols[name], expr))
        return tuple(result), len(result) == len(entries)

    def expression(
        self,
        mapping: CommentedMap,
        key: str,
        names: Mapping[str, sympy.Symbol],
        refused: Mapping[str, str],
        *,
        what: str,
    ) -> sympy.Expr | None:
        """Parse ``mapping[key]``; report every problem in it and return ``None`` if it has any."""
        value = mapping[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # a bare number: parse its text, exactly as an expression would be
            value = self.plain_text(mapping, key) or repr(value)
        if not isinstance(value, str):
            self.error(
                _value_position(mapping, key),
                f"{what} must be an expression written as a string, found {_describe(value)}",
            )
            return None
        try:
            return parse_expression(
                value, names, refused=refused, categorical=self.declared.categorical
            )
        except ExprError as error:
            for col, message in error.problems:
                self.error(
                    self.expression_position(mapping, key, value, col), f"in {what}: {message}"
                )
            return None

    def plain_text(self, mapping: CommentedMap, key: str) -> str | None:
        """The source text of the plain scalar ``mapping[key]`` (a number YAML has converted)."""
        line, col = _value_position(mapping, key)
        if line >= len(self.lines):
            return None
        found = re.match(r"[^\s#,\]}]+", self.lines[line][col:])
        return found.group(0) if found else None

    def expression_position(
        self, mapping: CommentedMap, key: str, value: str, offset: int
    ) -> Position:
        """Where character ``offset`` of the expression ``value`` sits in the file."""
        line, col = _value_position(mapping, key)
        source = self.lines[line] if line < len(self.lines) else ""
        if isinstance(value, LiteralScalarString):
            before = value[:offset].split("\n")
            row = line + len(before)
            text_line = value.split("\n")[len(before) - 1]
            if row < len(self.lines) and self.lines[row].rstrip("\r").endswith(text_line):
                return row, len(self.lines[row].rstrip("\r")) - len(text_line) + len(before[-1])
            return line, col
        if isinstance(value, FoldedScalarString):
            return line, col
        if isinstance(value, (DoubleQuotedScalarString, SingleQuotedScalarString)):
            if source[col + 1 : col + 1 + len(value)] == value:
                return line, col + 1 + offset
            return line, col
        if source[col : col + len(value)] == value:
            return line, col + offset
        return line, col

    # -- usage -------------------------------------------------------------------------------

    def class_axis(self, data: CommentedMap, inputs: tuple[Input, ...], expr: sympy.Expr) -> None:
        """A loss over a class axis reduces every classes input (sum, logsumexp, pick), and
        the class functions need a classes input."""
        from ._classes import REDUCTIONS, OneHot

        classes = [i for i in inputs if i.shape in AXIS_SHAPES]
        at = _value_position(data, "loss")
        if any(i.shape == "batch" for i in inputs):
            from ._batch import BatchError, split

            try:
                split(expr, inputs)
            except BatchError as error:
                self.error(at, f"a loss over a batch: {error}")
            return
        if not classes:
            if expr.has(*REDUCTIONS, OneHot):
                self.error(
                    at,
                    "sum, logsumexp, softmax, log_softmax and pick reduce over a class axis, "
                    "but no input has shape: classes; declare the logits with shape: classes",
                )
            return

        def bare(node) -> set:
            if isinstance(node, REDUCTIONS):
                return set()
            if isinstance(node, sympy.Symbol):
                return {node.name}
            return set().union(*(bare(a) for a in node.args)) if node.args else set()

        for name in sorted(bare(expr) & {i.name for i in classes}):
            self.error(
                at,
                f"input '{name}' has a class axis: the loss must reduce it to one number per "
                f"row, with sum(...), logsumexp(...) or pick({name}, k)",
            )

    def usage(
        self,
        data: CommentedMap,
        inputs: tuple[Input, ...],
        params: tuple[Param, ...],
        define: tuple[tuple[sympy.Symbol, sympy.Expr], ...] | None,
        loss: sympy.Expr | None,
    ) -> None:
        """Report a spec with nothing to differentiate, and inputs and params the loss never
        reaches. Usage is judged only when every expression parsed: a misspelt name would
        otherwise make the declaration it meant look unused."""
        if all(i.role != "differentiated" for i in inputs):
            self.error(
                _key_position(data, "inputs"),
                "no input has role: differentiated; lossgen differentiates the loss with "
                "respect to those inputs, so mark at least one (e.g. the logits x)",
            )
        if loss is None or define is None:
            return
        expr = loss
        for symbol, definition in reversed(define):
            expr = expr.subs(symbol, definition)
        self.class_axis(data, inputs, expr)
        used = free_names(expr)
        for item in inputs:
            if item.name not in used:
                self.error(
                    (item.line - 1, item.col - 1),
                    f"input '{item.name}' is not used by the loss (after substituting the "
                    "defines); remove it, or use it in the loss",
                )
        for param in params:
            if param.name not in used:
                extra = (
                    f" (test it in a conditional: a if {param.name} == \"{param.default}\" else b)"
                    if param.choices is not None
                    else ""
                )
                self.error(
                    (param.line - 1, param.col - 1),
                    f"parameter '{param.name}' is not used by the loss (after substituting "
                    f"the defines); remove it, or use it in the loss{extra}",
                )


class _Declarations:
    """Every declared name: its kind, position and symbol, and whether expressions may use it."""

    def __init__(self, reader: _Reader):
        self.reader = reader
        self.kinds: dict[str, tuple[str, Position]] = {}
        self.symbols: dict[str, sympy.Symbol] = {}
        self.available: dict[str, sympy.Symbol] = {}
        self.refused: dict[str, str] = {}
        #: categorical parameter -> (symbol, choices), for the tests of conditionals
        self.categorical: dict[str, tuple[sympy.Symbol, tuple[str, ...]]] = {}

    def add(
        self,
        name: str,
        kind: str,
        where: Position,
        symbol: sympy.Symbol,
        *,
        categorical: bool = False,
        available: bool = True,
    ) -> None:
        if name in self.kinds:
            first_kind, (line, _) = self.kinds[name]
            self.reader.error(
                where,
                f"'{name}' is declared twice: as {_article(first_kind)} on "
                f"line {line + 1} and as {_article(kind)} here; rename one",
            )
            return
        self.kinds[name] = (kind, where)
        self.symbols[name] = symbol
        if categorical:
            self.refused[name] = (
                f"categorical parameter '{name}' cannot be used in arithmetic; test it in "
                f"a conditional, e.g. 'a if {name} == \"choice\" else b'"
            )
        elif available:
            self.available[name] = symbol

    def make_available(self, name: str) -> None:
        if self.kinds.get(name, ("",))[0] == "define":
            self.available[name] = self.symbols[name]


# -- positions and descriptions ----------------------------------------------------------------


def _yaml() -> YAML:
    """The round-trip loader: keeps positions and quoting style, builds only plain data."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


def _mark(error: MarkedYAMLError) -> Position:
    mark = error.problem_mark or error.context_mark
    return (mark.line, mark.column) if mark is not None else (0, 0)


def _position(node: Any) -> Position:
    try:
        return node.lc.line, node.lc.col
    except (AttributeError, TypeError):
        return 0, 0


def _key_position(mapping: CommentedMap, key: Any) -> Position:
    try:
        line, col = mapping.lc.key(key)
        return line, col
    except (AttributeError, KeyError, TypeError):
        return _position(mapping)


def _value_position(mapping: CommentedMap, key: Any) -> Position:
    try:
        line, col = mapping.lc.value(key)
        return line, col
    except (AttributeError, KeyError, TypeError):
        return _key_position(mapping, key)


def _item_position(seq: CommentedSeq, index: int) -> Position:
    try:
        line, col = seq.lc.item(index)
        return line, col
    except (AttributeError, KeyError, TypeError):
        return _position(seq)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag:
        return f"a value tagged {tag.replace('tag:yaml.org,2002:', '!!')}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, str) else _describe(value)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None
