"""Generation is cached by spec content, lossgen's own source and templates, and SymPy's version."""

from __future__ import annotations

import shutil

from lossgen._generate import _generator_digest, generate

from _support import ROOT


def test_cache_serves_unchanged_specs_and_rebuilds_changed_ones(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "mse.yaml").write_text((ROOT / "specs" / "mse.yaml").read_text())
    cache, out = tmp_path / "cache", tmp_path / "generated"
    lines: list[str] = []
    generate(specs_dir=specs, out_dir=out, cache=cache, log=lines.append)
    first = (out / "numpy" / "mse.py").read_text()
    assert lines == [lines[0]] and "cached" not in lines[0]
    lines.clear()
    assert generate(specs_dir=specs, out_dir=out, cache=cache, log=lines.append) == []
    assert lines == ["  mse: cached"]
    # a changed spec is derived again, and only its new output is kept in the cache
    text = (specs / "mse.yaml").read_text().replace("loss: (pred - target)**2", "loss: 3*(pred - target)**2")
    (specs / "mse.yaml").write_text(text)
    lines.clear()
    written = generate(specs_dir=specs, out_dir=out, cache=cache, log=lines.append)
    assert "cached" not in lines[0] and out / "numpy" / "mse.py" in written
    assert (out / "numpy" / "mse.py").read_text() != first
    assert len(list(cache.glob("mse.*.json"))) == 1


def test_generator_digest_covers_source_and_templates(tmp_path):
    package = tmp_path / "lossgen"
    shutil.copytree(ROOT / "lossgen", package, ignore=shutil.ignore_patterns("__pycache__"))
    digest = _generator_digest(package)
    assert digest == _generator_digest(ROOT / "lossgen")
    template = package / "templates" / "numpy.py.j2"
    template.write_text(template.read_text() + "\n")
    assert _generator_digest(package) != digest
    template.write_text(template.read_text()[:-1])
    assert _generator_digest(package) == digest
    rules = package / "_rules.py"
    rules.write_text(rules.read_text() + "# a generator edit without a version bump\n")
    assert _generator_digest(package) != digest
