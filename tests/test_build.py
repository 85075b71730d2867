"""``lossgen.build``: a loss built in memory from a spec string or a SymPy expression."""

from __future__ import annotations

import importlib
import inspect
import warnings

import numpy as np
import pytest
import sympy
from _support import ROOT

import lossgen
from lossgen import SpecError
from lossgen._build import spec_text

EPS = np.finfo(np.float64).eps

SQUARED = """\
name: half_square
summary: Half the squared error.
references: ["textbook"]
inputs:
  pred: {role: differentiated, domain: "(-oo, oo)"}
  target: {role: constant, domain: "(-oo, oo)"}
params:
  scale: {default: 1, domain: "(0, oo)"}
loss: ((pred - target) / scale)**2 / 2
"""


def test_from_a_spec_string():
    mod = lossgen.build(SQUARED)
    pred, target = np.array([0.5, -2.0, 3.0]), np.array([1.0, 1.0, 3.0])
    np.testing.assert_array_equal(mod.value(pred, target), (pred - target) ** 2 / 2)
    np.testing.assert_array_equal(mod.grad(pred, target, scale=2.0), (pred - target) / 4)
    np.testing.assert_array_equal(mod.hess(pred, target), np.ones(3))
    np.testing.assert_array_equal(mod.hvp(pred, target, np.full(3, 2.0)), np.full(3, 2.0))
    parameters = inspect.signature(mod.value).parameters
    assert list(parameters)[:3] == ["pred", "target", "scale"]
    assert parameters["scale"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["scale"].default == 1.0
    # an importable module under a unique name, with its source available, and no file
    assert importlib.import_module(mod.__name__) is mod
    assert "def value(pred, target, *, scale=1.0" in inspect.getsource(mod)
    assert not (ROOT / "generated" / "numpy" / "half_square.py").exists()


def test_spec_string_errors_have_line_numbers():
    broken = SQUARED.replace("role: constant", "role: constnat").replace("scale)**2", "scal)**2")
    with pytest.raises(SpecError) as caught:
        lossgen.build(broken)
    shown = [str(d) for d in caught.value.diagnostics]
    assert shown[0].startswith("<lossgen.build>:6:")
    assert "did you mean 'constant'?" in shown[0]
    assert shown[1].startswith("<lossgen.build>:9:") and "'scal'" in shown[1]


def test_from_a_sympy_expression_matches_the_generated_bce():
    # an undefined function named like one of the spec language's (sigmoid, softplus) is that
    # function: lossgen's rules know sigmoid, not an arbitrary 1 / (1 + exp(-x))
    sigmoid = sympy.Function("sigmoid")
    x, y = sympy.symbols("x y")
    p = sigmoid(x)
    with warnings.catch_warnings():  # the verify pass may flag what the catalog's bce has too
        warnings.simplefilter("ignore", lossgen.UnstableWarning)
        built = lossgen.build(
            -(y * sympy.log(p) + (1 - y) * sympy.log(1 - p)),
            inputs={x: "differentiated", y: ("constant", "[0, 1]")},
            name="my_bce",
        )
    committed = lossgen.load("bce_with_logits", "numpy")
    xs = np.array([-800.0, -30.0, -3.0, -0.5, 0.0, 0.75, 4.0, 40.0, 800.0])
    ys = np.array([0.0, 1.0, 0.25, 1.0, 0.0, 0.875, 1.0, 0.0, 1.0])
    for f in ("value", "grad", "hess"):
        got = getattr(built, f)(xs, ys)
        want = getattr(committed, f)(xs, ys)
        assert np.all(np.isfinite(got)), (f, got)
        # the same loss, both stable: within a few ulps of each other
        np.testing.assert_allclose(got, want, rtol=64 * EPS, atol=0, err_msg=f)


def test_expression_string_with_declarations_and_other_backends():
    mod = lossgen.build(
        "softplus(-y * x)",
        inputs={"x": "differentiated", "y": ("constant", "{-1, 1}")},
        name="logistic",
        backend="torch",
    )
    import torch

    x = torch.tensor([-800.0, 0.0, 2.0], dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    value = mod.value(x, y)
    assert value.dtype == torch.float64 and torch.isfinite(value).all()
    assert value[0].item() == 800.0


def test_printed_spec_uses_the_spec_vocabulary():
    x, y = sympy.symbols("x y")
    text = spec_text(
        sympy.Abs(x - y) + sympy.Max(x, y) + sympy.E * x,
        inputs={x: "differentiated", y: "constant"},
        params={},
        define={},
        name="probe",
        summary=None,
        references=["r"],
        on_unstable="warn",
    )
    loss = next(line for line in text.splitlines() if line.startswith("loss:"))
    assert "abs(x - y)" in loss and "max(x, y)" in loss and "exp(1)*x" in loss
    assert lossgen.parse_spec_text(text).name == "probe"


def test_bad_declarations_and_expressions():
    x = sympy.Symbol("x")
    with pytest.raises(TypeError, match="needs inputs="):
        lossgen.build(x**2)
    with pytest.raises(TypeError, match="input 'x' is declared as 3"):
        lossgen.build(x**2, inputs={x: 3})
    with pytest.raises(TypeError, match="given with a YAML spec string"):
        lossgen.build(SQUARED, params={"a": 1})
    with pytest.raises(ValueError, match="unknown backend 'tf'"):
        lossgen.build(SQUARED, backend="tf")
    # a function outside the vocabulary, an undeclared symbol: SpecError, with the made spec
    with pytest.raises(SpecError) as caught:
        lossgen.build(sympy.atan(x) + sympy.Symbol("z"), inputs={x: "differentiated"})
    message = str(caught.value)
    assert "atan" in message and "'z'" in message
    assert any("lossgen.build made from its arguments" in n for n in caught.value.__notes__)


def test_on_unstable_policy():
    x = sympy.Symbol("x")
    unstable = (sympy.cosh(x) - 1) / x  # no rule rewrites cosh(x) - 1 (it needs 2*sinh(x/2)**2)
    inputs = {x: ("differentiated", "(0, oo)")}
    with pytest.raises(SpecError, match=r"cancellation `cosh\(x\) - 1` as x -> 0"):
        lossgen.build(unstable, inputs=inputs, on_unstable="error")
    with pytest.warns(lossgen.UnstableWarning, match="no rule stabilizes"):
        mod = lossgen.build(unstable, inputs=inputs)
    assert mod.value(np.array([1.0])).shape == (1,)
