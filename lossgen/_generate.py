"""Finding specs, running the pipeline on them, and writing ``generated/`` atomically."""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
import sys
import time
import types
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sympy

from ._backends import BACKENDS
from ._pipeline import run
from ._spec import load_spec
from ._types import Diagnostic, Spec, SpecError
from ._verify import stability_problems

__all__ = [
    "PROJECT",
    "Built",
    "build_cached",
    "find_specs",
    "generate",
    "load",
    "load_specs",
    "stability_policy",
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


def _write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file; return whether it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def expected_files(built: list[tuple[str, Mapping[str, str]]]) -> dict[Path, str]:
    """Relative path -> content of every file under generated/, from (spec name, sources)."""
    files: dict[Path, str] = {Path("__init__.py"): _ROOT_INIT}
    for backend in BACKENDS:
        files[Path(backend) / "__init__.py"] = _PACKAGE_INIT.format(backend=backend)
    for name, sources in built:
        for backend, source in sources.items():
            files[Path(backend) / f"{name}.py"] = source
    return files


def _generator_digest(package: Path | None = None) -> str:
    """sha256 of lossgen's own source and templates, and the SymPy version: a change to the
    generator must not be served from the cache, version bump or not."""
    digest = hashlib.sha256(sympy.__version__.encode())
    package = package or Path(__file__).resolve().parent
    for path in sorted([*package.glob("*.py"), *package.glob("templates/*.j2")]):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Built:
    """What generation keeps of one spec's derivation (and caches): its module sources and
    what the passes found, changed and left unstabilized."""

    name: str
    sources: Mapping[str, str]
    findings: int
    rewrites: int
    #: one message per term the passes could not stabilize (see ``_verify.stability_problems``)
    unstable: tuple[str, ...] = ()
    #: seconds the derivation took; None when served from the cache
    seconds: float | None = None

    @property
    def summary(self) -> str:
        return f"{self.findings} findings, {self.rewrites} rewrites"

    def to_json(self) -> str:
        return json.dumps(
            {
                "sources": dict(self.sources),
                "findings": self.findings,
                "rewrites": self.rewrites,
                "unstable": list(self.unstable),
            }
        )

    @classmethod
    def from_json(cls, name: str, text: str) -> Built:
        data = json.loads(text)
        return cls(name, data["sources"], data["findings"], data["rewrites"], tuple(data["unstable"]))


def _build(spec: Spec) -> Built:
    start = time.perf_counter()
    d = run(spec)
    return Built(
        spec.name,
        dict(d.sources),
        len(d.findings),
        len(d.rewrites),
        tuple(stability_problems(d)),
        time.perf_counter() - start,
    )


def _cache_key(spec: Spec, generator: str) -> str:
    # the spec's folder/file name is part of the output (its header)
    text = generator + "/".join(Path(spec.path).parts[-2:]) + spec.source_text
    return hashlib.sha256(text.encode()).hexdigest()


def build_cached(
    specs: list[Spec], *, cache: Path | None, log=print, jobs: int | None = None
) -> list[Built]:
    """One :class:`Built` per spec, in order: from the cache when the spec and the generator
    are unchanged, else derived (over a process pool when several specs need it) and cached."""
    generator = _generator_digest()
    keys = {s.name: _cache_key(s, generator) for s in specs}
    built: dict[str, Built] = {}
    missing = []
    for spec in specs:
        try:
            if cache is None:
                raise FileNotFoundError
            entry = cache / f"{spec.name}.{keys[spec.name][:24]}.json"
            built[spec.name] = Built.from_json(spec.name, entry.read_text())
            log(f"  {spec.name}: cached")
        except (OSError, ValueError, KeyError, TypeError):
            missing.append(spec)  # no cache, no entry, or an entry in an older format
    workers = min(len(missing), jobs or os.cpu_count() or 1)
    if workers > 1:
        # spawned, not forked: a fork of a process that imported JAX (a test run) can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_build, missing))
    else:
        results = [_build(spec) for spec in missing]
    for spec, result in zip(missing, results):
        built[spec.name] = result
        log(f"  {spec.name}: {result.summary} ({result.seconds:.1f} s)")
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            for old in cache.glob(f"{spec.name}.*.json"):
                old.unlink(missing_ok=True)
            _write_atomic(cache / f"{spec.name}.{keys[spec.name][:24]}.json", result.to_json())
    return [built[spec.name] for spec in specs]


def stability_policy(spec: Spec, problems: Iterable[str], *, warn) -> list[Diagnostic]:
    """Apply ``spec.on_unstable`` to the terms the passes could not stabilize: ``warn`` calls
    ``warn`` with one line per term; ``error`` returns one diagnostic per term (at the
    ``on_unstable`` field), which the caller raises as a :class:`SpecError`."""
    problems = list(problems)
    if spec.on_unstable == "error":
        line, col = spec.on_unstable_at if spec.on_unstable_at != (0, 0) else (1, 1)
        return [
            Diagnostic(
                spec.path,
                line,
                col,
                f"{problem}; generation refused by on_unstable: error (state the formula "
                "differently, or set on_unstable: warn to generate it anyway)",
            )
            for problem in problems
        ]
    for problem in problems:
        warn(f"{spec.path}: warning: {problem}; the generated code may lose accuracy there "
             "(on_unstable: error makes this fail)")
    return []


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def generate(
    names: list[str] | None = None,
    *,
    specs_dir: Path | None = None,
    out_dir: Path | None = None,
    cache: Path | None = PROJECT / ".lossgen-cache",
    log=print,
    warn=_stderr,
) -> list[Path]:
    """Generate the modules for the named specs (all when ``names`` is empty); ``cache`` is
    the folder of cached outputs (None: derive everything afresh). Terms the passes could not
    stabilize go to ``warn`` (standard error), or fail generation for a spec with
    ``on_unstable: error``."""
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
    built = build_cached(specs, cache=cache, log=log)
    refused = [
        diagnostic
        for spec, result in zip(specs, built)
        for diagnostic in stability_policy(spec, result.unstable, warn=warn)
    ]
    if refused:  # before any file is written: generated/ stays as it was
        raise SpecError(refused)
    for rel, text in expected_files([(b.name, b.sources) for b in built]).items():
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

