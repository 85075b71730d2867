"""How long `make generate` takes for the whole catalog: from cold, and with nothing changed.

Runs ``python -m lossgen generate`` and ``python -m lossgen reference`` (the two steps of
``make generate``) as a user would, interpreter start-up included, with the output and the
generation cache in a temporary folder (the checkout's generated/ and .lossgen-cache/ are not
touched):

1. cold: an empty cache, every spec derived (over a process pool on all cores);
2. cached: the same commands again with nothing changed, ``--repeat`` times (median).

Prints a table with the targets of issue #8 (cold <= 60 s on 2 cores, cached <= 3 s) and exits
with status 1 when one is missed.

    .venv/bin/python benchmarks/bench_generate.py [--repeat N] [--specs DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"cold": 60.0, "cached": 3.0}


def _run(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed


def _make_generate(specs: Path, out: Path, cache: Path) -> tuple[float, float]:
    """Seconds of the two steps of `make generate`, into ``out`` with ``cache``."""
    lossgen = [sys.executable, "-m", "lossgen", "--specs", str(specs)]
    generate = _run([*lossgen, "generate", "--out", str(out / "generated"), "--cache", str(cache)])
    reference = _run([*lossgen, "reference", "--out", str(out / "losses.md"), "--cache", str(cache)])
    return generate, reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="cached runs (median)")
    parser.add_argument("--specs", type=Path, default=ROOT / "specs")
    args = parser.parse_args(argv)
    count = len(list(args.specs.glob("*.yaml")))
    rows = []
    with tempfile.TemporaryDirectory(prefix="lossgen-bench-") as tmp:
        out, cache = Path(tmp) / "out", Path(tmp) / "cache"
        cold = _make_generate(args.specs, out, cache)
        rows.append(("cold (empty cache)", *cold))
        cached = [_make_generate(args.specs, out, cache) for _ in range(args.repeat)]
        rows.append(
            (
                f"cached, nothing changed (median of {args.repeat})",
                statistics.median(g for g, _ in cached),
                statistics.median(r for _, r in cached),
            )
        )
    print(f"lossgen generation, {count} specs, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print()
    print("| run | `lossgen generate` | `lossgen reference` | `make generate` (both) | target |")
    print("|---|---|---|---|---|")
    missed = []
    for (label, generate, reference), target in zip(rows, TARGETS.values()):
        total = generate + reference
        ok = "ok" if total <= target else "MISSED"
        if total > target:
            missed.append(label)
        print(f"| {label} | {generate:.1f} s | {reference:.1f} s | {total:.1f} s | <= {target:.0f} s {ok} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
