"""``lossgen report``: accuracy of every generated loss against the oracle, beside the textbook
formula autodiffed in torch and jax and beside the libraries people use.

Writes ``reports/accuracy.json`` (every figure, keyed by spec name), ``reports/accuracy.md`` and
``reports/accuracy.html`` (the same tables, and for elementwise losses a plot of bits of error
against the input per implementation). Grades come from the committed oracle fixtures (the
deterministic ``extreme`` grid and the ``random`` samples); no point is chosen by the passes
(they analyse symbolically), so none is both a rewrite's reason and its grade.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from ._accuracy import autodiff_outputs, generated_outputs, grade, naive_function
from ._fixtures import load_fixture
from ._libraries import library_functions
from ._types import Spec

__all__ = ["REPORT_GRIDS", "build_report", "write_report"]

REPORT_GRIDS = ("extreme", "random")
NARROW = ("float16", "bfloat16")
OUTPUT_ORDER = ("value", "grad", "hess")


@dataclass(frozen=True)
class _Implementation:
    label: str
    kind: str  # "lossgen", "textbook autodiff" or "library"
    backend: str
    run: Callable


def _implementations(spec: Spec, backends: list[str]) -> tuple[list[_Implementation], list[str]]:
    import lossgen

    found = [
        _Implementation(f"lossgen ({b})", "lossgen", b, generated_outputs(spec, lossgen.load(spec.name, b), b))
        for b in backends
    ]
    # autodiff's grad of grad.sum() is the Hessian's diagonal blocks only for elementwise losses
    if len(spec.differentiated) > 1 and any(i.shape != "scalar" for i in spec.inputs):
        return found, ["autodiff rows need one differentiated input or elementwise inputs"]
    for b in ("torch", "jax"):
        if b in backends:
            found.append(
                _Implementation(
                    f"textbook formula, {b} autodiff", "textbook autodiff", b,
                    autodiff_outputs(spec, naive_function(spec, b), b),
                )
            )
    libraries, notes = library_functions(spec.name)
    for label, b, function in libraries:
        if b in backends:
            found.append(_Implementation(label, "library", b, autodiff_outputs(spec, function, b)))
    return found, notes


def _worst(fixture: dict, g, index: int) -> dict:
    if index < 0:
        return {}
    points = np.flatnonzero(g.points)
    k = int(points[index])
    return {name: column[k] for name, column in fixture["columns"].items()}


def _rows(spec, fixture, grid_name, implementation, dtype) -> list[dict]:
    rows = []
    try:
        grades = grade(implementation.run, fixture, dtype)
    except Exception as error:  # a backend that cannot run this dtype: reported, not fatal
        return [{
            "spec": spec.name, "grid": grid_name, "implementation": implementation.label,
            "kind": implementation.kind, "backend": implementation.backend, "dtype": dtype,
            "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
        }]
    for g in grades:
        s = g.summary
        rows.append({
            "spec": spec.name,
            "grid": grid_name,
            "implementation": implementation.label,
            "kind": implementation.kind,
            "backend": implementation.backend,
            "dtype": dtype,
            "output": g.label,
            "points": s.count,
            "mean_bits": round(s.mean_bits, 3),
            "max_bits": round(s.max_bits, 2),
            "max_beyond": round(s.max_beyond, 2),
            "frac_above_8": round(s.frac_above_8, 4),
            "nonfinite": s.nonfinite,
            "worst_input": _worst(fixture, g, s.worst),
            "bits": g.bits,  # dropped before writing JSON; used by the plots
            "graded": g.points,
        })
    return rows


def _oracle_guarantee(spec: Spec, fixture: dict) -> dict:
    """The precisions that agreed, by magnitude class of the differentiated inputs."""
    names = [i.name for i in spec.differentiated]
    classes: dict[str, list] = {}
    for k, digits in enumerate(fixture["digits"]):
        if digits is None:
            continue
        size = max(abs(fixture["columns"][n][k]) for n in names)
        label = (
            "|x| < 1" if size < 1 else "1 <= |x| < 100" if size < 100
            else "100 <= |x| < 1000" if size < 1000 else "|x| >= 1000"
        )
        classes.setdefault(label, []).append(digits)
    out = {}
    order = ("|x| < 1", "1 <= |x| < 100", "100 <= |x| < 1000", "|x| >= 1000")
    for label, pairs in sorted(classes.items(), key=lambda item: order.index(item[0])):
        out[label] = {
            "points": len(pairs),
            "lower_digits": [min(p[0] for p in pairs), max(p[0] for p in pairs)],
            "upper_digits": [min(p[1] for p in pairs), max(p[1] for p in pairs)],
        }
    refused = [
        {name: column[k] for name, column in fixture["columns"].items()} for k in fixture.get("refused", [])
    ]
    return {"classes": out, "refused": refused}


def build_report(
    specs: list[Spec], *, fixtures: Path, backends=("numpy", "jax", "torch"),
    dtypes=("float64", "float32", "float16", "bfloat16"), log=print,
) -> dict:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    report = {"lossgen": __version__, "grids": list(REPORT_GRIDS), "specs": {}}
    for spec in specs:
        if spec.has_classes:
            log(f"  {spec.name}: a loss over a class axis, graded by tests/test_classes.py (not in the report yet)")
            continue
        if spec.is_batch:
            log(f"  {spec.name}: a loss over a batch, graded by tests/test_batch.py (not in the report yet)")
            continue
        start = time.perf_counter()
        implementations, notes = _implementations(spec, list(backends))
        entry = {"summary": spec.summary, "notes": notes, "grids": {}, "rows": [], "oracle": {}}
        for param in spec.params:
            if getattr(param, "choices", None):
                entry["notes"].append(
                    f"categorical parameter {param.name} is graded at its default {param.default!r} "
                    f"only (the oracle grids hold numeric columns); its other choices "
                    f"({', '.join(c for c in param.choices if c != param.default)}) are checked against "
                    "the libraries by tests/test_library_match.py"
                )
        for grid_name in REPORT_GRIDS:
            fixture = load_fixture(fixtures, spec.name, grid_name)
            if fixture is None:
                entry["notes"].append(f"no {grid_name} fixture: run `make fixtures`")
                continue
            entry["grids"][grid_name] = len(next(iter(fixture["columns"].values())))
            entry["oracle"][grid_name] = _oracle_guarantee(spec, fixture)
            for implementation in implementations:
                for dtype in dtypes:
                    if dtype in NARROW and implementation.backend == "numpy":
                        continue
                    entry["rows"] += _rows(spec, fixture, grid_name, implementation, dtype)
        report["specs"][spec.name] = entry
        log(f"  {spec.name}: {len(entry['rows'])} rows in {time.perf_counter() - start:.1f} s")
    return report


def _plot(spec: Spec, entry: dict, fixtures: Path, grid_name: str = "extreme", dtype: str = "float64"):
    """PNG bytes: max bits of error against the differentiated input, per implementation."""
    if len(spec.differentiated) != 1 or any(i.shape != "scalar" for i in spec.inputs):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixture = load_fixture(fixtures, spec.name, grid_name)
    if fixture is None:
        return None
    x_all = np.asarray(fixture["columns"][spec.differentiated[0].name])
    rows = [r for r in entry["rows"] if r["grid"] == grid_name and r["dtype"] == dtype and "bits" in r]
    labels = list(dict.fromkeys(r["implementation"] for r in rows))
    outputs = [o for o in dict.fromkeys(r["output"] for r in rows)]
    fig, axes = plt.subplots(1, len(outputs), figsize=(5 * len(outputs), 3.6), squeeze=False)
    for ax, output in zip(axes[0], outputs):
        for label in labels:
            (row,) = [r for r in rows if r["implementation"] == label and r["output"] == output] or [None]
            if row is None:
                continue
            x = x_all[row["graded"]]
            xs = np.unique(x)
            worst = [row["bits"][x == v].max() for v in xs]
            style = "-" if label.startswith("lossgen") else "--"
            ax.plot(xs, worst, style, marker=".", markersize=3, linewidth=1, label=label)
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_ylim(-1, 66)
        ax.set_title(f"{spec.name}: {output} ({dtype})", fontsize=9)
        ax.set_xlabel(spec.differentiated[0].name, fontsize=8)
        ax.set_ylabel("max bits of error", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


_COLUMNS = (
    ("implementation", "implementation"), ("dtype", "dtype"), ("output", "output"),
    ("points", "points"), ("mean_bits", "mean bits"), ("max_bits", "max bits"),
    ("max_beyond", "max beyond κ"), ("frac_above_8", "> 8 bits"), ("nonfinite", "NaN/Inf"),
    ("worst_input", "worst input"),
)


def _cell(row: dict, key: str) -> str:
    if "error" in row:
        return row["error"] if key == "output" else row.get(key, "")
    value = row[key]
    if key == "worst_input":
        return ", ".join(f"{k}={v:g}" for k, v in value.items())
    if key == "frac_above_8":
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _public(report: dict) -> dict:
    """The JSON view: every figure of the tables, without the per-point arrays."""
    out = json.loads(json.dumps(report, default=lambda _: None))
    for entry in out["specs"].values():
        for row in entry["rows"]:
            row.pop("bits", None)
            row.pop("graded", None)
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value):
                    row[key] = None  # JSON has no inf/nan
    return out


def write_report(report: dict, specs: list[Spec], *, out: Path, fixtures: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in specs}
    md = [
        "# lossgen accuracy report",
        "",
        f"lossgen {report['lossgen']}. Bits of error against the mpmath oracle (log2(1 + ULPs));",
        "'beyond κ' subtracts log2(1 + κ), what the conditioning forces; NaN/Inf counts points",
        "whose rounded truth is finite. float16 and bfloat16 rows grade the grid points exact in",
        "those types. Grids: `extreme` (deterministic) and `random` (ML-like samples).",
        "",
    ]
    body = [
        "<h1>lossgen accuracy report</h1>",
        f"<p>lossgen {html.escape(report['lossgen'])}. Bits of error against the mpmath oracle "
        "(log2(1 + ULPs)); <em>beyond κ</em> subtracts log2(1 + κ); NaN/Inf counts points whose "
        "rounded truth is finite. float16 and bfloat16 rows grade the grid points exact in those "
        "types.</p>",
    ]
    for name, entry in report["specs"].items():
        spec = by_name[name]
        md += [f"## {name}", "", entry["summary"], ""]
        body += [f"<h2 id='{name}'>{html.escape(name)}</h2>", f"<p>{html.escape(entry['summary'])}</p>"]
        for note in entry["notes"]:
            md.append(f"- note: {note}")
            body.append(f"<p class='note'>note: {html.escape(note)}</p>")
        png = _plot(spec, entry, fixtures)
        if png is not None:
            (out / f"{name}.png").write_bytes(png)
            md += ["", f"![bits of error against {spec.differentiated[0].name}]({name}.png)", ""]
            data = base64.b64encode(png).decode()
            body.append(f"<img alt='bits of error for {name}' src='data:image/png;base64,{data}'>")
        for grid_name, oracle in entry["oracle"].items():
            md += ["", f"Oracle ({grid_name} grid): the two precisions (decimal digits) that agreed to 30 digits:", ""]
            md += ["| inputs | points | lower precision | upper precision |", "|---|---|---|---|"]
            body.append(f"<p>Oracle ({grid_name} grid): the two precisions that agreed</p><table><tr>"
                        "<th>inputs</th><th>points</th><th>lower</th><th>upper</th></tr>")
            for label, c in oracle["classes"].items():
                lo = f"{c['lower_digits'][0]}-{c['lower_digits'][1]}"
                hi = f"{c['upper_digits'][0]}-{c['upper_digits'][1]}"
                md.append(f"| {label} | {c['points']} | {lo} | {hi} |")
                body.append(f"<tr><td>{html.escape(label)}</td><td>{c['points']}</td><td>{lo}</td><td>{hi}</td></tr>")
            body.append("</table>")
            refused = oracle["refused"]
            md.append(f"\nRefused (no two precisions agreed; not averaged in): {len(refused)} {refused[:5]}")
            body.append(f"<p>Refused points: {len(refused)} {html.escape(str(refused[:5]))}</p>")
        for grid_name, count in entry["grids"].items():
            rows = [r for r in entry["rows"] if r["grid"] == grid_name]
            md += ["", f"### {name}: {grid_name} grid ({count} points)", ""]
            md.append("| " + " | ".join(title for _, title in _COLUMNS) + " |")
            md.append("|" + "---|" * len(_COLUMNS))
            body.append(f"<h3>{html.escape(name)}: {grid_name} grid ({count} points)</h3><table><tr>")
            body.append("".join(f"<th>{html.escape(title)}</th>" for _, title in _COLUMNS) + "</tr>")
            for row in rows:
                cells = [_cell(row, key) for key, _ in _COLUMNS]
                md.append("| " + " | ".join(cells) + " |")
                cls = " class='lossgen'" if row.get("kind") == "lossgen" else ""
                body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            body.append("</table>")
        md.append("")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
        "font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "tr.lossgen{background:#eef6ee}img{max-width:100%}.note{color:#a60}"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>lossgen accuracy report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    paths = [out / "accuracy.json", out / "accuracy.md", out / "accuracy.html"]
    paths[0].write_text(json.dumps(_public(report), indent=1, allow_nan=True) + "\n")
    paths[1].write_text("\n".join(md) + "\n")
    paths[2].write_text(page)
    return paths
