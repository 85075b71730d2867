"""The command line: exit statuses, diagnostics as path:LINE:COL, no tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys

from _support import ROOT

BROKEN = ROOT / "tests" / "broken_specs"


def _lossgen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lossgen", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_check_broken_specs_reports_every_error_and_exits_2():
    files = sorted(str(p) for p in BROKEN.glob("*.yaml"))
    result = _lossgen("check", *files)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(re.match(r"^.+\.yaml:\d+:\d+: \S", line) for line in lines), lines[:5]
    # each file of the corpus contributes at least one line
    reported = {line.split(":", 1)[0] for line in lines}
    assert reported == set(files)


def test_check_deliberately_broken_spec(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text(
        "name: broken\n"
        "summary: A spec with a misspelt role and an unknown symbol.\n"
        "references: [none]\n"
        "inputs:\n"
        "  x: {role: diferentiated, domain: \"(-oo, oo)\"}\n"
        "loss: x**2 + alpah\n"
    )
    result = _lossgen("check", str(spec))
    assert result.returncode == 2, result.stderr
    assert f"{spec}:5:" in result.stderr and "did you mean 'differentiated'" in result.stderr
    assert f"{spec}:6:" in result.stderr and "alpah" in result.stderr


def test_check_list_and_generate_to_a_folder(tmp_path):
    assert _lossgen("check", "specs/mse.yaml").returncode == 0
    by_name = _lossgen("check", "mse", "huber")
    assert by_name.returncode == 0 and by_name.stdout.count(": ok (") == 2
    every = _lossgen("check")  # no argument: every spec in the folder
    assert every.returncode == 0
    assert every.stdout.count(": ok (") == len(list((ROOT / "specs").glob("*.yaml")))
    missing = _lossgen("check", "no_such_loss")
    assert missing.returncode == 2 and "no_such_loss.yaml" in missing.stderr
    listed = _lossgen("list")
    assert listed.returncode == 0 and "sigmoid_focal_loss" in listed.stdout
    result = _lossgen("generate", "mse", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "numpy" / "mse.py").read_text() == (ROOT / "generated" / "numpy" / "mse.py").read_text()
    unknown = _lossgen("generate", "no_such_loss", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "no spec named 'no_such_loss'" in unknown.stderr


def test_explain_names_findings_and_rules():
    result = _lossgen("explain", "sigmoid_focal_loss")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pole: `(1 - p_t)**(gamma - 2)` as x -> oo (y = 1) when 0 <= gamma < 2" in out
    assert "pole: `(1 - p_t)**(gamma - 1)` as x -> oo (y = 1) when 0 <= gamma < 1" in out
    for rule in ("complement_partition", "log_sigmoid", "power_via_log", "log_of_sum"):
        assert f"- {rule}:" in out


def test_new_writes_a_valid_skeleton_and_refuses_to_overwrite(tmp_path):
    result = _lossgen("--specs", str(tmp_path), "new", "my_loss")
    assert result.returncode == 0, result.stderr
    assert _lossgen("check", str(tmp_path / "my_loss.yaml")).returncode == 0
    again = _lossgen("--specs", str(tmp_path), "new", "my_loss")
    assert again.returncode == 2 and "exists already" in again.stderr
    assert _lossgen("--specs", str(tmp_path), "new", "../escape").returncode == 2


def test_spec_format_doc_lists_every_function_and_field():
    from lossgen._functions import SPEC_FUNCTIONS

    doc = (ROOT / "docs" / "spec-format.md").read_text()
    for name in SPEC_FUNCTIONS:
        assert f"`{name}(" in doc, name
    for field in ("name", "summary", "references", "inputs", "params", "define", "loss",
                  "role", "domain", "shape", "default", "choices"):
        assert f"`{field}`" in doc, field
