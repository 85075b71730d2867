"""Spec loading: a valid spec loads exactly; every broken spec is refused with the right messages.

Each file of ``tests/broken_specs/`` states what it must produce, in comment lines at its top:

* ``# expect: LINE:COL: substring`` (one or more): a diagnostic at exactly that 1-based
  position whose message contains the substring;
* ``# marker: PATH``: a file that executing the spec's payload would create; it must not exist;
* ``# load: file``: load through :func:`load_spec` (checks the name against the file name);
  otherwise the text goes through :func:`parse_spec_text`;
* ``# other-names: a, b``: names of specs loaded before this one.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest
import sympy

from lossgen._domain import parse_domain
from lossgen._expr import ExprError, free_names, parse_expression
from lossgen._spec import load_spec, parse_spec_text
from lossgen._types import Diagnostic, SpecError

BROKEN = Path(__file__).parent / "broken_specs"
BROKEN_FILES = sorted(BROKEN.glob("*.yaml"))

FOCAL = textwrap.dedent(
    """\
    name: sigmoid_focal_loss          # snake_case, must equal the file name stem
    summary: Focal loss on logits for binary and soft labels.   # one line
    references:                        # list of strings, at least one
      - "T.-Y. Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"
    inputs:                            # ordered mapping; at least one input
      x: {role: differentiated, domain: "(-oo, oo)", shape: scalar}
      y: {role: constant, domain: "[0, 1]", shape: scalar}
    params:                            # optional mapping
      alpha: {default: 0.25, domain: "[0, 1]"}
      gamma: {default: 2, domain: "[0, oo)"}
    define:                            # optional ordered mapping of named intermediates
      p: sigmoid(x)
      p_t: y*p + (1 - y)*(1 - p)
      alpha_t: alpha*y + (1 - alpha)*(1 - y)
    loss: -alpha_t * (y*log(p) + (1 - y)*log(1 - p)) * (1 - p_t)**gamma
    """
)


# -- the valid spec ----------------------------------------------------------------------------


def test_valid_spec_loads(tmp_path):
    path = tmp_path / "sigmoid_focal_loss.yaml"
    path.write_text(FOCAL, encoding="utf-8")
    spec = load_spec(path)

    assert spec.name == "sigmoid_focal_loss"
    assert spec.summary == "Focal loss on logits for binary and soft labels."
    assert spec.references == (
        "T.-Y. Lin et al., Focal Loss for Dense Object Detection, ICCV 2017",
    )
    assert [i.name for i in spec.inputs] == ["x", "y"]
    assert [i.role for i in spec.inputs] == ["differentiated", "constant"]
    assert [i.shape for i in spec.inputs] == ["scalar", "scalar"]
    assert [(i.line, i.col) for i in spec.inputs] == [(6, 3), (7, 3)]
    assert [p.name for p in spec.params] == ["alpha", "gamma"]
    assert [p.default for p in spec.params] == [0.25, 2.0]
    assert all(type(p.default) is float for p in spec.params)
    assert [str(symbol) for symbol, _ in spec.define] == ["p", "p_t", "alpha_t"]
    assert spec.differentiated == (spec.inputs[0],)

    assert spec.inputs[0].symbol == sympy.Symbol("x", real=True)
    assert all(
        s.is_real for s in [*(i.symbol for i in spec.inputs), *(p.symbol for p in spec.params)]
    )

    domain = spec.inputs[0].domain
    assert (domain.kind, domain.lo, domain.hi, domain.lo_closed, domain.hi_closed) == (
        "interval",
        -sympy.oo,
        sympy.oo,
        False,
        False,
    )
    domain = spec.inputs[1].domain
    assert (domain.lo, domain.hi, domain.lo_closed, domain.hi_closed) == (0, 1, True, True)
    gamma = spec.params[1].domain
    assert (gamma.lo, gamma.hi, gamma.lo_closed, gamma.hi_closed) == (0, sympy.oo, True, False)

    expression = spec.expression()
    assert free_names(expression) == {"x", "y", "alpha", "gamma"}
    assert not {str(s) for s, _ in spec.define} & free_names(expression)
    assert free_names(spec.loss) == {"y", "p", "p_t", "alpha_t", "gamma"}

    assert spec.source_text == FOCAL
    assert spec.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.path == str(path)


def test_valid_expression_is_the_textbook_formula():
    spec = parse_spec_text(FOCAL)
    x, y, alpha, gamma = (sympy.Symbol(n, real=True) for n in ("x", "y", "alpha", "gamma"))
    p = 1 / (1 + sympy.exp(-x))
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    textbook = -alpha_t * (y * sympy.log(p) + (1 - y) * sympy.log(1 - p)) * (1 - p_t) ** gamma
    from lossgen._primitives import to_textbook

    point = {
        x: sympy.Rational(3, 7),
        y: sympy.Rational(1, 3),
        alpha: sympy.Rational(1, 4),
        gamma: 2,
    }
    difference = (to_textbook(spec.expression()) - textbook).subs(point)
    assert abs(sympy.N(difference, 30)) < sympy.Float("1e-25")


def test_categorical_param_default_is_a_string():
    text = FOCAL.replace("define:", "  approximate: {choices: [erf, tanh], default: tanh}\ndefine:")
    with pytest.raises(SpecError) as caught:
        parse_spec_text(text)
    (diagnostic,) = caught.value.diagnostics
    assert "parameter 'approximate' is not used" in diagnostic.message
    assert (diagnostic.line, diagnostic.col) == (11, 3)


def test_diagnostic_str_and_spec_error():
    diagnostic = Diagnostic("specs/a.yaml", 3, 7, "something is wrong")
    assert str(diagnostic) == "specs/a.yaml:3:7: something is wrong"
    with pytest.raises(SpecError) as caught:
        parse_spec_text("name: 1\n", path="specs/x.yaml")
    message = str(caught.value)
    assert all(line.startswith("specs/x.yaml:") for line in message.splitlines())
    assert len(message.splitlines()) == len(caught.value.diagnostics) >= 5


def test_name_must_match_file_stem_only_when_loading_a_file(tmp_path):
    path = tmp_path / "focal.yaml"
    path.write_text(FOCAL, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.path, diagnostic.line, diagnostic.col) == (str(path), 1, 7)
    assert "does not match the file name 'focal.yaml'" in diagnostic.message
    assert parse_spec_text(FOCAL).name == "sigmoid_focal_loss"


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path / "absent.yaml")
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.col) == (1, 10)
    assert "not UTF-8" in diagnostic.message


# -- the broken specs --------------------------------------------------------------------------


def _directives(text: str) -> dict:
    found: dict = {"expect": [], "marker": None, "load": None, "other-names": []}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if match := re.match(r"# expect: (\d+):(\d+): (.+)$", line):
            found["expect"].append((int(match[1]), int(match[2]), match[3].strip()))
        elif match := re.match(r"# (marker|load|other-names): (.+)$", line):
            value = match[2].strip()
            found[match[1]] = (
                [n.strip() for n in value.split(",")] if match[1] == "other-names" else value
            )
    return found


def test_broken_corpus_is_large_enough():
    assert len(BROKEN_FILES) >= 20
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.yaml", f.name) for f in BROKEN_FILES)
    assert all(_directives(f.read_text(encoding="utf-8"))["expect"] for f in BROKEN_FILES)


@pytest.mark.parametrize("path", BROKEN_FILES, ids=[f.stem for f in BROKEN_FILES])
def test_broken_spec_is_refused(path):
    text = path.read_text(encoding="utf-8")
    directives = _directives(text)
    marker = Path(directives["marker"]) if directives["marker"] else None
    if marker is not None:
        marker.unlink(missing_ok=True)

    with pytest.raises(SpecError) as caught:
        if directives["load"] == "file":
            load_spec(path, other_names=directives["other-names"])
        else:
            parse_spec_text(text, str(path), other_names=directives["other-names"])

    diagnostics = caught.value.diagnostics
    report = "\n".join(str(d) for d in diagnostics)
    for line, col, substring in directives["expect"]:
        assert any(
            d.line == line and d.col == col and substring in d.message for d in diagnostics
        ), f"expected {line}:{col}: {substring!r} among:\n{report}"
    assert all(d.path == str(path) for d in diagnostics)
    assert all(isinstance(d.line, int) and d.line >= 1 and d.col >= 1 for d in diagnostics)
    if marker is not None:
        assert not marker.exists(), f"{path.name} executed its payload"


def test_many_errors_are_all_reported_at_once():
    path = BROKEN / "25_many_errors.yaml"
    with pytest.raises(SpecError) as caught:
        parse_spec_text(path.read_text(encoding="utf-8"), str(path))
    expected = _directives(path.read_text(encoding="utf-8"))["expect"]
    assert len(expected) >= 6
    assert len(caught.value.diagnostics) >= len(expected)
    positions = [(d.line, d.col) for d in caught.value.diagnostics]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "just a string",
        "[1, 2",
        "name: a\nname: b\n",
        "\x00",
        "- - - -",
        "name: !!binary aGVsbG8=\n",
        "a: &a [*a]\n",
        "inputs: {x: 1}\nparams: 3\ndefine: [1]\nloss: [x]\n",
        "inputs: {1: {role: 2, domain: 3, shape: 4}}\nloss: {}\n",
        "inputs: {x: {role: differentiated, domain: '(-oo, oo)'}}\n"
        "params: {a: {default: .nan, domain: '[0, 1]'}}\nloss: x*a\n",
        "inputs: {x: {role: differentiated, domain: '(-oo, oo)'}}\nloss: "
        + "(" * 500
        + "x"
        + ")" * 500,
        "inputs: {x: {role: differentiated, domain: '(-oo, oo)'}}\nloss: " + "-" * 5000 + "x",
    ],
)
def test_garbage_gives_diagnostics_not_crashes(text):
    with pytest.raises(SpecError) as caught:
        parse_spec_text(text)
    assert caught.value.diagnostics
    assert not any("internal error" in d.message for d in caught.value.diagnostics)


def test_anchors_and_aliases_are_not_expanded():
    layers = "".join(
        f"{a}: &{a} [{', '.join([f'*{b}'] * 9)}]\n" for b, a in zip("abcdef", "bcdefg", strict=True)
    )
    text = FOCAL.replace("references:", "a: &a [x, x, x, x, x, x, x, x, x]\n" + layers + "refs:")
    with pytest.raises(SpecError) as caught:
        parse_spec_text(text)
    assert len(caught.value.diagnostics) < 20


def test_forbidden_character_is_located():
    with pytest.raises(SpecError) as caught:
        parse_spec_text("name: t\nloss: x\x00\n")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.col) == (2, 8)


def test_numbers_are_expressions_too():
    text = FOCAL.replace("  p: sigmoid(x)", "  c: 0.1\n  p: sigmoid(c*x/0.1)")
    spec = parse_spec_text(text)
    assert spec.define[0] == (sympy.Symbol("c", real=True), sympy.Rational(1, 10))
    assert spec.expression() == parse_spec_text(FOCAL).expression()


# -- domains -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lo", "hi", "lo_closed", "hi_closed"),
    [
        ("[0, 1]", 0, 1, True, True),
        ("(0, oo)", 0, sympy.oo, False, False),
        ("(-oo, oo)", -sympy.oo, sympy.oo, False, False),
        ("[0, oo)", 0, sympy.oo, True, False),
        ("(0, 1]", 0, 1, False, True),
        ("[-1/2, 0.25)", sympy.Rational(-1, 2), sympy.Rational(1, 4), True, False),
        ("  [ 1e-3 , 2.5 ]  ", sympy.Rational(1, 1000), sympy.Rational(5, 2), True, True),
    ],
)
def test_parse_interval(text, lo, hi, lo_closed, hi_closed):
    domain = parse_domain(text)
    assert (domain.kind, domain.text) == ("interval", text)
    assert (domain.lo, domain.hi, domain.lo_closed, domain.hi_closed) == (
        lo,
        hi,
        lo_closed,
        hi_closed,
    )
    assert isinstance(domain.lo, sympy.Expr) and isinstance(domain.hi, sympy.Expr)


def test_parse_set_and_index():
    domain = parse_domain("{1, -1}")
    assert (domain.kind, domain.elements) == ("set", (sympy.Integer(-1), sympy.Integer(1)))
    assert parse_domain("{0, 1/2, 1}").elements == (0, sympy.Rational(1, 2), 1)
    assert parse_domain("index").kind == "index"
    assert parse_domain("[0, 1]").contains(0.25) and not parse_domain("(0, 1]").contains(0.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("[1, 0]", "lower end 1 is above its upper end 0"),
        ("[0, oo]", "use an open end"),
        ("[-oo, 0)", "use an open end"),
        ("(oo, 1)", "starts at +oo"),
        ("[1, 1]", "equal ends"),
        ("[0, 1", "does not end with"),
        ("[0, 1, 2]", "exactly two endpoints"),
        ("[0, inf)", "write infinity as 'oo'"),
        ("[a, b]", "cannot read endpoint 'a'"),
        ("[0, 1/0]", "divides by zero"),
        ("[0, 1e99999999]", "exponent"),
        ("{}", "set '{}' is empty"),
        ("{0, 0}", "twice"),
        ("{0, oo}", "infinite"),
        ("positive", "cannot read domain"),
        ("integer", '"index"'),
        ("__import__('os')", "cannot read domain"),
        ("0, 1]", "cannot read domain"),
    ],
)
def test_bad_domains(text, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_domain(text)


# -- expressions -------------------------------------------------------------------------------

X, Y = sympy.Symbol("x", real=True), sympy.Symbol("y", real=True)
NAMES = {"x": X, "y": Y, "alpha": sympy.Symbol("alpha", real=True)}


def test_float_literals_are_exact():
    assert parse_expression("0.25*x", NAMES) == X / 4
    assert parse_expression("0.1 + 1e-3", NAMES) == sympy.Rational(101, 1000)
    assert parse_expression("-x**2 + +y / 3", NAMES) == -(X**2) + Y / 3
    assert parse_expression("max(x, y) - sigmoid(x)", NAMES).has(sympy.Max)
    assert parse_expression("(x +\n y)", NAMES) == X + Y


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ("alpah*x", 0, "unknown symbol 'alpah'; did you mean 'alpha'?"),
        ("x + exp", 4, "'exp' is a function"),
        (
            '__import__("os").system("touch /tmp/lossgen-pwned-expr")',
            0,
            "attribute access is not allowed",
        ),
        ("x.__class__", 0, "attribute access is not allowed in an expression"),
        ("(lambda: 1)()", 1, "lambda functions are not allowed"),
        ("[x][0]", 0, "subscripts (indexing) are not allowed"),
        ("f'{x}'", 0, "f-strings are not allowed"),
        ("x < y", 0, "comparisons outside a conditional"),
        ("x and y", 0, "boolean operators"),
        ("x if y else 1", 5, "the test of a conditional must be a comparison"),
        ("x if x == y else 1", 5, "'==' and '!=' compare a categorical parameter"),
        ("'x'", 0, "string literals are not allowed"),
        ("x ^ 2", 0, "write '**' for a power"),
        ("x // 2", 0, "floor division"),
        ("not x", 0, "boolean 'not'"),
        ("x, y", 0, "tuples"),
        ("True*x", 0, "the constant True"),
        ("2j*x", 0, "complex numbers"),
        ("log1p(x)", 0, "log(1 + x)"),
        ("foo(x)", 0, "unknown function 'foo'"),
        ("x(y)", 0, "'x' is a symbol, not a function"),
        ("exp(x)(y)", 0, "calling the result of a call"),
        ("log(x, y)", 0, "log() takes 1 argument"),
        ("max(x)", 0, "max() takes 2 arguments"),
        ("exp(x=1)", 4, "positional arguments only"),
        ("exp(*y)", 4, "starred arguments"),
        ("x +", 3, "syntax error"),
        ("x/0", 2, "division by zero"),
        ("0**-1", 0, "division by zero"),
        ("2**10**10", 3, "exponent"),
        ("(10**1000)**1000", 0, "too large"),
        ("", 0, "empty"),
    ],
)
def test_refused_expressions(text, col, fragment):
    with pytest.raises(ExprError) as caught:
        parse_expression(text, NAMES)
    assert fragment in caught.value.message
    assert caught.value.col == col
    assert not Path("/tmp/lossgen-pwned-expr").exists()


def test_every_problem_in_an_expression_is_reported():
    with pytest.raises(ExprError) as caught:
        parse_expression("bta*x + alpah + y.real", NAMES)
    cols = [col for col, _ in caught.value.problems]
    assert cols == [0, 8, 16]


def test_columns_count_characters_not_bytes():
    with pytest.raises(ExprError) as caught:
        parse_expression("x + y + αβ + zz", {**NAMES, "αβ": sympy.Symbol("ab")})
    assert caught.value.col == len("x + y + αβ + ")


def test_refused_names_explain_themselves():
    with pytest.raises(ExprError, match="not yet"):
        parse_expression("x*mode", NAMES, refused={"mode": "not yet"})
