"""Fixed-point requantization against exact rational arithmetic."""

from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qcompiler.lowering.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    multiplier_to_float,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

SETTINGS = settings(deadline=None, max_examples=300)

int32s = st.integers(min_value=INT32_MIN, max_value=INT32_MAX)
# multipliers in (0, 2**k): spread over many octaves, plus plain uniform ones
log_multipliers = st.floats(min_value=-31.0, max_value=20.0).map(lambda e: 2.0**e)
uniform_multipliers = st.floats(min_value=1e-9, max_value=1.0, exclude_max=True)
multipliers = st.one_of(log_multipliers, uniform_multipliers)


def exact(q, shift) -> Fraction:
    return Fraction(int(q)) * Fraction(2) ** (int(shift) - 31)


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def round_half_even(x: Fraction) -> int:
    return round(x)  # Fraction.__round__ rounds ties to even


def round_half_away(x: Fraction) -> int:
    r = math.floor(abs(x) + Fraction(1, 2))
    return r if x >= 0 else -r


# ---- quantize_multiplier -------------------------------------------------------------


@SETTINGS
@given(st.floats(min_value=2.0**-31, max_value=2.0**31 - 1))
def test_quantized_multiplier_relative_error(m):
    q, shift = quantize_multiplier(m)
    assert 2**30 <= int(q) < 2**31
    rel = abs(exact(q, shift) - Fraction(m)) / Fraction(m)
    assert rel <= Fraction(1, 2**31)


def test_multiplier_edge_cases():
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(1.0) == (2**30, 1)
    assert quantize_multiplier(0.25) == (2**30, -1)
    # just below 1: rounds up to 2**31 and is renormalised
    q, s = quantize_multiplier(1.0 - 2.0**-40)
    assert (int(q), s) == (2**30, 1)
    q, s = quantize_multiplier(np.nextafter(1.0, 0.0))
    assert (int(q), s) == (2**30, 1)
    # just below 1 but representable
    q, s = quantize_multiplier(1.0 - 2.0**-30)
    assert (int(q), s) == (2**31 - 2, 0)
    # multiplier >= 1: left shift
    q, s = quantize_multiplier(3.0)
    assert (int(q), s) == (3 * 2**29, 2)
    # huge
    q, s = quantize_multiplier(1e9)
    assert s == 30 and multiplier_to_float(q, s) == pytest.approx(1e9, rel=2**-31)
    # zero and tiny: zero multiplier
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12) == (0, 0)
    q, s = quantize_multiplier(2.0**-32)  # smallest kept: shift -31
    assert (int(q), s) == (2**30, -31)
    with pytest.raises(ValueError):
        quantize_multiplier(-0.5)
    with pytest.raises(ValueError):
        quantize_multiplier(float("nan"))
    with pytest.raises(ValueError):
        quantize_multiplier(2.0**31)
    with pytest.raises(ValueError):
        quantize_multiplier(2.0**31 - 0.25)  # rounds to 2**31


def test_quantize_multiplier_vectorised():
    m = np.array([0.0, 1e-12, 0.3, 0.5, 0.9999999999, 7.25])
    q, s = quantize_multiplier(m)
    assert q.dtype == np.int32 and q.shape == m.shape
    for i, mi in enumerate(m):
        qi, si = quantize_multiplier(float(mi))
        assert (int(q[i]), int(s[i])) == (int(qi), si)


def test_tiny_multiplier_rounds_every_accumulator_to_zero():
    m = 2.0**-32 * 0.999
    q, s = quantize_multiplier(m)
    acc = np.array([INT32_MIN, INT32_MAX, -1, 1, 0], dtype=np.int32)
    for mode in ("half_away_from_zero", "single_rounding", "half_to_even"):
        assert np.all(requantize(acc, q, s, 0, INT32_MIN, INT32_MAX, rounding=mode) == 0)
    # and that is right: |acc * m| < 1/2 for every int32
    assert abs(Fraction(INT32_MIN) * Fraction(m)) < Fraction(1, 2)


# ---- primitives ----------------------------------------------------------------------


@SETTINGS
@given(int32s, int32s)
def test_srdhm_matches_exact(a, b):
    got = int(saturating_rounding_doubling_high_mul(np.int32(a), np.int32(b)))
    if a == b == INT32_MIN:
        assert got == INT32_MAX
    else:
        assert got == round_half_up(Fraction(a * b, 2**31))


def test_srdhm_edge_cases():
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert saturating_rounding_doubling_high_mul(INT32_MAX, INT32_MAX) == INT32_MAX - 1
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX
    assert saturating_rounding_doubling_high_mul(2**30, 1) == 1  # 0.5 rounds up
    assert saturating_rounding_doubling_high_mul(-(2**30), 1) == 0  # -0.5 rounds up
    a = np.array([INT32_MIN, 5, -7], dtype=np.int32)
    b = np.array([INT32_MIN, 2**30, 2**30], dtype=np.int32)
    np.testing.assert_array_equal(saturating_rounding_doubling_high_mul(a, b), [INT32_MAX, 3, -3])


@SETTINGS
@given(int32s, st.integers(min_value=0, max_value=31))
def test_rdbpot_matches_exact(x, e):
    got = int(rounding_divide_by_pot(np.int32(x), e))
    assert got == round_half_away(Fraction(x, 2**e))


def test_rdbpot_ties_away_from_zero_and_per_channel():
    x = np.array([[5, -5, 6, -6], [3, -3, 2, -2]], dtype=np.int32)
    np.testing.assert_array_equal(rounding_divide_by_pot(x, 1), [[3, -3, 3, -3], [2, -2, 1, -1]])
    e = np.array([[0], [2]])
    np.testing.assert_array_equal(rounding_divide_by_pot(x, e), [[5, -5, 6, -6], [1, -1, 1, -1]])
    assert rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert rounding_divide_by_pot(INT32_MAX, 31) == 1
    with pytest.raises(ValueError):
        rounding_divide_by_pot(1, 32)


# ---- requantize ----------------------------------------------------------------------

WIDE = (INT32_MIN, INT32_MAX)


@SETTINGS
@given(int32s, multipliers, st.integers(min_value=-20, max_value=20))
def test_single_rounding_is_exact(acc, m, zp):
    q, s = quantize_multiplier(m)
    got = int(requantize(np.int32(acc), q, s, zp, *WIDE, rounding="single_rounding"))
    want = round_half_up(Fraction(acc) * exact(q, s)) + zp
    assert got == min(max(want, INT32_MIN), INT32_MAX)


@SETTINGS
@given(int32s, multipliers, st.integers(min_value=-20, max_value=20))
def test_half_to_even_is_exact(acc, m, zp):
    q, s = quantize_multiplier(m)
    got = int(requantize(np.int32(acc), q, s, zp, *WIDE, rounding="half_to_even"))
    want = round_half_even(Fraction(acc) * exact(q, s)) + zp
    assert got == min(max(want, INT32_MIN), INT32_MAX)


@SETTINGS
@given(int32s, st.one_of(log_multipliers, uniform_multipliers).filter(lambda m: quantize_multiplier(m)[1] <= 0))
def test_double_rounding_within_one_below_one(acc, m):
    # shift <= 0 (M < 1 - 2**-32): no left shift, so no int32 saturation before the multiply
    q, s = quantize_multiplier(m)
    got = int(requantize(np.int32(acc), q, s, 0, *WIDE, rounding="half_away_from_zero"))
    want = Fraction(acc) * exact(q, s)
    assert abs(got - want) <= 1
    assert abs(got - round_half_away(want)) <= 1


@SETTINGS
@given(int32s, multipliers)
def test_double_rounding_within_one_after_int16_clamp(acc, m):
    # any M: the int32 saturation of acc << shift only happens where the int16 result
    # saturates anyway
    q, s = quantize_multiplier(m)
    got = int(requantize(np.int32(acc), q, s, 0, -32768, 32767, rounding="half_away_from_zero"))
    want = min(max(round_half_away(Fraction(acc) * exact(q, s)), -32768), 32767)
    assert abs(got - want) <= 1


@pytest.mark.parametrize("mode", ["half_away_from_zero", "single_rounding", "half_to_even"])
@pytest.mark.parametrize(
    "m", [0.5, 1.0 - 2.0**-30, 1.0 - 1e-12, 2.0**-31, 1e-7, 1.0, 1.5, 1234.5678, 2.0**20]
)
def test_requantize_edge_accumulators(mode, m):
    q, s = quantize_multiplier(m)
    accs = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]
    got = requantize(np.array(accs, dtype=np.int32), q, s, 0, *WIDE, rounding=mode)
    for a, g in zip(accs, got):
        want = Fraction(a) * exact(q, s)
        clamped = min(max(want, INT32_MIN), INT32_MAX)
        if mode == "half_away_from_zero" and s > 0 and abs(a) * 2**s > INT32_MAX:
            # acc << shift saturates to int32 before the multiply (int32 kernel
            # semantics): the result is still far outside any 8/16-bit range
            assert abs(int(g)) >= 2**29 and (int(g) > 0) == (a > 0)
        else:
            assert abs(int(g) - clamped) <= 1, (a, int(g), float(want))


def test_requantize_ties():
    q, s = quantize_multiplier(0.5)
    acc = np.array([1, -1, 3, -3, 5, -5], dtype=np.int32)
    np.testing.assert_array_equal(
        requantize(acc, q, s, 0, rounding="half_to_even"), [0, 0, 2, -2, 2, -2]
    )
    np.testing.assert_array_equal(
        requantize(acc, q, s, 0, rounding="single_rounding"), [1, 0, 2, -1, 3, -2]
    )
    # with a right shift the final rounding is half away from zero
    q, s = quantize_multiplier(0.25)
    acc = np.array([2, -2, 6, -6], dtype=np.int32)
    np.testing.assert_array_equal(requantize(acc, q, s, 0), [1, -1, 2, -2])


def test_requantize_zero_point_and_clamp():
    q, s = quantize_multiplier(0.1)
    acc = np.array([-5000, -50, 0, 50, 5000], dtype=np.int32)
    out = requantize(acc, q, s, zero_point=10, qmin=0, qmax=255)
    np.testing.assert_array_equal(out, [0, 5, 10, 15, 255])
    assert out.dtype == np.int32


@pytest.mark.parametrize("mode", ["half_away_from_zero", "single_rounding", "half_to_even"])
def test_requantize_per_channel_matches_per_tensor(mode):
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**20), 2**20, size=(2, 5, 3, 3)).astype(np.int32)
    ms = np.array([1e-4, 3e-3, 0.02, 0.5, 1.7])
    q, s = quantize_multiplier(ms)
    zps = np.array([0, 1, -2, 3, 0])
    out = requantize(acc, q, s, zps, -128, 127, rounding=mode, axis=1)
    for c in range(5):
        qc, sc = quantize_multiplier(float(ms[c]))
        ref = requantize(acc[:, c], qc, sc, int(zps[c]), -128, 127, rounding=mode)
        np.testing.assert_array_equal(out[:, c], ref)
    # negative axis
    out2 = requantize(acc, q, s, zps, -128, 127, rounding=mode, axis=-3)
    np.testing.assert_array_equal(out, out2)


def test_requantize_vs_float_reference():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**24), 2**24, size=10000).astype(np.int32)
    m = 0.000123456
    q, s = quantize_multiplier(m)
    out = requantize(acc, q, s, 0, -128, 127, rounding="half_to_even")
    ref = np.clip(np.rint(acc.astype(np.float64) * multiplier_to_float(q, s)), -128, 127)
    np.testing.assert_array_equal(out, ref)


def test_requantize_rejects_bad_input():
    with pytest.raises(ValueError):
        requantize(np.array([1.5]), 2**30, 0)
    with pytest.raises(ValueError):
        requantize(np.array([1], dtype=np.int64) << 40, 2**30, 0)
    with pytest.raises(ValueError):
        requantize(np.array([1]), 2**30, 0, rounding="nearest")
    with pytest.raises(ValueError):
        requantize(np.array([1]), 2**30, -40)
