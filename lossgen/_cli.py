"""The ``lossgen`` command line: generate, reference, new, check, list, explain, report,
fixtures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._generate import PROJECT, find_specs, generate, load_specs
from ._types import SpecError

__all__ = ["main"]


def _err(*args) -> None:
    print(*args, file=sys.stderr)


def _cmd_generate(args) -> int:
    start = time.perf_counter()
    cache = None if args.no_cache else args.cache
    written = generate(args.names, specs_dir=args.specs, out_dir=args.out, cache=cache)
    elapsed = time.perf_counter() - start
    rel = [str(p.relative_to(args.out or PROJECT / "generated")) for p in written]
    if rel:
        print(f"wrote {len(rel)} files in {elapsed:.1f} s: {', '.join(rel)}")
    else:
        print(f"generated/ is up to date ({elapsed:.1f} s)")
    return 0


def _cmd_reference(args) -> int:
    from ._generate import _write_atomic
    from ._reference import reference

    start = time.perf_counter()
    cache = None if args.no_cache else args.cache
    text = reference(args.specs, cache=cache, log=lambda line: None)
    elapsed = time.perf_counter() - start
    if _write_atomic(args.out, text):
        print(f"wrote {args.out} ({elapsed:.1f} s)")
    else:
        print(f"{args.out} is up to date ({elapsed:.1f} s)")
    return 0


def _cmd_check(args) -> int:
    if args.files:
        paths = [_resolve_spec(f, args.specs) for f in args.files]
    else:
        paths = find_specs(args.specs)
    specs = load_specs(paths)
    for spec in specs:
        print(f"{spec.path}: ok ({spec.name})")
    return 0


def _cmd_list(args) -> int:
    specs = load_specs(find_specs(args.specs))
    width = max((len(s.name) for s in specs), default=0)
    for spec in specs:
        print(f"{spec.name:<{width}}  {spec.summary}")
    return 0


def _resolve_spec(name_or_path: str, specs_dir) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return Path(specs_dir or PROJECT / "specs") / f"{name_or_path}.yaml"


def _cmd_explain(args) -> int:
    from ._explain import explain

    (spec,) = load_specs([_resolve_spec(args.spec, args.specs)])
    print(explain(spec))
    return 0


def _cmd_fixtures(args) -> int:
    from ._fixtures import update_fixtures

    specs = load_specs(find_specs(args.specs))
    if args.names:
        specs = [s for s in specs if s.name in args.names]
    written = update_fixtures(specs, args.dir, force=args.force, processes=args.jobs)
    print(f"{len(written)} fixture files written" if written else "fixtures are up to date")
    return 0


def _cmd_report(args) -> int:
    from ._report import build_report, write_report

    specs = load_specs(find_specs(args.specs))
    if args.names:
        known = {s.name for s in specs}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            _err(f"lossgen report: no spec named {', '.join(map(repr, unknown))}")
            return 2
        specs = [s for s in specs if s.name in args.names]
    start = time.perf_counter()
    report = build_report(
        specs, fixtures=args.fixtures, backends=args.backend or ["numpy", "jax", "torch"],
        dtypes=args.dtype or ["float64", "float32", "float16", "bfloat16"],
    )
    paths = write_report(report, specs, out=args.out, fixtures=args.fixtures)
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f} s")
    return 0


_SKELETON = """\
# A loss for lossgen: state the textbook formula; lossgen finds and fixes what breaks in
# floating point. Every field is described in docs/spec-format.md.
name: {name}                      # equal to this file's name
summary: One line that says what the loss is.
references:                       # the paper or the library whose definition this follows
  - "Author, Title, Venue Year"
inputs:                           # in the order of the generated functions' arguments
  pred: {{role: differentiated, domain: "(-oo, oo)", shape: scalar}}
  target: {{role: constant, domain: "(-oo, oo)", shape: scalar}}
params:                           # keyword-only, with defaults (delete if none)
  scale: {{default: 1, domain: "(0, oo)"}}
define:                           # optional named intermediates, in order
  r: (pred - target) / scale
loss: r**2 / 2
"""


def _cmd_new(args) -> int:
    import re

    name = args.name
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        _err(f"lossgen new: {name!r} is not a spec name: use snake_case letters, digits and _")
        return 2
    folder = Path(args.specs or PROJECT / "specs")
    path = folder / f"{name}.yaml"
    if path.exists():
        _err(f"lossgen new: {path} exists already; edit it, or choose another name")
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(_SKELETON.format(name=name))
    print(f"wrote {path}: edit it, then `lossgen check {path}` and `make generate`")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossgen",
        description="Derive stable gradients and Hessians of losses declared in YAML specs, "
        "and emit NumPy, JAX and PyTorch modules.",
    )
    parser.add_argument("--specs", type=Path, default=None, help="spec folder (default: specs/)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="emit generated/<backend>/<name>.py for each spec")
    p.add_argument("names", nargs="*", help="spec names (default: all)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: generated/)")
    p.add_argument(
        "--cache", type=Path, default=PROJECT / ".lossgen-cache",
        help="folder of cached derivations (default: .lossgen-cache/)",
    )
    p.add_argument("--no-cache", action="store_true", help="derive every spec afresh")
    p.set_defaults(run=_cmd_generate)

    p = sub.add_parser("reference", help="write docs/losses.md, every loss with its signatures")
    p.add_argument("--out", type=Path, default=PROJECT / "docs" / "losses.md")
    p.add_argument("--cache", type=Path, default=PROJECT / ".lossgen-cache")
    p.add_argument("--no-cache", action="store_true", help="derive every spec afresh")
    p.set_defaults(run=_cmd_reference)

    p = sub.add_parser("new", help="write a commented spec skeleton specs/NAME.yaml")
    p.add_argument("name")
    p.set_defaults(run=_cmd_new)

    p = sub.add_parser("check", help="validate spec files without generating")
    p.add_argument(
        "files", nargs="*", help="spec files or names (default: every spec in the spec folder)"
    )
    p.set_defaults(run=_cmd_check)

    p = sub.add_parser("list", help="list the specs")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("explain", help="print the findings and rewrites for one spec")
    p.add_argument("spec", help="a spec name or a path to a spec file")
    p.set_defaults(run=_cmd_explain)

    p = sub.add_parser("report", help="accuracy report: reports/accuracy.{md,html,json}")
    p.add_argument("names", nargs="*", help="spec names (default: all)")
    p.add_argument("--backend", action="append", choices=["numpy", "jax", "torch"])
    p.add_argument("--dtype", action="append", choices=["float64", "float32", "float16", "bfloat16"])
    p.add_argument("--out", type=Path, default=PROJECT / "reports")
    p.add_argument("--fixtures", type=Path, default=PROJECT / "tests" / "fixtures")
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser("fixtures", help="recompute stale oracle fixtures under tests/fixtures")
    p.add_argument("names", nargs="*", help="spec names (default: all)")
    p.add_argument("--dir", type=Path, default=PROJECT / "tests" / "fixtures")
    p.add_argument("--force", action="store_true", help="recompute even when up to date")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.set_defaults(run=_cmd_fixtures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except SpecError as error:
        for diagnostic in error.diagnostics:
            _err(diagnostic)
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
