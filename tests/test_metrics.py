"""Tests for lossgen.metrics: ordinals, correct rounding, bits of error and summaries."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from lossgen.metrics import (
    WIDTHS,
    ErrorSummary,
    as_dtype,
    bits_beyond_conditioning,
    bits_of_error,
    error_report,
    ordinal,
    round_truth,
    summarize,
    width,
)

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    ml_dtypes = None

FLOATS = [np.float16, np.float32, np.float64]
needs_bfloat16 = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes not installed")


def exact_decimal(x: float) -> str:
    """The exact decimal expansion of a float (Decimal(float) is exact)."""
    return str(Decimal(x))


# --------------------------------------------------------------------------------------------
# dtypes and widths
# --------------------------------------------------------------------------------------------


def test_widths_and_as_dtype():
    assert WIDTHS == {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}
    assert as_dtype("float32") == np.dtype(np.float32)
    assert as_dtype(np.float64) == np.dtype(np.float64)
    assert as_dtype(np.dtype(np.float16)) == np.dtype(np.float16)
    assert width(np.float32) == 32 and width("float64") == 64
    with pytest.raises(ValueError):
        as_dtype("int32")


@needs_bfloat16
def test_bfloat16_dtype():
    assert as_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    assert width("bfloat16") == 16


# --------------------------------------------------------------------------------------------
# Ordinals and ULP distances
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_identical_adjacent_and_three_ulps(dtype):
    x = np.array([1.0, -2.5, 1e-3, 3.0], dtype=dtype)
    up1 = np.nextafter(x, dtype(np.inf))
    up3 = np.nextafter(np.nextafter(up1, dtype(np.inf)), dtype(np.inf))
    np.testing.assert_array_equal(bits_of_error(x, x, dtype), 0.0)
    np.testing.assert_array_equal(bits_of_error(up1, x, dtype), 1.0)
    np.testing.assert_array_equal(bits_of_error(x, up1, dtype), 1.0)
    np.testing.assert_array_equal(bits_of_error(up3, x, dtype), 2.0)


@needs_bfloat16
def test_bfloat16_adjacent():
    bf = ml_dtypes.bfloat16
    x = np.array([1.0, -3.0], dtype=bf)
    up = np.array([1.0078125, -2.984375], dtype=bf)  # one ULP (2**-7, 2**-6) towards +inf
    np.testing.assert_array_equal(bits_of_error(up, x, "bfloat16"), 1.0)
    assert list(ordinal(np.array([0.0, -0.0], dtype=bf), "bfloat16")) == [0, 0]


def test_ordinal_zero_and_subnormals():
    tiny = 5e-324
    assert list(ordinal([0.0, -0.0, tiny, -tiny], np.float64)) == [0, 0, 1, -1]
    assert list(ordinal([np.float32(1e-45), -np.float32(1e-45)], np.float32)) == [1, -1]
    assert all(type(v) is int for v in ordinal([1.0, -1.0], np.float64))
    assert bits_of_error(np.array([0.0]), np.array([-0.0]), np.float64)[0] == 0.0
    assert bits_of_error(np.array([-0.0]), np.array([0.0]), np.float32)[0] == 0.0


def test_distance_counts_through_zero():
    # -tiny and +tiny are two ULPs apart, through the zero that both signs share.
    o = ordinal([-5e-324, 5e-324], np.float64)
    assert o[1] - o[0] == 2
    # The same across zero between normal numbers: 2**23 steps on each side in float32.
    mn = np.finfo(np.float32).tiny
    o = ordinal([-mn, mn], np.float32)
    assert o[1] - o[0] == 2**24
    got = np.array([-mn], dtype=np.float32)
    want = np.array([mn], dtype=np.float32)
    assert bits_of_error(got, want, np.float32)[0] == pytest.approx(math.log2(1 + 2**24))


def test_ordinal_is_monotone_on_random_floats():
    rng = np.random.default_rng(0)
    x = np.unique(rng.standard_normal(200) * 10.0 ** rng.integers(-300, 300, 200))
    o = ordinal(x, np.float64)
    assert all(a < b for a, b in zip(o[:-1], o[1:]))
    # Consecutive floats are consecutive ordinals.
    up = np.nextafter(x, np.inf)
    assert all(b - a == 1 for a, b in zip(o, ordinal(up, np.float64)))


def test_far_apart_values_do_not_wrap():
    got = np.array([-1e308, 1e308, -np.finfo(np.float64).max])
    want = np.array([1e308, -1e308, np.finfo(np.float64).max])
    o_got, o_want = ordinal(got, np.float64), ordinal(want, np.float64)
    assert abs(int(o_got[0]) - int(o_want[0])) > 2**63  # would wrap in int64
    bits = bits_of_error(got, want, np.float64)
    assert np.all(bits > 63.9) and np.all(bits <= 64.0)
    f32 = np.float32(-3e38), np.float32(3e38)
    b32 = bits_of_error(np.array([f32[0]]), np.array([f32[1]]), np.float32)[0]
    assert 31.9 < b32 <= 32.0


# --------------------------------------------------------------------------------------------
# Special values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_nonfinite_against_finite_is_full_width(dtype):
    w = WIDTHS[np.dtype(dtype).name]
    got = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    want = np.array([1.0, 1.0, -2.0], dtype=dtype)
    np.testing.assert_array_equal(bits_of_error(got, want, dtype), float(w))


@pytest.mark.parametrize("dtype", FLOATS)
def test_infinite_and_nan_truths(dtype):
    w = float(WIDTHS[np.dtype(dtype).name])
    got = np.array([np.inf, -np.inf, -np.inf, 1.0, np.nan, 1.0, np.nan], dtype=dtype)
    want = np.array([np.inf, -np.inf, np.inf, np.inf, np.nan, np.nan, np.inf], dtype=dtype)
    expected = [0.0, 0.0, w, w, 0.0, w, w]
    np.testing.assert_array_equal(bits_of_error(got, want, dtype), expected)


def test_flush_to_zero_is_forgiven_but_zero_truth_is_not():
    got = np.array([0.0, 0.0, 1e-300, 5e-324])
    want = round_truth(["1e-310", "-1e-315", "0", "0"], np.float64)
    bits = bits_of_error(got, want, np.float64)
    assert bits[0] == 0.0 and bits[1] == 0.0 and bits[3] == 0.0
    assert bits[2] > 50
    # Just above the smallest normal the rule no longer applies.
    mn = np.finfo(np.float64).tiny
    assert bits_of_error(np.array([0.0]), np.array([mn]), np.float64)[0] > 50


# --------------------------------------------------------------------------------------------
# Correct rounding
# --------------------------------------------------------------------------------------------


def test_round_simple_values():
    assert round_truth(["0.1"], np.float32)[0] == np.float32(0.1)
    assert round_truth("0.1", "float64") == 0.1
    out = round_truth(["0", "-0", "inf", "-inf", "nan"], np.float32)
    assert out.dtype == np.float32
    assert out[0] == 0 and not np.signbit(out[0]) and np.signbit(out[1])
    assert out[2] == np.inf and out[3] == -np.inf and np.isnan(out[4])
    assert round_truth([[1, 2], [3, 4]], np.float16).shape == (2, 2)


def test_round_half_to_even():
    lo = np.float32(1.0)
    hi = np.nextafter(lo, np.float32(2))
    hi2 = np.nextafter(hi, np.float32(2))
    mid_even = exact_decimal(1 + 2.0**-24)  # between 1 (even) and 1+2**-23 (odd)
    mid_odd = exact_decimal(1 + 3 * 2.0**-24)  # between 1+2**-23 (odd) and 1+2**-22 (even)
    out = round_truth([mid_even, mid_odd], np.float32)
    assert out[0] == lo and out[1] == hi2
    assert round_truth(["2.5", "3.5", "-2.5"], np.float16).tolist() == [2.5, 3.5, -2.5]
    assert round_truth(["2049", "2051", "-2049"], np.float16).tolist() == [2048, 2052, -2048]


def test_no_double_rounding():
    with mpmath.workprec(200):
        exact = mpmath.mpf(1) + mpmath.mpf(2) ** -24 + mpmath.mpf(2) ** -80
        text = mpmath.nstr(exact, 50, min_fixed=-1, max_fixed=1)
    midpoint = 1 + 2.0**-24
    # The trap: going through float64 lands exactly on the midpoint, which then rounds down.
    assert float(text) == midpoint
    assert np.float32(float(text)) == np.float32(1.0)
    upper = np.nextafter(np.float32(1.0), np.float32(2))
    assert round_truth([text], np.float32)[0] == upper
    assert round_truth([exact], np.float32)[0] == upper
    # Just below the midpoint goes down.
    with mpmath.workprec(200):
        below = mpmath.mpf(1) + mpmath.mpf(2) ** -24 - mpmath.mpf(2) ** -80
    assert round_truth([below], np.float32)[0] == np.float32(1.0)


def test_overflow():
    assert round_truth(["3.5e38"], np.float32)[0] == np.inf
    assert round_truth(["-3.5e38"], np.float32)[0] == -np.inf
    assert round_truth(["1.7976931348623157e308"], np.float64)[0] == np.finfo(np.float64).max
    assert round_truth(["1e309", "-1e309"], np.float64).tolist() == [np.inf, -np.inf]
    assert round_truth(["1e100000"], np.float64)[0] == np.inf
    # The exact threshold: max_finite + ulp/2 overflows, a hair below does not.
    threshold = 2**128 - 2**103
    out = round_truth([str(threshold), str(threshold - 1), threshold], np.float32)
    assert out[0] == np.inf and out[1] == np.finfo(np.float32).max and out[2] == np.inf
    assert round_truth(["65520", "65519.99"], np.float16).tolist() == [np.inf, 65504.0]
    threshold64 = 2**1024 - 2**970
    out = round_truth([str(threshold64), str(threshold64 - 1), -threshold64], np.float64)
    assert out.tolist() == [np.inf, np.finfo(np.float64).max, -np.inf]


def test_subnormals_and_underflow():
    assert round_truth(["1e-40"], np.float32)[0] == np.float32(1e-40)
    assert round_truth(["1e-310"], np.float64)[0] == 1e-310
    out = round_truth(["1e-46", "-1e-46"], np.float32)
    assert out[0] == 0 and not np.signbit(out[0])
    assert out[1] == 0 and np.signbit(out[1])
    # Half the smallest subnormal rounds to even (0); a hair more rounds up.
    smallest = np.float32(2.0**-149)
    assert round_truth([exact_decimal(2.0**-150)], np.float32)[0] == 0.0
    assert round_truth([exact_decimal(2.0**-150 + 2.0**-200)], np.float32)[0] == smallest
    assert round_truth([exact_decimal(3 * 2.0**-150)], np.float32)[0] == 2 * smallest
    assert round_truth(["1.5e-45"], np.float32)[0] == smallest
    assert round_truth(["1e-400", mpmath.mpf("-1e-400")], np.float64)[1] == 0.0


def test_round_matches_python_parser_float64():
    rng = random.Random(1)
    strings = []
    for _ in range(300):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))
        strings.append(f"{rng.choice('-+')}{digits[0]}.{digits[1:] or '0'}e{rng.randint(-330, 310)}")
    expected = np.array([float(s) for s in strings])
    np.testing.assert_array_equal(round_truth(strings, np.float64), expected)


def _nearest_reference(text: str, dtype) -> float:
    """Brute force: the nearest of the neighbours of a float64 guess, ties to even."""
    exact = Fraction(Decimal(text))
    finfo = np.finfo(dtype)
    if abs(exact) >= Fraction(float(finfo.max)) + Fraction(2.0 ** int(finfo.maxexp - finfo.nmant - 2)):
        return math.copysign(math.inf, exact)  # at or beyond max + ulp/2
    guess = np.asarray(float(text)).astype(dtype)
    guess = np.clip(guess, -finfo.max, finfo.max)  # a float64 guess may overflow the cast
    candidates = [guess]
    for direction in (-np.inf, np.inf):
        c = guess
        for _ in range(2):
            c = np.nextafter(c, dtype(direction))
            candidates.append(c)
    finite = [c for c in candidates if np.isfinite(c)]

    def key(c):
        even = int(ordinal([c], dtype)[0]) % 2 != 0
        return (abs(Fraction(float(c)) - exact), even)

    return float(min(finite, key=key))


@pytest.mark.parametrize("dtype,lo,hi", [(np.float32, -44, 38), (np.float16, -7, 4)])
def test_round_matches_brute_force(dtype, lo, hi):
    rng = random.Random(2)
    strings = []
    for _ in range(150):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        strings.append(f"{rng.choice('-+')}{digits[0] if digits[0] != '0' else '1'}.{digits[1:]}e{rng.randint(lo, hi)}")
    out = round_truth(strings, dtype)
    for s, got in zip(strings, out):
        assert float(got) == _nearest_reference(s, dtype), s


@needs_bfloat16
def test_round_bfloat16():
    out = round_truth(["1.00390625", "1.01171875", "1.0039063", "1e39"], "bfloat16")
    assert out.dtype == np.dtype(ml_dtypes.bfloat16)
    assert out.astype(np.float64).tolist() == [1.0, 1.015625, 1.0078125, np.inf]


# --------------------------------------------------------------------------------------------
# Conditioning and summaries
# --------------------------------------------------------------------------------------------


def test_bits_beyond_conditioning():
    assert bits_beyond_conditioning(10.0, 1023.0) == 0.0
    out = bits_beyond_conditioning([10.0, 10.0, 10.0, 3.0], [np.inf, np.nan, 0.0, "1"])
    assert out[0] == -np.inf and out[1] == 10.0 and out[2] == 10.0 and out[3] == 2.0


def test_summarize_handmade():
    bits = np.array([0.0, 1.0, 9.0, 32.0, 2.0])
    beyond = np.array([0.0, 1.0, 9.0, -np.inf, 2.0])
    got = np.array([1.0, 1.0, 2.0, np.nan, np.inf], dtype=np.float32)
    truth = np.array([1.0, 1.0, 2.0, 3.0, np.inf], dtype=np.float32)
    s = summarize(bits, beyond, got=got, truth=truth)
    assert s == ErrorSummary(
        count=5,
        mean_bits=44.0 / 5,
        max_bits=32.0,
        max_beyond=9.0,
        frac_above_8=0.4,
        nonfinite=1,
        worst=3,
        worst_beyond=2,
    )
    assert summarize(bits).nonfinite == 0 and summarize(bits).max_beyond == 32.0
    empty = summarize(np.array([]))
    assert empty.count == 0 and empty.worst == -1 and empty.max_beyond == 0.0
    all_excused = summarize(np.array([5.0]), np.array([-np.inf]))
    assert all_excused.max_beyond == 0.0 and all_excused.worst_beyond == -1


def test_error_report():
    got = np.array([0.1, np.nextafter(0.1, 1.0), np.nan], dtype=np.float64)
    bits, beyond, s = error_report(got, ["0.1", "0.1", "2"], "float64", kappa=["0", "1", 1.0])
    np.testing.assert_array_equal(bits, [0.0, 1.0, 64.0])
    np.testing.assert_array_equal(beyond, [0.0, 0.0, 63.0])
    assert s.nonfinite == 1 and s.worst == 2 and s.max_beyond == 63.0
    bits32, beyond32, _ = error_report(np.array([0.1], dtype=np.float32), ["0.1"], np.float32)
    assert bits32[0] == 0.0 and beyond32[0] == 0.0


# --------------------------------------------------------------------------------------------
# The metric tells a known-bad formula from a known-good one
# --------------------------------------------------------------------------------------------


def test_naive_log1m_sigmoid_is_bad_and_logaddexp_is_good():
    xs = np.array([20.0, 24.0, 27.5, 31.0, 35.0, 40.0])
    with mpmath.workdps(200):
        truths = [mpmath.log(1 - 1 / (1 + mpmath.exp(-mpmath.mpf(x)))) for x in xs]
    truth = round_truth(truths, np.float64)
    with np.errstate(divide="ignore"):
        naive = np.log(1 - 1 / (1 + np.exp(-xs)))
    stable = -np.logaddexp(0, xs)
    bad = bits_of_error(naive, truth, np.float64)
    good = bits_of_error(stable, truth, np.float64)
    assert bad.max() > 20
    assert bad[-1] == 64.0  # 1 - sigmoid(40) rounds to 0: log gives -inf
    assert good.max() <= 2.5
    assert summarize(bad, got=naive, truth=truth).nonfinite >= 1


def test_naive_log_cosh_is_bad_and_the_two_sided_form_is_good():
    # naive log(cosh x) loses everything near 0 (cosh rounds to 1) and overflows past 710
    xs = np.array([1e-9, 1e-5, 3e-3, 0.5, 2.0, 30.0, 400.0, 800.0, 1e4, -1e4, -800.0, -1e-7])
    with mpmath.workdps(5000):
        truths = [mpmath.log(mpmath.cosh(mpmath.mpf(x))) for x in xs]
    truth = round_truth(truths, np.float64)
    with np.errstate(over="ignore"):
        naive = np.log(np.cosh(xs))
    a = np.abs(xs)
    with np.errstate(over="ignore"):
        stable = np.where(a < 1, 0.5 * np.log1p(np.sinh(xs) ** 2), a + np.log1p(np.exp(-2 * a)) - np.log(2))
    bad = bits_of_error(naive, truth, np.float64)
    good = bits_of_error(stable, truth, np.float64)
    assert bad[0] == 64.0 or bad[0] > 50  # log(cosh(1e-9)) = log(1) = 0 against 5e-19
    assert bad[xs.tolist().index(800.0)] == 64.0  # cosh overflows: inf against a finite truth
    assert good.max() <= 2.5, good
