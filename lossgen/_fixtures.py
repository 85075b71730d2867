"""Oracle fixtures: exact values on each spec's grids, computed once and committed under tests/.

A fixture is keyed by a hash of the spec's textbook expression, its signature, the grid and the
oracle's version; ``make fixtures`` recomputes only the fixtures whose key changed, over a
process pool, and the test suite compares the generated code against them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import sympy

from . import oracle as _oracle
from ._grid import BATCH_GRIDS, CLASS_GRIDS, NORMWISE_FROM, grid, grid_names
from ._types import Spec

__all__ = ["fixture_key", "fixture_path", "load_fixture", "update_fixtures"]


def fixture_path(directory: Path, spec_name: str, grid_name: str) -> Path:
    return Path(directory) / f"{spec_name}.{grid_name}.json"


def fixture_key(spec: Spec, columns: dict[str, list[float]]) -> str:
    signature = {
        "expression": sympy.srepr(spec.expression()),
        "inputs": [(i.name, i.role, i.domain.text, i.shape) for i in spec.inputs],
        "params": [(p.name, p.default) for p in spec.params],
        "columns": columns,
        "oracle": _oracle.VERSION,
        "agree_digits": _oracle.AGREE_DIGITS,
    }
    text = json.dumps(signature, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_fixture(directory: Path, spec_name: str, grid_name: str) -> dict | None:
    path = fixture_path(directory, spec_name, grid_name)
    if not path.exists():
        return None
    return json.loads(path.read_text())


_WORKER: dict = {}


def grid_shape(spec: Spec, grid_name: str):
    """What the oracle needs to write the loss out on a grid: the number of classes of a loss
    over a class axis, the (rows, features) of a loss over a batch, else None."""
    if spec.is_batch:
        return BATCH_GRIDS[grid_name]
    return CLASS_GRIDS.get(grid_name) if spec.has_classes else None


def _init_worker(spec: Spec, classes=None) -> None:
    _WORKER["oracle"] = _oracle.Oracle(spec, classes)
    # graded norm-wise (many classes): 20 digits are plenty, and keep the file small
    size = classes[0] * classes[1] if isinstance(classes, tuple) else classes
    _WORKER["digits"] = 20 if size is not None and size >= NORMWISE_FROM else 40


def _evaluate_chunk(points: list[dict[str, float]]) -> list[tuple]:
    oracle = _WORKER["oracle"]
    out = []
    for point in points:
        try:
            e = oracle.evaluate(point)
        except _oracle.OracleError:
            out.append(None)
            continue
        out.append(
            (
                {k: _oracle.format_mpf(v, _WORKER["digits"]) for k, v in e.values.items()},
                {k: _oracle.format_mpf(v, 6) for k, v in e.kappas.items()},
                list(e.digits),
            )
        )
    return out


def compute_fixture(spec: Spec, grid_name: str, *, processes: int | None = None) -> dict:
    columns = grid(spec, grid_name)
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    points = [{name: columns[name][k] for name in names} for k in range(n)]
    size = max(1, n // (8 * (processes or os.cpu_count() or 1)))
    chunks = [points[i : i + size] for i in range(0, n, size)]
    results: list = []
    # spawned, not forked: a fork of a process that imported JAX (a test run) can deadlock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_worker,
        initargs=(spec, grid_shape(spec, grid_name)),
    ) as pool:
        for done, chunk in enumerate(pool.map(_evaluate_chunk, chunks), 1):
            results.extend(chunk)
            print(
                f"\r  {spec.name}.{grid_name}: {len(results)}/{n} points",
                end="",
                file=sys.stderr,
                flush=True,
            )
    print(file=sys.stderr)
    labels = list(next((r[0] for r in results if r), {}))
    refused = [k for k, r in enumerate(results) if r is None]
    truth = {label: [r[0][label] if r else "nan" for r in results] for label in labels}
    kappa = {label: [r[1][label] if r else "nan" for r in results] for label in labels}
    return {
        "spec": spec.name,
        "grid": grid_name,
        "key": fixture_key(spec, columns),
        "columns": columns,
        "truth": truth,
        "kappa": kappa,
        "digits": [r[2] if r else None for r in results],
        "refused": refused,
    }


def update_fixtures(
    specs: list[Spec], directory: Path, *, force: bool = False, processes: int | None = None
) -> list[Path]:
    """Recompute the fixtures whose key no longer matches; return the files written."""
    written = []
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        for grid_name in grid_names(spec):
            existing = load_fixture(directory, spec.name, grid_name)
            key = fixture_key(spec, grid(spec, grid_name))
            if existing is not None and existing.get("key") == key and not force:
                print(f"  {spec.name}.{grid_name}: up to date", file=sys.stderr)
                continue
            data = compute_fixture(spec, grid_name, processes=processes)
            path = fixture_path(directory, spec.name, grid_name)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
            os.replace(tmp, path)
            written.append(path)
    return written
