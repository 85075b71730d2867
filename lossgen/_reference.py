"""``docs/losses.md``: the reference page of every generated loss, with its signatures.

Written by ``lossgen reference`` (which ``make generate`` runs) from the specs and what the
passes made of them (findings, rewrites, terms left unstabilized; from the generation cache
when it is warm). The page is a pure function of those, so it is byte-identical across runs,
and ``tests/test_reference.py`` fails when the committed page is stale.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from ruamel.yaml import YAML

from ._backends import BACKENDS
from ._generate import PROJECT, Built, build_cached, find_specs, load_specs
from ._types import Spec

__all__ = ["REFERENCE", "reference", "reference_markdown"]

#: where the page lives in the project
REFERENCE = PROJECT / "docs" / "losses.md"


def reference(
    specs_dir: Path | None = None, *, cache: Path | None = PROJECT / ".lossgen-cache", log=print
) -> str:
    """The page for every spec under ``specs_dir`` (default ``specs/``), read at call time;
    derivations come from ``cache`` when it holds them."""
    specs = load_specs(find_specs(specs_dir))
    return reference_markdown(specs, build_cached(specs, cache=cache, log=log))

_SHAPES = {
    "scalar": "elementwise",
    "classes": "class axis, last",
    "vector": "embedding axis, last",
    "set": "reduced over a set of axes",
    "batch": "coupled across the first axis",
}


def reference_markdown(specs: Sequence[Spec], built: Sequence[Built]) -> str:
    """The page for ``specs`` (in that order) and their :class:`Built` results."""
    lines = [
        "# Generated losses",
        "",
        "<!-- DO NOT EDIT: written by `lossgen reference` (part of `make generate`). -->",
        "",
        (
            "Every loss below is emitted for NumPy, JAX and PyTorch as "
            "`generated/<backend>/<name>.py`, importable as `lossgen.generated.<backend>.<name>` or "
            "through `lossgen.load(name, backend)`. Each module has `value`, `grad`, `hess` and "
            "`hvp`: inputs in spec order, positional or by name; parameters keyword-only, as Python "
            "scalars or arrays broadcastable to the output. The formula is the spec's textbook "
            "form; `lossgen explain NAME` shows what the analysis found in it and how the "
            "emitted code differs. The spec format is described in "
            "[spec-format.md](spec-format.md)."
        ),
        "",
        "| loss | summary | signature |",
        "|---|---|---|",
    ]
    for spec, result in zip(specs, built, strict=True):
        value = next(sig for sig, _, _ in _api(result.sources) if sig.startswith("value("))
        lines.append(f"| [`{spec.name}`](#{spec.name}) | {_cell(spec.summary)} | `{value}` |")
    for spec, result in zip(specs, built, strict=True):
        lines += ["", *_section(spec, result)]
    return "\n".join(lines) + "\n"


def _section(spec: Spec, result: Built) -> list[str]:
    lines = [f"## {spec.name}", "", spec.summary, "", "```"]
    lines += [f"{name} = {text}" for name, text in _formula(spec)]
    lines += ["```", "", "| input | role | domain | shape |", "|---|---|---|---|"]
    for inp in spec.inputs:
        lines.append(
            f"| `{inp.name}` | {inp.role} | `{inp.domain.text}` | {inp.shape} ({_SHAPES[inp.shape]}) |"
        )
    if spec.params:
        lines += ["", "| parameter | default | domain or choices |", "|---|---|---|"]
        for p in spec.params:
            allowed = f"`{p.domain.text}`" if p.domain else ", ".join(f"`{c}`" for c in p.choices)
            lines.append(f"| `{p.name}` | `{p.default!r}` | {allowed} |")
    lines += ["", "| function | backends | what it returns |", "|---|---|---|"]
    for signature, backends, doc in _api(result.sources):
        lines.append(f"| `{signature}` | {', '.join(backends)} | {_cell(doc)} |")
    lines += [
        "",
        (
            f"From `specs/{spec.name}.yaml`: `lossgen.load(\"{spec.name}\", \"torch\")`, or "
            f"`from lossgen.generated.numpy.{spec.name} import value, grad, hess, hvp`."
        ),
    ]
    numerics = (
        f"Numerics (`lossgen explain {spec.name}`): {result.findings} findings on the textbook "
        f"expression and its naive derivatives, {result.rewrites} rewrites into stable forms"
    )
    if result.unstable:
        numerics += (
            f"; {len(result.unstable)} terms that no rule stabilizes "
            f"(`on_unstable: {spec.on_unstable}`)"
        )
    lines += ["", numerics + ".", "", "References:", ""]
    lines += [f"- {_cell(ref)}" for ref in spec.references]
    return lines


def _headers(source: str) -> str:
    """The module's top-level public classes, and its public functions cut after their
    docstring: all that `_api` reads, without parsing the (long) bodies."""
    blocks, current = [], None
    for line in source.splitlines():
        if line and not line[0].isspace() and not line.startswith(("@", ")", "]")):
            current = None
            if line.startswith(("def ", "class ")) and not line.split()[1].startswith("_"):
                current = [line, line.startswith("def "), 0]
                blocks.append(current)
            continue
        if current is None or current[2] == 2:
            continue
        current[0] += "\n" + line
        if current[1]:  # a function: stop at the end of its docstring (whole if it has none)
            current[2] = min(2, current[2] + line.count('"""'))
    return "\n\n".join(
        text + ("\n    pass" if is_def and closed == 2 else "") for text, is_def, closed in blocks
    ) + "\n"


@functools.lru_cache(maxsize=None)
def _api_of(sources: tuple[tuple[str, str], ...]) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    found: dict[str, tuple[list[str], str]] = {}
    for backend, source in sources:
        for node in ast.parse(_headers(source)).body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            if isinstance(node, ast.FunctionDef):
                signature = f"{node.name}({ast.unparse(node.args)})"
            else:
                methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
                init, call = methods.get("__init__"), methods.get("forward") or methods.get("__call__")
                signature = f"{node.name}({_without_self(init)})"
                if call is not None:
                    signature += f"({_without_self(call)})"
            doc = (ast.get_docstring(node) or "").strip().split("\n")[0]
            found.setdefault(signature, ([], doc))[0].append(backend)
    return tuple((signature, tuple(backends), doc) for signature, (backends, doc) in found.items())


def _api(sources: Mapping[str, str]) -> list[tuple[str, list[str], str]]:
    """The public functions and classes of the generated modules, read from their source:
    (signature, the backends that have it, the first line of its docstring), in module order."""
    api = _api_of(tuple((backend, sources[backend]) for backend in BACKENDS))
    return [(signature, list(backends), doc) for signature, backends, doc in api]


def _without_self(node: ast.FunctionDef | None) -> str:
    if node is None:
        return ""
    args = ast.unparse(node.args)
    return args.removeprefix("self, ").removeprefix("self")


def _formula(spec: Spec) -> list[tuple[str, str]]:
    """The defines and the loss as the spec's author wrote them (whitespace normalised)."""
    if spec.formula_text:
        pairs = list(spec.formula_text)
    else:  # (a Spec built by hand)
        data = YAML(typ="safe", pure=True).load(spec.source_text)
        pairs = [(name, text) for name, text in (data.get("define") or {}).items()]
        pairs.append(("loss", data["loss"]))
    return [(str(name), " ".join(str(text).split())) for name, text in pairs]


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell or list item."""
    return " ".join(text.split()).replace("|", "\\|")
