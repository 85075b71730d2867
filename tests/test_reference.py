"""docs/losses.md, the reference page of every generated loss, must match specs/."""

from __future__ import annotations

import difflib

import pytest
from _support import ROOT, spec_paths

from lossgen._generate import PROJECT, build_cached, load_specs
from lossgen._reference import REFERENCE, reference, reference_markdown


@pytest.fixture(scope="module")
def page():
    # the list of specs is read now: specs added by anyone are on the page
    return reference(ROOT / "specs", cache=PROJECT / ".lossgen-cache", log=lambda line: None)


def test_reference_page_is_fresh(page):
    assert REFERENCE == ROOT / "docs" / "losses.md"
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""
    if committed != page:
        diff = difflib.unified_diff(
            committed.splitlines(), page.splitlines(), "docs/losses.md", "expected", lineterm="", n=1
        )
        pytest.fail("docs/losses.md is stale; run `make generate`:\n" + "\n".join(list(diff)[:60]))


def test_every_spec_has_a_section_with_its_signatures(page):
    for path in spec_paths():
        assert f"\n## {path.stem}\n" in page, f"{path.stem} is missing from docs/losses.md"
    section = page.split("\n## sigmoid_focal_loss\n")[1].split("\n## ")[0]
    assert "loss = alpha_t * ce * (1 - p_t)**gamma" in section
    assert "| `gamma` | `2.0` | `[0, oo)` |" in section
    assert "| `y` | constant | `[0, 1]` | scalar (elementwise) |" in section
    assert "`value(x, y, *, alpha=0.25, gamma=2.0" in section
    assert "`hvp(x, y, v, *, alpha=0.25, gamma=2.0" in section
    assert "T.-Y. Lin" in section and "findings on the textbook expression" in section


def test_page_is_a_function_of_the_specs(tmp_path):
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / "mse.yaml").write_text((ROOT / "specs" / "mse.yaml").read_text())
    cache = tmp_path / "cache"
    first = reference(specs_dir, cache=cache, log=lambda line: None)
    assert "\n## mse\n" in first and "\n## sigmoid_focal_loss\n" not in first
    specs = load_specs(sorted(specs_dir.glob("*.yaml")))
    again = reference_markdown(specs, build_cached(specs, cache=cache, log=lambda line: None))
    assert again == first
