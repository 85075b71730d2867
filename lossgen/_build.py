"""``lossgen.build``: a loss built in memory, for notebooks, from a spec string or a SymPy
expression, through the same spec loader and pipeline as ``make generate``.

A SymPy expression (with its input and parameter declarations) is printed into the spec
language and becomes an ordinary spec text, so it is validated exactly like a file. The rendered
module is compiled under a unique module name and returned; no file is written.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import sys
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import sympy

from ._backends import BACKENDS
from ._generate import stability_policy
from ._pipeline import run
from ._render import formula
from ._spec import parse_spec_text
from ._types import SpecError
from ._verify import stability_problems

__all__ = ["UnstableWarning", "build"]


class UnstableWarning(UserWarning):
    """A term of a built loss that no rule stabilizes (the spec's ``on_unstable: warn``)."""


def build(
    spec: str | sympy.Expr,
    *,
    backend: str = "numpy",
    inputs: Mapping[Any, Any] | None = None,
    params: Mapping[Any, Any] | None = None,
    define: Mapping[Any, Any] | None = None,
    name: str = "loss",
    summary: str | None = None,
    references: Sequence[str] = ("lossgen.build",),
    on_unstable: str = "warn",
) -> types.ModuleType:
    """Build a loss in memory and return its generated ``backend`` module.

    ``spec`` is either

    * a whole YAML spec (a string, without ``inputs=``), exactly as in ``specs/<name>.yaml``;
      errors are raised as :class:`SpecError` with line numbers within that string; or
    * the loss expression -- a SymPy expression, or a string in the spec language -- with
      ``inputs`` (required) and optionally ``params``, ``define``, ``name``, ``summary``,
      ``references`` and ``on_unstable``, which are the spec's fields.

    ``inputs`` maps each input's name (a string or a SymPy symbol), in argument order, to its
    role (``"differentiated"`` or ``"constant"``, domain ``"(-oo, oo)"``), a tuple
    ``(role, domain)`` or ``(role, domain, shape)``, or a mapping of the spec's input fields.
    ``params`` maps each parameter to its default (domain ``"(-oo, oo)"``), a tuple
    ``(default, domain)``, or a mapping of the spec's parameter fields. Example::

        x, y, gamma = sympy.symbols("x y gamma")
        p = 1 / (1 + sympy.exp(-x))
        mod = lossgen.build(
            -(y * sympy.log(p) + (1 - y) * sympy.log(1 - p)) * (1 - p) ** gamma,
            inputs={x: "differentiated", y: ("constant", "[0, 1]")},
            params={gamma: (2, "[0, oo)")},
            name="my_loss",
        )
        mod.value(x_array, y_array, gamma=0.5)

    The module has ``value``, ``grad``, ``hess`` and ``hvp`` like the files under
    ``generated/``; it is registered in ``sys.modules`` under a name unique to its source.
    Terms the passes cannot stabilize raise :class:`SpecError` under ``on_unstable: error``
    and an :class:`UnstableWarning` otherwise.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if isinstance(spec, str) and inputs is None:
        given = [k for k, v in (("params", params), ("define", define)) if v is not None]
        if given:
            raise TypeError(
                f"lossgen.build: {' and '.join(given)} given with a YAML spec string; declare "
                "them in the spec, or pass the loss expression with inputs=..."
            )
        text, where = spec, "<lossgen.build>"
    elif inputs is None:
        raise TypeError(
            "lossgen.build: an expression needs inputs=, e.g. inputs={'x': 'differentiated'}"
        )
    else:
        text = spec_text(
            spec, inputs=inputs, params=params or {}, define=define or {}, name=name,
            summary=summary, references=references, on_unstable=on_unstable,
        )
        where = f"<lossgen.build {name}>"
    try:
        loaded = parse_spec_text(text, where)
    except SpecError as error:
        if where != "<lossgen.build>":
            error.add_note(f"the spec lossgen.build made from its arguments:\n{text}")
        raise
    d = run(loaded)
    refused = stability_policy(
        loaded,
        stability_problems(d),
        warn=lambda message: warnings.warn(message, UnstableWarning, stacklevel=3),
    )
    if refused:
        raise SpecError(refused)
    return _module(d.sources[backend], loaded.name, backend)


def spec_text(
    loss: str | sympy.Expr,
    *,
    inputs: Mapping[Any, Any],
    params: Mapping[Any, Any],
    define: Mapping[Any, Any],
    name: str,
    summary: str | None,
    references: Sequence[str],
    on_unstable: str,
) -> str:
    """The spec (YAML) that :func:`build` makes from an expression and its declarations."""
    if isinstance(references, str):
        references = [references]
    lines = [
        f"name: {json.dumps(name)}",
        f"summary: {json.dumps(summary or 'A loss built with lossgen.build.')}",
        f"references: {json.dumps(list(references))}",
        "inputs:",
    ]
    lines += [f"  {k!s}: {json.dumps(_input(k, v))}" for k, v in inputs.items()]
    if params:
        lines.append("params:")
        lines += [f"  {k!s}: {json.dumps(_param(k, v))}" for k, v in params.items()]
    if define:
        lines.append("define:")
        lines += [f"  {k!s}: {json.dumps(_expression(v))}" for k, v in define.items()]
    lines.append(f"loss: {json.dumps(_expression(loss))}")
    lines.append(f"on_unstable: {json.dumps(on_unstable)}")
    return "\n".join(lines) + "\n"


def _input(name: Any, declared: Any) -> dict:
    if isinstance(declared, str):
        return {"role": declared, "domain": "(-oo, oo)"}
    if isinstance(declared, tuple) and len(declared) in (2, 3):
        return dict(zip(("role", "domain", "shape"), declared))
    if isinstance(declared, Mapping):
        return dict(declared)
    raise TypeError(
        f"lossgen.build: input {str(name)!r} is declared as {declared!r}; use a role "
        "('differentiated' or 'constant'), a tuple (role, domain[, shape]) or a mapping"
    )


def _param(name: Any, declared: Any) -> dict:
    if isinstance(declared, (int, float)) and not isinstance(declared, bool):
        return {"default": declared, "domain": "(-oo, oo)"}
    if isinstance(declared, tuple) and len(declared) == 2:
        return {"default": declared[0], "domain": declared[1]}
    if isinstance(declared, Mapping):
        return dict(declared)
    raise TypeError(
        f"lossgen.build: parameter {str(name)!r} is declared as {declared!r}; use a default "
        "number, a tuple (default, domain) or a mapping"
    )


def _expression(expr: Any) -> str:
    if isinstance(expr, str):
        return expr
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        return repr(expr)
    if isinstance(expr, sympy.Basic):
        return formula(expr)
    raise TypeError(f"lossgen.build: {expr!r} is not a SymPy expression or a string")


def _module(source: str, name: str, backend: str) -> types.ModuleType:
    """``source`` compiled as a fresh module, registered under a name unique to it."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    module_name = f"lossgen_built_{backend}_{name}_{digest}"
    filename = f"<lossgen.build {name} {backend} {digest}>"
    code = compile(source, filename, "exec")
    # tracebacks and inspect.getsource show the generated lines
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = types.ModuleType(module_name)
    module.__dict__["__file__"] = filename
    sys.modules[module_name] = module
    try:
        # lossgen's own rendered code; the spec text itself was parsed, never evaluated
        exec(code, module.__dict__)  # noqa: S102
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
