"""The render pass: one standalone Python module per backend, from jinja2 templates."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import jinja2
import sympy
from sympy.printing.str import StrPrinter

from ._backends import BACKENDS, print_expr
from ._ir import Derivation
from ._primitives import Primitive
from ._scaling import degree, helpers as scaling_helpers, rescaled
from ._types import CHOICE_PREFIX, RESERVED_NAMES, Spec

__all__ = ["TEMPLATES", "render", "render_docstring"]

TEMPLATES = Path(__file__).parent / "templates"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)

def _defline(name: str, args: str, indent: str = "") -> str:
    """``def name(args):``, over several lines when it is wider than the modules' 100 columns."""
    line = f"{indent}def {name}({args}):"
    if len(line) <= 100:
        return line
    inner = f"{indent}    {args}"
    if len(inner) <= 100:
        return f"{indent}def {name}(\n{inner},\n{indent}):"
    parts = [a.strip() for a in args.split(",")]
    body = "".join(f"{indent}    {a},\n" for a in parts)
    return f"{indent}def {name}(\n{body}{indent}):"


_ENV.filters["defline"] = _defline


def _prepare_call(unpack: str, args: str) -> str:
    """``    <unpack> = _prepare(<args>)``, the arguments on their own line when it is wider
    than the modules' 100 columns."""
    line = f"    {unpack} = _prepare({args})"
    return line if len(line) <= 100 else f"    {unpack} = _prepare(\n        {args}\n    )"


def _all_names(names: list[str]) -> str:
    """``__all__ = [...]``, one name a line when it is wider than 100 columns."""
    line = f"__all__ = {json.dumps(names)}"
    if len(line) <= 100:
        return line
    return "__all__ = [\n" + "".join(f"    {json.dumps(n)},\n" for n in names) + "]"


_ENV.filters["prepare"] = _prepare_call
_ENV.filters["all_names"] = _all_names

_SHAPE_WORDS = {
    "scalar": "elementwise",
    "classes": "class axis last",
    "vector": "embedding axis last",
    "set": "reduced over a set of axes",
    "batch": "rows of a batch (..., B, D), features last",
}


def _wrap(text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, width=92, initial_indent=indent, subsequent_indent=indent + "  ")


class _FormulaPrinter(StrPrinter):
    """SymPy's string printer in the spec language's vocabulary: ``abs``, ``min``, ``max``,
    ``exp(1)``, conditionals ``a if r < d else b``, choices ``approximate == "tanh"``. Anything
    outside the vocabulary is printed by name (and refused, with its position, by the loader)."""

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _nested(self, function: str, args) -> str:
        *rest, last = sorted(args, key=sympy.default_sort_key)
        text = self._print(last)
        for arg in reversed(rest):
            text = f"{function}({self._print(arg)}, {text})"
        return text

    def _print_Max(self, expr):
        return self._nested("max", expr.args)

    def _print_Min(self, expr):
        return self._nested("min", expr.args)

    def _print_Exp1(self, expr):
        return "exp(1)"

    def _print_Piecewise(self, expr):
        *pieces, (last, condition) = expr.args
        if condition is not sympy.true:
            raise ValueError(f"a Piecewise needs a last, otherwise branch: {expr}")
        text = self._print(last)
        for value, test in reversed(pieces):
            text = f"({self._print(value)} if {self._print(test)} else {text})"
        return text

    def _print_And(self, expr):
        return " and ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " or ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Equality(self, expr):
        return f"{self._print(expr.lhs)} == {self._print(expr.rhs)}"

    def _print_Symbol(self, expr):
        if expr.name.startswith(CHOICE_PREFIX):
            return f'"{expr.name[len(CHOICE_PREFIX):]}"'
        return super()._print_Symbol(expr)


def formula(expr: sympy.Expr) -> str:
    """``expr`` as a spec would write it."""
    text = _FormulaPrinter().doprint(expr)
    return text[1:-1] if isinstance(expr, sympy.Piecewise) else text


def render_docstring(d: Derivation) -> str:
    spec = d.spec
    lines = [*textwrap.wrap(spec.summary, width=96), ""]
    lines += ["Loss", "----"]
    for symbol, definition in spec.define:
        lines += _wrap(f"{symbol} = {formula(definition)}")
    lines += _wrap(f"loss = {formula(spec.loss)}")
    if spec.notes:
        lines += ["", "Conventions", "-----------"]
        lines += textwrap.wrap(spec.notes, width=92)
    lines += ["", "Inputs", "------"]
    for inp in spec.inputs:
        lines.append(f"{inp.name} : {inp.role}, domain {inp.domain.text}, {_SHAPE_WORDS[inp.shape]}")
    if spec.params:
        lines += ["", "Parameters", "----------"]
        for p in spec.params:
            where = f"domain {p.domain.text}" if p.domain else f"one of {', '.join(p.choices)}"
            lines.append(f"{p.name} : default {p.default!r}, {where}")
    names = [i.name for i in spec.differentiated]
    wrt = " and ".join(names)
    lines += ["", "Functions", "---------"]
    if spec.is_batch:
        lines += _wrap(
            f"value(...) : the loss of each row (anchor), shaped like {wrt} less its last axis.",
            indent="",
        )
        lines.append(f"grad(..., rows=None) : d value(...).sum() / d {wrt}, shaped like {wrt}; given")
        lines.append("  per-row weights rows, d (rows * value(...)).sum() / d " + f"{wrt}.")
        lines.append(f"hvp(..., v, rows=None) : the Hessian of the same sum applied to v, shaped like {wrt}.")
        lines.append(f"jvp(..., v) : the derivative of value(...) along v, one number per row.")
        lines += _wrap(
            "No hess: the rows are coupled, and the Hessian is a (B*D, B*D) matrix; hvp costs "
            "O(B**2 D), as the loss.",
            indent="",
        )
    else:
        lines.append("value(...) : the unreduced loss, shaped like the broadcast inputs.")
    if spec.is_batch:
        pass
    elif len(names) == 1:
        lines.append(f"grad(...) : d value(...).sum() / d {wrt}, shaped like {wrt}.")
        lines.append(f"hess(...) : the elementwise second derivative in {wrt}, shaped like {wrt}.")
        lines.append(f"hvp(..., v) : hess(...) * v, v shaped like {wrt}.")
    else:
        lines.append(f"grad(...) : a tuple, d value(...).sum() / d {', '.join(names)}.")
        lines.append("hess(...) : nested tuple of elementwise blocks ((H11, H12, ...), ...).")
        lines.append("hvp(..., v) : the Hessian applied to the tuple v, one entry per input.")
    lines += _wrap(
        f"{spec.name}(..., reduction='mean') : the loss reduced by 'mean', 'sum' or 'none', "
        "for training. In torch an autograd.Function and in jax a custom_jvp: autodiff "
        f"(backward, jax.grad, double backward, jax.hessian) uses grad and {'hvp' if spec.is_batch else 'hess'} above. "
        "float16 and bfloat16 are computed in float32 and returned in the input dtype.",
        indent="",
    )
    if any(i.shape == "set" for i in spec.inputs):
        lines += _wrap(
            "Every function takes axes=None: the axes of the set the loss reduces over (by "
            "default every axis but the first, the batch; of a 1-d input its only axis). value "
            "has the other axes; grad and hvp have the inputs' shapes; hess gives one (N, N) "
            "block per set, N the number of its elements in C order of the axes.",
            indent="",
        )
    lines.append(f"{_camel(spec.name)}(*, <params>, reduction='mean') : torch.nn.Module of it.")
    lines.append("value_and_grad(...) : numpy, the reduced loss and its gradient.")
    if "grad_norm" in spec.exports:
        lines.append(f"grad_norm(...) : |grad(...)|, the gradient norm per element of {wrt}.")
    if "GHMWeights" in spec.exports:
        lines += _wrap(
            "GHMWeights(bins=10, momentum=0.0) : weights from the density of gradient norms "
            "(GHM-C), called with g = grad_norm(...) at a weight of 1; in torch a Module "
            "with the running counts as a buffer, in jax with a pure apply(counts, g, valid).",
            indent="",
        )
    lines += [""]
    lines += _wrap(
        "Every function takes validate=False; validate=True raises ValueError naming the "
        "argument when a constant input or a parameter lies outside its domain above (eager "
        "only: unavailable under jax.jit and torch.compile; off, it costs nothing). NaN in "
        "gives NaN out: no function raises on NaN or Inf values.",
        indent="",
    )
    lines += ["", "Numerics", "--------"]
    if d.findings:
        lines.append("Findings on the textbook expression and its naive derivatives:")
        for finding in d.findings:
            lines += _wrap(f"- {finding}", indent="")
    else:
        lines.append("No term of the textbook expression or its derivatives breaks in floating point.")
    if d.rewrites:
        lines.append("Rewrites applied (rule: before -> after, reason):")
        for rewrite in d.rewrites:
            lines += _wrap(f"- {rewrite}", indent="")
    if d.unanswered:
        lines.append("Found again in the emitted forms (a divergence of the result itself is")
        lines.append("reported, not fixed):")
        for finding in d.unanswered:
            lines += _wrap(f"- {finding}", indent="")
    lines += ["", "References", "----------"]
    for ref in spec.references:
        lines += _wrap(f"- {ref}", indent="")
    text = "\n".join(line.rstrip() for line in lines)
    return text.replace("\\", "\\\\").replace('"""', r"\"\"\"")


_WIDTH = 92


def _split_top(text: str, ops: tuple[str, ...]) -> list[str]:
    """Split ``text`` before each top-level (unparenthesized) binary operator in ``ops``."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and i > start:
            op = next((op for op in ops if text.startswith(op, i)), None)
            if op is not None:
                parts.append(text[start:i])
                start = i + 1  # keep the operator at the head of the next part
                i += len(op)
                continue
        i += 1
    parts.append(text[start:])
    return parts


def _wrap_expr(text: str, indent: str) -> list[str]:
    """``text`` over as many lines as it needs, split at top-level + and - (else * and /, else
    between the arguments of a call), each piece wrapped the same way."""
    if len(indent) + len(text) <= _WIDTH:
        return [indent + text]
    for head in ("+ ", "- ", "* ", "/ ", "if ", "else ", "-"):  # a piece carrying its operator
        if text.startswith(head):
            lines = _wrap_expr(text[len(head):], indent)
            lines[0] = lines[0][: len(indent)] + head + lines[0][len(indent):]
            return lines
    for ops in ((" if ", " else "), (" + ", " - "), (" * ", " / ")):
        parts = _split_top(text, ops)
        if len(parts) > 1:
            lines = []
            for part in parts:
                lines += _wrap_expr(part, indent)
            return lines
    if text.startswith("(") and text.endswith(")") and _depth_ok(text[1:-1]):
        return [f"{indent}(", *_wrap_expr(text[1:-1], indent + "    "), f"{indent})"]
    power = re.fullmatch(r"(.*\))(\*\*[\w.]+)", text)  # f(...)**2: the call wrapped
    if power and _depth_ok(power.group(1)):
        lines = _wrap_expr(power.group(1), indent)
        if len(lines) > 1:
            lines[-1] += power.group(2)
            return lines
    head, paren, rest = text.partition("(")
    if paren and rest.endswith(")") and head.replace(".", "").replace("_", "").isalnum():
        inner = rest[:-1]
        if _depth_ok(inner):
            args = [a.strip().lstrip(",").strip() for a in _split_top(inner, (", ",))]
            if args:
                lines = [f"{indent}{head}("]
                for arg in args:
                    wrapped = _wrap_expr(arg, indent + "    ")
                    wrapped[-1] += ","
                    lines += wrapped
                return lines + [f"{indent})"]
    return [indent + text]


def _statement(target: str, text: str, indent: str = "    ") -> list[str]:
    """``target = text``, wrapped inside parentheses when too long."""
    line = f"{indent}{target} = {text}"
    if len(line) <= _WIDTH:
        return [line]
    return [f"{indent}{target} = (", *_wrap_expr(text, indent + "    "), f"{indent})"]


def _depth_ok(text: str) -> bool:
    """Whether the parentheses of ``text`` balance (so it is one argument list)."""
    depth = 0
    for ch in text:
        depth += ch in "(["
        depth -= ch in ")]"
        if depth < 0:
            return False
    return depth == 0


def _free_name(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


def _function(d: Derivation, key: str, backend: str, targets: list[str]) -> dict:
    """The body statements and the returned names of one generated function."""
    block = d.blocks.get(f"{backend}:{key}", d.blocks[key])
    taken = {i.name for i in d.spec.inputs} | {p.name for p in d.spec.params}
    taken |= {str(symbol) for symbol, _ in block.assignments} | set(RESERVED_NAMES)
    statements = [(str(symbol), expr) for symbol, expr in block.assignments]
    names = []
    for target, expr in zip(targets, block.outputs):
        name = _free_name(target, taken)
        taken.add(name)
        statements.append((name, expr))
        names.append(name)
    # torch (eager) frees each intermediate after its last use: fewer tensors alive at once,
    # and so fewer fresh pages for the allocator to fault in
    last = {}
    if backend == "torch":
        temporaries = {name for name, _ in statements} - set(names)
        for i, (_, expr) in enumerate(statements):
            for symbol in sorted(expr.free_symbols, key=str):
                if str(symbol) in temporaries:
                    last[str(symbol)] = i
    lines: list[str] = []
    for i, (name, expr) in enumerate(statements):
        lines += _statement(name, print_expr(expr, backend))
        dead = [n for n, _ in statements if last.get(n) == i]
        if dead and i < len(statements) - 1:  # (the return frees the rest)
            lines.append(f"    del {', '.join(dead)}")
    return {"body": "".join(line + "\n" for line in lines), "outputs": names}


def _function_context(d: Derivation, backend: str) -> dict:
    spec = d.spec
    names = [i.name for i in spec.differentiated]
    shapes = [f"{name}.shape" for name in names]
    n = len(names)
    hess_targets = [f"d2_{a}" if a == b else f"d2_{a}_{b}" for a in names for b in names]
    hess = _function(d, "hess", backend, hess_targets)
    hess["rows"] = [hess["outputs"][i * n : (i + 1) * n] for i in range(n)]
    grad = _function(d, "grad", backend, [f"d_{name}" for name in names])
    grad["shapes"] = shapes
    value = _function(d, "value", backend, ["loss"])
    value_grad = _function(d, "value_grad", backend, ["loss", *(f"d_{name}" for name in names)])
    value_grad["shapes"] = shapes
    if spec.has_classes:  # one value per row; a (C, C) block per row
        value.update(index="[..., 0]", full="shape[:-1]")
        value_grad.update(index="[..., 0]", full="shape[:-1]")
        hess.update(
            shapes=[f"{s} + {s}[-1:]" for s in shapes], full="shape + shape[-1:]",
            doc="The Hessian of value(...).sum(), one (C, C) block per row",
        )
        hvp = _function(d, "hvp", backend, [f"hv_{name}" for name in names])
        hvp["directions"] = [f"v_{name}" for name in names]
        k = degree(spec)
        if k is not None:  # on rows scaled by a power of two (lossgen/_scaling.py)
            inputs = [i.name for i in spec.inputs]
            value = rescaled(value, inputs, [0], k)
            value_grad = rescaled(value_grad, inputs, [0] + [1] * n, k)
            grad = rescaled(grad, inputs, [1] * n, k)
            hvp = rescaled(hvp, inputs, [2] * n, k)
            hess = rescaled(hess, inputs, [2] * (n * n), k, block=True)
            hess["rows"] = [hess["outputs"][i * n : (i + 1) * n] for i in range(n)]
            shapes = [f"_shape_{name}" for name in names]
            grad["shapes"] = value_grad["shapes"] = shapes
            hess["shapes"] = [f"{s} + {s}[-1:]" for s in shapes]
    else:
        value.update(index="", full="shape")
        value_grad.update(index="", full="shape")
        hess.update(shapes=shapes, full="shape", doc="The elementwise second derivatives of value(...).sum()")
        hvp = None
    return {"value": value, "grad": grad, "hess": hess, "hvp": hvp, "value_grad": value_grad}




def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _literal(number: sympy.Expr) -> str:
    """A Python expression for a domain end: a float, or float("inf")."""
    if number.is_infinite:
        return 'float("-inf")' if number.is_negative else 'float("inf")'
    return repr(float(number))


def _domains(spec: Spec) -> list[tuple[str, str]]:
    """``(name, rendered domain tuple)`` for each constant input and each parameter."""
    entries = [(i.name, i.domain) for i in spec.inputs if i.role == "constant"]
    entries += [(p.name, p.domain) for p in spec.params if p.domain is not None]
    rows = []
    for name, domain in entries:
        if domain.kind == "interval":
            ends = f"{_literal(domain.lo)}, {_literal(domain.hi)}"
            rows.append((name, f"({json.dumps(domain.text)}, {ends}, {domain.lo_closed}, {domain.hi_closed})"))
        elif domain.kind == "set":
            elements = ", ".join(_literal(e) for e in domain.elements)
            rows.append((name, f"({json.dumps(domain.text)}, ({elements},))"))
        else:
            rows.append((name, f"({json.dumps(domain.text)},)"))
    rows += [(p.name, f"({_strings(p.choices)},)") for p in spec.params if p.choices]
    return rows


def _strings(names) -> str:
    """A tuple literal of strings, in double quotes."""
    return _tuple([json.dumps(n) for n in names])


def _tuple_or_empty(names: list[str]) -> str:
    return _tuple(names) if names else "()"


def _tuple(names: list[str]) -> str:
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _signature(spec: Spec) -> dict:
    params = [f"{p.name}={p.default!r}" for p in spec.params]
    inputs = [i.name for i in spec.inputs]
    names = [p.name for p in spec.params]
    differentiated = [i.name for i in spec.differentiated]
    verb = "is" if len(differentiated) == 1 else "are"
    doc = (
        "Derivatives come from grad(...) and hess(...) above, not from autodiff of value(...): "
        f"{', '.join(differentiated)} {verb} differentiated; the other inputs and the "
        "parameters are constants. float16 and bfloat16 inputs are computed in float32 and "
        "the result is returned in the input dtype. \"mean\" divides by the number of "
        "elements of the broadcast shape, and so do the gradients. validate=True checks the "
        "constant inputs and the parameters against their domains (eager mode only)."
    )
    is_set = any(i.shape == "set" for i in spec.inputs)
    axes = ["axes=None"] if is_set else []
    batch = spec.is_batch
    return {
        "set": is_set,
        "batch": batch,
        "similarity": "sim",
        "public": ["grad", "hvp", "jvp", "value"] if batch else ["grad", "hess", "hvp", "value"],
        "def_args_rows": ", ".join(inputs + ["*"] + params + ["rows=None", "validate=False"]),
        "def_args_v_rows": ", ".join(inputs + ["v", "*"] + params + ["rows=None", "validate=False"]),
        "exports": list(spec.exports),
        "name": spec.name,
        "wrapper_doc": "\n".join(textwrap.wrap(doc, 96, initial_indent="    ", subsequent_indent="    ")),
        "camel": _camel(spec.name),
        "inputs_tuple": _tuple(inputs),
        "input_names": _strings(inputs),
        "param_names": _strings(names),
        "params_tuple": _tuple(names) if names else "()",
        "params_named": ", ".join(f"{p}={p}" for p in names),
        "categorical": [len(inputs) + k for k, p in enumerate(spec.params) if p.choices],
        "domains": _domains(spec),
        "module_args": ", ".join(["*", *params, *axes, 'reduction="mean"']),
        "wrapper_args": ", ".join(inputs + ["*"] + params + axes + ['reduction="mean"', "validate=False"]),
        "inputs": inputs,
        "params": [p.name for p in spec.params],
        "differentiated": [i.name for i in spec.differentiated],
        "differentiated_index": [spec.inputs.index(i) for i in spec.differentiated],
        "rows_index": _tuple_or_empty(
            [str(k) for k, i in enumerate(spec.inputs) if spec.has_classes and i.shape == "scalar"]
        ),
        "classes": spec.has_classes,
        "unpack": ", ".join(inputs + [p.name for p in spec.params] + ["shape", "out"]),
        "prepare_args": f"{_tuple(inputs)}, {_tuple([p.name for p in spec.params])}",
        "def_args": ", ".join(inputs + ["*"] + params + axes + ["validate=False"]),
        "def_args_v": ", ".join(inputs + ["v", "*"] + params + axes + ["validate=False"]),
        "call_args": ", ".join(inputs + [f"{p.name}={p.name}" for p in spec.params]),
    }


def _definitions(texts) -> list[str]:
    """The top-level function definitions in helper texts, each once (helpers may share one,
    e.g. a compensated sum), in sorted order."""
    found = set()
    for text in texts:
        chunks = re.split(r"\n(?=def )", text.strip("\n"))
        found |= {chunk.strip("\n") + "\n" for chunk in chunks if chunk.strip()}
    return sorted(found)


def render_module(d: Derivation, backend: str, *, functions: dict | None = None, extra=()) -> str:
    """The module of ``d`` for ``backend``; a batch loss passes its row loss's derivation as
    ``d``, with the spec, the ``functions`` and the ``extra`` helpers of the batch."""
    spec = d.spec
    functions = functions or _function_context(d, backend)
    body_text = "".join(fn["body"] for fn in functions.values() if fn)
    used, functions_used = set(), set()
    for key, block in d.blocks.items():
        if ":" in key and not key.startswith(f"{backend}:"):
            continue  # another backend's variant
        for expr in [e for _, e in block.assignments] + list(block.outputs):
            used |= {type(node) for node in expr.atoms(Primitive)}
            functions_used |= {type(node).__name__ for node in expr.atoms(sympy.Function)}
    table = BACKENDS[backend].helpers
    if spec.has_classes and degree(spec) is not None:
        extra = [*extra, scaling_helpers(backend)]
    helpers = _definitions(
        [h for cls in used if (h := cls.helpers.get(backend))]
        + [table[name] for name in sorted(functions_used) if name in table]
        + list(extra)
    )
    context = {
        "spec": spec,
        "spec_path": "/".join(Path(spec.path).parts[-2:]),
        "docstring": render_docstring(d),
        "sig": _signature(spec),
        "f": functions,
        "needs_special": "_special." in body_text + "".join(helpers),
        "helpers": helpers,
    }
    template = _ENV.get_template(f"{backend}.py.j2")
    return template.render(**context)


def render(d: Derivation) -> Derivation:
    sources = {backend: render_module(d, backend) for backend in BACKENDS}
    return replace(d, sources=sources)
