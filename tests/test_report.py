"""`lossgen report`: the three files, every figure of the tables in the JSON, plots in the HTML."""

from __future__ import annotations

import json

import lossgen
from lossgen._report import build_report, write_report

from _support import FIXTURES, ROOT


def test_report_writes_tables_plots_and_json(tmp_path):
    specs = lossgen.load_specs([ROOT / "specs" / "bce_with_logits.yaml", ROOT / "specs" / "mse.yaml"])
    report = build_report(
        specs, fixtures=FIXTURES, backends=["numpy", "torch"], dtypes=["float64", "float16"], log=lambda *_: None
    )
    paths = write_report(report, specs, out=tmp_path, fixtures=FIXTURES)
    assert [p.name for p in paths] == ["accuracy.json", "accuracy.md", "accuracy.html"]
    data = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(data["specs"]) == {"bce_with_logits", "mse"}
    rows = data["specs"]["bce_with_logits"]["rows"]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"lossgen", "textbook autodiff", "library"}
    for row in rows:
        for key in ("grid", "implementation", "dtype", "output", "points", "mean_bits", "max_bits",
                    "max_beyond", "frac_above_8", "nonfinite", "worst_input"):
            assert key in row, (key, row)
    # numpy has no float16 rows; torch has, on the grid points exact in float16
    assert not [r for r in rows if r["backend"] == "numpy" and r["dtype"] == "float16"]
    half = [r for r in rows if r["backend"] == "torch" and r["dtype"] == "float16" and r["grid"] == "random"]
    full = [r for r in rows if r["backend"] == "torch" and r["dtype"] == "float64" and r["grid"] == "random"]
    assert half and 0 < half[0]["points"] < full[0]["points"]
    # the textbook formula autodiffed in torch breaks where lossgen does not
    naive = [r for r in rows if r["kind"] == "textbook autodiff" and r["dtype"] == "float64"]
    ours = [r for r in rows if r["implementation"] == "lossgen (numpy)" and r["dtype"] == "float64"]
    assert max(r["nonfinite"] for r in naive) > 0 and max(r["nonfinite"] for r in ours) == 0
    # the oracle's guarantee is part of the report
    assert data["specs"]["bce_with_logits"]["oracle"]["extreme"]["classes"]
    page = (tmp_path / "accuracy.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "### bce_with_logits: extreme grid" in markdown and "(bce_with_logits.png)" in markdown
    assert (tmp_path / "bce_with_logits.png").stat().st_size > 1000
