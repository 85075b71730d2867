"""``on_unstable``: a term the passes cannot stabilize fails generation (``error``) or is
reported on standard error while the modules are generated (``warn``, the default)."""

from __future__ import annotations

import pytest

from lossgen import SpecError
from lossgen._cli import main
from lossgen._generate import generate

# cosh(x) - 1 cancels as x -> 0 and no rule covers it (it needs 2*sinh(x/2)**2); the powers of
# it in the derivatives have poles there below a value of gamma
UNSTABLE = """\
name: unstable_probe
summary: A power of cosh(x) - 1, which cancels at x -> 0 where no rule applies.
references: ["a deliberately unstabilizable spec for the tests"]
inputs:
  x: {role: differentiated, domain: "(0, oo)"}
params:
  gamma: {default: 2, domain: "[0, oo)"}
loss: (cosh(x) - 1)**gamma
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One derivation for the whole module: the policy is applied to cached results too."""
    return tmp_path_factory.mktemp("cache")


def _specs(tmp_path, policy: str | None):
    folder = tmp_path / "specs"
    folder.mkdir()
    text = UNSTABLE if policy is None else UNSTABLE + f"on_unstable: {policy}\n"
    (folder / "unstable_probe.yaml").write_text(text)
    return folder


def test_error_refuses_to_generate_and_names_term_place_and_condition(tmp_path, cache):
    specs, out = _specs(tmp_path, "error"), tmp_path / "generated"
    with pytest.raises(SpecError) as caught:
        generate(specs_dir=specs, out_dir=out, cache=cache, log=lambda line: None)
    messages = [d.message for d in caught.value.diagnostics]
    assert all((d.line, d.col) == (9, 14) for d in caught.value.diagnostics)  # on_unstable: error
    assert any(
        "cancellation `cosh(x) - 1` as x -> 0 for every parameter value" in m for m in messages
    ), messages
    assert all("on_unstable: error" in m for m in messages)
    assert not out.exists(), "a refused spec must not write anything"


def test_warn_is_the_default_and_generates(tmp_path, cache):
    specs, out = _specs(tmp_path, None), tmp_path / "generated"
    warnings: list[str] = []
    generate(specs_dir=specs, out_dir=out, cache=cache, log=lambda line: None, warn=warnings.append)
    assert (out / "numpy" / "unstable_probe.py").exists()
    assert any("warning: no rule stabilizes the cancellation `cosh(x) - 1`" in w for w in warnings)
    assert any("as x -> 0 for every parameter value (in value, grad, hess)" in w for w in warnings)
    # served from the cache, the warnings come again
    again: list[str] = []
    lines: list[str] = []
    generate(specs_dir=specs, out_dir=out, cache=cache, log=lines.append, warn=again.append)
    assert lines == ["  unstable_probe: cached"] and again == warnings


def test_cli_exit_status_and_streams(tmp_path, cache, capsys):
    specs = _specs(tmp_path, "warn")

    def cli(out: str) -> int:
        return main(["--specs", str(specs), "generate", "--out", str(tmp_path / out),
                     "--cache", str(cache)])

    assert cli("out") == 0
    captured = capsys.readouterr()
    assert "warning: no rule stabilizes" in captured.err and "warning" not in captured.out

    (specs / "unstable_probe.yaml").write_text(UNSTABLE + "on_unstable: error\n")
    assert cli("out2") == 2
    err = capsys.readouterr().err
    assert f"{specs / 'unstable_probe.yaml'}:9:14: no rule stabilizes" in err
    assert "Traceback" not in err


def test_a_branch_not_chosen_at_an_end_is_not_reported():
    """The stable gradient of BCE on soft labels selects between two expm1 forms at
    x = log(y/(1 - y)); as x -> oo only the first is chosen, so the second's exp(x)*0 there
    (discarded by the select) is not a term left unstabilized, and generation warns of
    nothing. A conditional whose choice is not decided at an end keeps both branches."""
    import sympy

    import lossgen
    from lossgen._analyse import _chosen_at
    from lossgen._asymptotics import boundaries, scenarios
    from lossgen._verify import unstable

    from _support import spec_paths

    spec = next(s for s in lossgen.load_specs(spec_paths()) if s.name == "bce_with_logits")
    d = lossgen.run(spec)
    assert d.grad[0].has(sympy.Piecewise)
    assert unstable(d) == ()
    x, y = (sympy.Symbol(n, real=True) for n in ("x", "y"))
    ends = {b.label: b for b in boundaries(spec)}
    generic = scenarios(spec)[0]
    assert _chosen_at(x >= sympy.log(y), ends["x -> oo"], generic) is True
    assert _chosen_at(x >= sympy.log(y), ends["x -> -oo"], generic) is False
    assert _chosen_at(-x > y, ends["x -> -oo"], generic) is True
    assert _chosen_at(x**2 >= y, ends["x -> oo"], generic) is None
