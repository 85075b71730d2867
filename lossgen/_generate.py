"""Finding specs, running the pipeline on them, and writing ``generated/`` atomically."""

from __future__ import annotations

import importlib
import os
import types
from pathlib import Path

from ._backends import BACKENDS
from ._ir import Derivation
from ._pipeline import run
from ._spec import load_spec
from ._types import Diagnostic, Spec, SpecError

__all__ = [
    "PROJECT",
    "build_all",
    "find_specs",
    "generate",
    "load",
    "load_specs",
]

#: the project folder holding specs/ and generated/ (the repository root in a checkout)
PROJECT = Path(os.environ.get("LOSSGEN_PROJECT", Path(__file__).resolve().parent.parent))

_PACKAGE_INIT = '"""Generated {backend} loss modules: one per spec. DO NOT EDIT; run `make generate`."""\n'
_ROOT_INIT = '"""Generated loss modules, one folder per backend. DO NOT EDIT; run `make generate`."""\n'


def find_specs(specs_dir: Path | None = None) -> list[Path]:
    return sorted(Path(specs_dir or PROJECT / "specs").glob("*.yaml"))


def load_specs(paths: list[Path]) -> list[Spec]:
    """Load every spec, collecting every diagnostic of every file before failing once."""
    specs: list[Spec] = []
    diagnostics: list[Diagnostic] = []
    for path in paths:
        try:
            spec = load_spec(path, other_names=[s.name for s in specs])
        except SpecError as error:
            diagnostics += error.diagnostics
            continue
        specs.append(spec)
    if diagnostics:
        raise SpecError(diagnostics)
    return specs


def build_all(specs: list[Spec]) -> list[Derivation]:
    return [run(spec) for spec in specs]


def _write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file; return whether it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def expected_files(derivations: list[Derivation]) -> dict[Path, str]:
    """Relative path -> content of every file under generated/ for these derivations."""
    files: dict[Path, str] = {Path("__init__.py"): _ROOT_INIT}
    for backend in BACKENDS:
        files[Path(backend) / "__init__.py"] = _PACKAGE_INIT.format(backend=backend)
    for d in derivations:
        for backend, source in d.sources.items():
            files[Path(backend) / f"{d.spec.name}.py"] = source
    return files


def generate(
    names: list[str] | None = None,
    *,
    specs_dir: Path | None = None,
    out_dir: Path | None = None,
    log=print,
) -> list[Path]:
    """Generate the modules for the named specs (all when ``names`` is empty)."""
    paths = find_specs(specs_dir)
    specs = load_specs(paths)
    if names:
        known = {s.name for s in specs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SpecError(
                [Diagnostic(str(specs_dir or PROJECT / "specs"), 1, 1, f"no spec named {n!r}") for n in unknown]
            )
        specs = [s for s in specs if s.name in names]
    out = Path(out_dir or PROJECT / "generated")
    written = []
    derivations = []
    for spec in specs:
        d = run(spec)
        derivations.append(d)
        log(f"  {spec.name}: {len(d.findings)} findings, {len(d.rewrites)} rewrites")
    for rel, text in expected_files(derivations).items():
        if _write_atomic(out / rel, text):
            written.append(out / rel)
    return written


def load(name: str, backend: str = "numpy") -> types.ModuleType:
    """The generated module of spec ``name`` for ``backend`` (numpy, jax or torch)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(f"lossgen.generated.{backend}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"lossgen.generated.{backend}.{name}":
            raise
        known = sorted(p.stem for p in (PROJECT / "generated" / backend).glob("*.py") if p.stem != "__init__")
        raise ModuleNotFoundError(
            f"no generated {backend} module for {name!r}; known: {', '.join(known) or 'none'}. "
            f"Write specs/{name}.yaml and run `make generate`."
        ) from None

