"""generated/ and the oracle fixtures must match specs/: a stale file fails with the fix to run."""

from __future__ import annotations

import difflib

import pytest

import lossgen
from lossgen._fixtures import fixture_key, load_fixture
from lossgen._generate import expected_files
from lossgen._grid import grid, grid_names

from _support import FIXTURES, ROOT, spec_paths

SPECS = lossgen.load_specs(spec_paths())


@pytest.fixture(scope="module")
def expected():
    return expected_files([(spec.name, lossgen.run(spec).sources) for spec in SPECS])


def test_generated_matches_specs(expected):
    generated = ROOT / "generated"
    problems = []
    for rel, text in expected.items():
        path = generated / rel
        if not path.exists():
            problems.append(f"missing: generated/{rel}")
            continue
        current = path.read_text()
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), f"generated/{rel}", "expected", lineterm="", n=1
            )
            problems.append("\n".join(list(diff)[:40]))
    extra = {
        p.relative_to(generated)
        for p in generated.rglob("*.py")
        if "__pycache__" not in p.parts
    } - set(expected)
    problems += [f"no spec for: generated/{rel}" for rel in sorted(extra)]
    assert not problems, "generated/ is stale; run `make generate`:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "spec, grid_name",
    [(spec, g) for spec in SPECS for g in grid_names(spec)],
    ids=[f"{spec.name}-{g}" for spec in SPECS for g in grid_names(spec)],
)
def test_fixture_matches_spec(spec, grid_name):
    data = load_fixture(FIXTURES, spec.name, grid_name)
    assert data is not None, f"no fixture for {spec.name}.{grid_name}; run `make fixtures`"
    assert data["key"] == fixture_key(spec, grid(spec, grid_name)), (
        f"tests/fixtures/{spec.name}.{grid_name}.json is stale against specs/{spec.name}.yaml; "
        "run `make fixtures`"
    )
