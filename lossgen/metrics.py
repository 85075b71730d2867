"""Bits of error: how far a computed float lies from the exact answer, in ULPs, on a log scale.

This is the metric that tests, benchmarks and reports use to grade a generated loss against
the arbitrary-precision mpmath oracle. It follows Herbie's definition:

1. The oracle's exact value (a decimal string or an ``mpmath.mpf``) is **correctly rounded**
   to the target dtype (:func:`round_truth`): round-half-to-even at the dtype's significand
   width and exponent range, straight from the exact value (never through float64 first, which
   would round twice), with overflow to ``±inf`` and gradual underflow to subnormals or ``±0``.
2. Every float of the dtype gets an integer **ordinal** (:func:`ordinal`) such that adjacent
   floats differ by one and ``+0.0``/``-0.0`` share ordinal 0.
3. The **bits of error** of a result is ``log2(1 + |ordinal(got) - ordinal(truth)|)``
   (:func:`bits_of_error`): 0 when exact, 1 for one ULP, 2 for three ULPs, and at most the
   dtype's width (16, 32 or 64) for results that are wildly off, non-finite when the truth is
   finite, or finite when the truth is NaN or infinite.

Two refinements make the number fair:

* Results and truths that are both below the smallest normal number count as exact, so that a
  backend that flushes subnormals to zero is not penalised.
* :func:`bits_beyond_conditioning` subtracts ``log2(1 + kappa)``, the bits that any algorithm
  may lose at a point whose condition number is ``kappa``; what remains is the error the
  implementation itself is responsible for.

:func:`summarize` condenses an array of bits into an :class:`ErrorSummary`, and
:func:`error_report` runs the whole pipeline (round, measure, excuse, summarize) in one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import mpmath
import numpy as np

__all__ = [
    "WIDTHS",
    "ErrorSummary",
    "as_dtype",
    "bits_beyond_conditioning",
    "bits_of_error",
    "error_report",
    "ordinal",
    "round_truth",
    "summarize",
    "width",
]

#: Bit width of each supported floating-point dtype, keyed by dtype name.
WIDTHS: dict[str, int] = {
    "float16": 16,
    "bfloat16": 16,
    "float32": 32,
    "float64": 64,
}

# name -> (significand bits including the implicit one, exponent of the smallest normal,
#          exponent of the largest finite value)
_FORMATS: dict[str, tuple[int, int, int]] = {
    "float16": (11, -14, 15),
    "bfloat16": (8, -126, 127),
    "float32": (24, -126, 127),
    "float64": (53, -1022, 1023),
}


def _bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("bfloat16 needs the ml_dtypes package") from exc
    return np.dtype(ml_dtypes.bfloat16)


def as_dtype(dtype: Any) -> np.dtype:
    """Normalise a numpy dtype, numpy scalar type or name ("float32", "bfloat16") to a dtype.

    Raises ``ValueError`` for anything that is not one of the dtypes in :data:`WIDTHS`.
    """
    if isinstance(dtype, str) and dtype.strip().lower() == "bfloat16":
        return _bfloat16()
    try:
        result = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"not a floating-point dtype: {dtype!r}") from exc
    if result.name not in WIDTHS:
        raise ValueError(f"unsupported dtype {result.name!r}; expected one of {sorted(WIDTHS)}")
    return result


def width(dtype: Any) -> int:
    """The bit width of ``dtype`` (16, 32 or 64): also the largest possible bits of error."""
    return WIDTHS[as_dtype(dtype).name]


# --------------------------------------------------------------------------------------------
# Ordinals
# --------------------------------------------------------------------------------------------


def _ordinal_int64(values: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Ordinals as int64; they always fit (|ordinal| <= 2**63 - 1), only differences do not."""
    bits = WIDTHS[dt.name]
    ints = np.asarray(values, dtype=dt).view(np.dtype(f"int{bits}")).astype(np.int64)
    int_min = -(1 << (bits - 1))
    # For negatives, int_min - i lies in [int_min + 1, 0]: no overflow even at 64 bits.
    return np.where(ints < 0, np.int64(int_min) - ints, ints)


def ordinal(values: Any, dtype: Any) -> np.ndarray:
    """Map floats to integers so that adjacent floats of ``dtype`` differ by exactly one.

    The bits are read as a signed integer ``i`` of the dtype's width; negative floats (sign bit
    set) map to ``INT_MIN - i``. Hence ``+0.0`` and ``-0.0`` both map to 0, the smallest
    positive subnormal to 1 and the largest negative subnormal to -1. The result is an object
    array of Python ints, so that differences never wrap around.
    """
    dt = as_dtype(dtype)
    return _ordinal_int64(np.asarray(values, dtype=dt), dt).astype(object)


def _ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| for int64 ordinals, exact as uint64 (the true distance is at most 2**64 - 2)."""
    ua, ub = a.view(np.uint64), b.view(np.uint64)
    return np.where(a >= b, ua - ub, ub - ua)  # uint64 arithmetic wraps to the exact result


# --------------------------------------------------------------------------------------------
# Correct rounding of exact values
# --------------------------------------------------------------------------------------------


def _floor_log2(num: int, den: int) -> int:
    """floor(log2(num / den)) for positive integers."""
    e = num.bit_length() - den.bit_length()
    if (num < den << e) if e >= 0 else (num << -e < den):
        e -= 1
    return e


def _round_rational(negative: bool, num: int, den: int, fmt: tuple[int, int, int]) -> float:
    """Round ``±num/den`` (num >= 0, den > 0) to the format, half to even, as a Python float.

    The result is exactly representable in the target format (and hence in float64), or is
    ``±inf``/``±0.0``.
    """
    sign = -1.0 if negative else 1.0
    if num == 0:
        return sign * 0.0
    precision, emin, emax = fmt
    e = _floor_log2(num, den)
    if e > emax:
        return sign * math.inf
    quantum = max(e, emin) - precision + 1  # exponent of the ULP at this magnitude
    if quantum >= 0:
        q, r = divmod(num, den << quantum)
        d = den << quantum
    else:
        q, r = divmod(num << -quantum, den)
        d = den
    if 2 * r > d or (2 * r == d and q & 1):
        q += 1
    if q == 0:
        return sign * 0.0
    if q.bit_length() - 1 + quantum > emax:  # rounded up past the largest finite value
        return sign * math.inf
    return sign * math.ldexp(q, quantum)


def _round_decimal(value: Decimal, fmt: tuple[int, int, int]) -> float:
    if value.is_nan():
        return math.nan
    negative = value.is_signed()
    if value.is_infinite():
        return -math.inf if negative else math.inf
    if value.is_zero():
        return -0.0 if negative else 0.0
    # Short-circuit magnitudes far outside every supported dtype (avoids 10**huge).
    if value.adjusted() > 310:
        return -math.inf if negative else math.inf
    if value.adjusted() < -330:
        return -0.0 if negative else 0.0
    num, den = value.copy_abs().as_integer_ratio()  # abs() would round to the context
    return _round_rational(negative, num, den, fmt)


def _round_mpf(value: mpmath.mpf, fmt: tuple[int, int, int]) -> float:
    if mpmath.isnan(value):
        return math.nan
    if mpmath.isinf(value):
        return math.inf if value > 0 else -math.inf
    man, exp = value.man_exp  # exact: |value| == |man| * 2**exp (man is unsigned in some versions)
    if man == 0:
        return 0.0
    negative, man = bool(value < 0), abs(int(man))
    top = exp + man.bit_length() - 1
    if top > 1100:
        return -math.inf if negative else math.inf
    if top < -1200:
        return -0.0 if negative else 0.0
    if exp >= 0:
        return _round_rational(negative, man << exp, 1, fmt)
    return _round_rational(negative, man, 1 << -exp, fmt)


def _round_one(item: Any, fmt: tuple[int, int, int]) -> float:
    """Correctly round one exact value (decimal string, mpf, float, int) to the format."""
    if isinstance(item, mpmath.mpf):
        return _round_mpf(item, fmt)
    if isinstance(item, (str, np.str_)):
        try:
            return _round_decimal(Decimal(item.strip()), fmt)
        except InvalidOperation:
            # Formats Decimal does not read: let mpmath parse at a precision well above the
            # string's digits and round the (then exact binary) value.
            prec = max(400, 4 * len(item) + 128)
            try:
                with mpmath.workprec(prec):
                    value = mpmath.mpf(item.strip())
            except (ValueError, TypeError) as exc:
                raise ValueError(f"cannot read {item!r} as a number") from exc
            return _round_mpf(value, fmt)
    if isinstance(item, (bool, int, np.integer)):
        n = int(item)
        return _round_rational(n < 0, abs(n), 1, fmt)
    x = float(item)  # Python/numpy floats: exact in float64
    if math.isnan(x):
        return math.nan
    if math.isinf(x) or x == 0.0:
        return x
    num, den = abs(x).as_integer_ratio()
    return _round_rational(x < 0, num, den, fmt)


def round_truth(truth: Any, dtype: Any) -> np.ndarray:
    """Correctly round exact values to ``dtype`` (round-half-to-even, no double rounding).

    ``truth`` is a single value, a sequence or an array of decimal strings (``"1.5e-300"``,
    ``"0"``, ``"inf"``, ``"-inf"``, ``"nan"``), ``mpmath.mpf`` values, or Python/numpy numbers.
    Magnitudes of at least ``max_finite + ulp(max_finite) / 2`` become ``±inf``; tiny values
    round to a multiple of the smallest subnormal, or to a zero that keeps their sign.
    Decimal strings are converted exactly (as integer ratios), so even values within a hair of
    a rounding midpoint are rounded correctly. The result has the shape of ``truth``.
    """
    dt = as_dtype(dtype)
    fmt = _FORMATS[dt.name]
    items = np.asarray(truth, dtype=object)
    rounded = np.array([_round_one(item, fmt) for item in items.flat], dtype=np.float64)
    # Every rounded value is representable in dt, so this cast is exact.
    return rounded.reshape(items.shape).astype(dt)


# --------------------------------------------------------------------------------------------
# Bits of error
# --------------------------------------------------------------------------------------------


def bits_of_error(got: Any, truth: Any, dtype: Any) -> np.ndarray:
    """Elementwise bits of error ``log2(1 + ULPs)`` of ``got`` against the rounded ``truth``.

    ``truth`` must already be rounded to ``dtype`` (see :func:`round_truth`); ``got`` is cast
    to ``dtype``. Rules, first match wins (``W`` is the dtype's width):

    * truth NaN: 0 if ``got`` is NaN, else ``W``;
    * truth ``±inf``: 0 if ``got`` is the same infinity, else ``W``;
    * ``got`` NaN or infinite (truth finite): ``W``;
    * both ``|got|`` and ``|truth|`` below the smallest normal: 0 (flush-to-zero is fine);
    * otherwise ``log2(1 + |ordinal(got) - ordinal(truth)|)``, capped at ``W``.
    """
    dt = as_dtype(dtype)
    w = float(WIDTHS[dt.name])
    g, t = np.broadcast_arrays(np.asarray(got).astype(dt), np.asarray(truth).astype(dt))
    g64, t64 = g.astype(np.float64), t.astype(np.float64)
    distance = _ulp_distance(_ordinal_int64(g, dt), _ordinal_int64(t, dt))
    bits = np.minimum(np.log2(distance.astype(np.float64) + 1.0), w)

    tiny = math.ldexp(1.0, _FORMATS[dt.name][1])
    t_nan, g_nan = np.isnan(t64), np.isnan(g64)
    t_inf, g_inf = np.isinf(t64), np.isinf(g64)
    with np.errstate(invalid="ignore"):
        subnormal_both = (np.abs(g64) < tiny) & (np.abs(t64) < tiny)
    conditions = [t_nan, t_inf, g_nan | g_inf, subnormal_both]
    choices = [
        np.where(g_nan, 0.0, w),
        np.where(g64 == t64, 0.0, w),
        np.full(bits.shape, w),
        np.zeros(bits.shape),
    ]
    return np.select(conditions, choices, default=bits).astype(np.float64)


def _as_float_array(values: Any) -> np.ndarray:
    """Floats, strings or mpf values as a float64 array (huge magnitudes become inf)."""
    items = np.asarray(values, dtype=object)
    flat = [float(item) for item in items.flat]
    return np.array(flat, dtype=np.float64).reshape(items.shape)


def bits_beyond_conditioning(bits: Any, kappa: Any) -> np.ndarray:
    """``bits - log2(1 + kappa)``: the error left after excusing what conditioning forces.

    A point with condition number ``kappa`` may lose ``log2(1 + kappa)`` bits in any algorithm.
    ``kappa = inf`` gives ``-inf`` (no demand at that point); NaN kappa counts as 0 (no excuse).
    ``kappa`` is taken in absolute value, so signed relative derivatives are accepted too.
    """
    b = np.asarray(bits, dtype=np.float64)
    k = np.abs(_as_float_array(kappa))
    k = np.where(np.isnan(k), 0.0, k)
    return b - np.log2(1.0 + k)


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorSummary:
    """Aggregate of bits of error over a set of points."""

    count: int
    mean_bits: float
    max_bits: float
    #: Largest bits beyond conditioning (non-finite values ignored; 0.0 if none).
    max_beyond: float
    #: Fraction of points with more than 8 bits of error.
    frac_above_8: float
    #: Points where the result is NaN/±inf but the rounded truth is finite.
    nonfinite: int
    #: Index (into the flattened arrays) of the point with the most bits; -1 if empty.
    worst: int
    #: Index of the point with the most bits beyond conditioning; -1 if none is finite.
    worst_beyond: int


def _finite_argmax(values: np.ndarray) -> int:
    finite = np.isfinite(values)
    if not finite.any():
        return -1
    return int(np.argmax(np.where(finite, values, -np.inf)))


def summarize(
    bits: Any,
    beyond: Any | None = None,
    got: Any | None = None,
    truth: Any | None = None,
) -> ErrorSummary:
    """Condense bits of error (and optionally bits beyond conditioning) into a summary.

    Without ``beyond`` the bits themselves are used (every condition number 0). ``nonfinite``
    is counted only when both ``got`` and the rounded ``truth`` are given.
    """
    b = np.asarray(bits, dtype=np.float64).ravel()
    extra = b if beyond is None else np.asarray(beyond, dtype=np.float64).ravel()
    nonfinite = 0
    if got is not None and truth is not None:
        g = np.asarray(got).astype(np.float64).ravel()
        t = np.asarray(truth).astype(np.float64).ravel()
        g, t = np.broadcast_arrays(g, t)
        nonfinite = int(np.count_nonzero(~np.isfinite(g) & np.isfinite(t)))
    if b.size == 0:
        return ErrorSummary(0, 0.0, 0.0, 0.0, 0.0, nonfinite, -1, -1)
    worst_beyond = _finite_argmax(extra)
    return ErrorSummary(
        count=int(b.size),
        mean_bits=float(np.mean(b)),
        max_bits=float(np.max(b)),
        max_beyond=float(extra[worst_beyond]) if worst_beyond >= 0 else 0.0,
        frac_above_8=float(np.mean(b > 8.0)),
        nonfinite=nonfinite,
        worst=int(np.argmax(b)),
        worst_beyond=worst_beyond,
    )


def error_report(
    got: Any,
    truth_strings: Sequence[Any] | np.ndarray,
    dtype: Any,
    kappa: Sequence[Any] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, ErrorSummary]:
    """Round the truths, measure bits of error, excuse conditioning and summarize at once.

    ``kappa`` holds condition numbers as floats, strings or mpf values; ``None`` means 0
    everywhere. Returns ``(bits, beyond, summary)``.
    """
    dt = as_dtype(dtype)
    truth = round_truth(truth_strings, dt)
    got_arr = np.asarray(got).astype(dt)
    bits = bits_of_error(got_arr, truth, dt)
    beyond = bits.copy() if kappa is None else bits_beyond_conditioning(bits, kappa)
    return bits, beyond, summarize(bits, beyond, got=got_arr, truth=truth)
