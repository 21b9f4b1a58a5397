"""Fixed-point requantization: int32 accumulators -> narrow integers, without floats.

A real rescale factor M = s_in * s_w / s_out (0 <= M < 2**31) is written as a Q31
multiplier and a power-of-two shift,

    M ~= q * 2**(shift - 31),   q in [2**30, 2**31) (or q == 0 for M == 0),

``shift > 0`` meaning a left shift (M >= 1) and ``shift < 0`` a right shift. Three ways
to apply it to an int32 accumulator ``acc`` are offered by :func:`requantize`:

- ``"half_away_from_zero"`` (double rounding, gemmlowp / TFLite reference style):
  ``rounding_divide_by_pot(srdhm(acc << max(shift, 0), q), max(-shift, 0))``. The high
  multiply rounds half up, the divide rounds half away from zero; the result is within
  1 of the exact value. As in int32 kernels, ``acc << shift`` saturates to int32 for
  M >= 1; that only happens when |acc * M| >= 2**30, far outside any 8/16-bit output.
- ``"single_rounding"`` (TFLite's newer mode): ``(acc * q + 2**(t-1)) >> t`` with
  ``t = 31 - shift``: the exact product acc * q * 2**(shift-31), rounded once, ties
  toward +infinity.
- ``"half_to_even"``: the same exact product rounded once, ties to even.

Everything is vectorised NumPy on int64; multipliers, shifts and zero points may be
arrays that broadcast along a channel axis of the accumulator.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "MIN_SHIFT",
    "MAX_SHIFT",
    "REQUANT_ROUNDING",
    "quantize_multiplier",
    "multiplier_to_float",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "requantize",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

#: Smallest shift quantize_multiplier returns with a nonzero multiplier; below it
#: (M < 2**-32) every int32 accumulator rounds to 0, so the multiplier becomes 0.
MIN_SHIFT = -31
#: Largest shift: M must be below 2**31.
MAX_SHIFT = 31

REQUANT_ROUNDING = ("half_away_from_zero", "single_rounding", "half_to_even")


def quantize_multiplier(m):
    """Real multiplier(s) M >= 0 -> (Q31 multiplier int32, shift) with M ~= q * 2**(shift-31).

    Uses frexp: M = f * 2**e with f in [0.5, 1); q = round(f * 2**31) (ties away from
    zero), shift = e. If rounding carries q to 2**31 it is renormalised to 2**30 with
    shift + 1. The relative error is at most 2**-31. M == 0, and M < 2**-32 (whose
    shift would fall below -31; every int32 accumulator times it rounds to 0), give
    (0, 0). M must be finite and below 2**31 (ValueError otherwise).

    A scalar M gives (np.int32, int); an array gives (int32 array, int32 array).
    """
    scalar = np.ndim(m) == 0
    ma = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(ma)):
        raise ValueError(f"requantization multiplier must be finite, got {m}")
    if np.any(ma < 0):
        raise ValueError(f"requantization multiplier must be >= 0, got {m}")
    if np.any(ma >= 2.0**31):
        raise ValueError(f"requantization multiplier must be below 2**31, got {m}")
    f, e = np.frexp(ma)
    qf = np.floor(f * 2.0**31 + 0.5)  # f*2**31 and the + 0.5 are exact in float64
    carry = qf >= 2.0**31
    qf = np.where(carry, 2.0**30, qf)
    e = e.astype(np.int64) + carry
    if np.any(e > MAX_SHIFT):
        raise ValueError(f"requantization multiplier must be below 2**31, got {m}")
    zero = (ma == 0) | (e < MIN_SHIFT)
    q = np.where(zero, 0, qf).astype(np.int64)
    shift = np.where(zero, 0, e).astype(np.int64)
    if scalar:
        return np.int32(q), int(shift)
    return q.astype(np.int32), shift.astype(np.int32)


def multiplier_to_float(q, shift):
    """The real multiplier a (q, shift) pair stands for: q * 2**(shift - 31) (float64)."""
    return np.ldexp(np.asarray(q, dtype=np.float64), np.asarray(shift, dtype=np.int64) - 31)


def saturating_rounding_doubling_high_mul(a, b):
    """High 32 bits of 2*a*b, rounded (ties up), with int32 semantics.

    Equals round(a * b / 2**31); the one overflowing case a == b == INT32_MIN
    saturates to INT32_MAX. Inputs and output are int32 values (any int array works).
    """
    a64 = np.asarray(a).astype(np.int64)
    b64 = np.asarray(b).astype(np.int64)
    ab = a64 * b64  # |ab| <= 2**62: fits
    res = (ab + (1 << 30)) >> 31  # floor((ab + 2**30) / 2**31): round half up
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    res = np.where(overflow, INT32_MAX, res)
    return res.astype(np.int32)


def rounding_divide_by_pot(x, exponent):
    """x / 2**exponent rounded to nearest, ties away from zero (0 <= exponent <= 31).

    Exponents may be an array broadcasting against x (per-channel shifts).
    """
    x64 = np.asarray(x).astype(np.int64)
    e = np.asarray(exponent).astype(np.int64)
    if np.any(e < 0) or np.any(e > 31):
        raise ValueError(f"rounding_divide_by_pot exponent must be in [0, 31], got {exponent}")
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    res = (x64 >> e) + (remainder > threshold)
    return res.astype(np.int32)


def _channel_shape(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a 1-d per-channel parameter to broadcast along ``axis`` of an ndim array."""
    if param.ndim == 0 or axis is None:
        return param
    if param.ndim != 1:
        raise ValueError(f"per-channel requantization parameters must be 1-d, got shape {param.shape}")
    ax = axis + ndim if axis < 0 else axis
    if not 0 <= ax < ndim:
        raise ValueError(f"axis {axis} is out of range for an accumulator of rank {ndim}")
    shape = [1] * ndim
    shape[ax] = param.shape[0]
    return param.reshape(shape)


def _round_shift_half_to_even(prod: np.ndarray, t: np.ndarray) -> np.ndarray:
    """prod / 2**t rounded half to even, t >= 0 (int64 arrays)."""
    tt = np.maximum(t, 1)
    floor = prod >> tt
    rem = prod - (floor << tt)
    half = np.int64(1) << (tt - 1)
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return np.where(t == 0, prod, floor + up)


def _round_shift_half_up(prod: np.ndarray, t: np.ndarray) -> np.ndarray:
    """prod / 2**t rounded half up (toward +inf), t >= 0 (int64 arrays)."""
    tt = np.maximum(t, 1)
    return np.where(t == 0, prod, (prod + (np.int64(1) << (tt - 1))) >> tt)


def requantize(
    acc,
    multiplier,
    shift,
    zero_point=0,
    qmin: int = -128,
    qmax: int = 127,
    rounding: str = "half_away_from_zero",
    axis: int | None = None,
) -> np.ndarray:
    """clamp(round(acc * q * 2**(shift-31)) + zero_point, qmin, qmax) in integer arithmetic.

    acc: int32 accumulators (any shape). multiplier/shift: from quantize_multiplier,
    scalars or 1-d per-channel arrays laid along ``axis`` of acc (or arrays that already
    broadcast, with axis=None). zero_point likewise. rounding: "half_away_from_zero"
    (double rounding, SRDHM then RDBPOT), "single_rounding" (one rounding, ties up) or
    "half_to_even" (one rounding, ties to even). Returns int32 values in [qmin, qmax].
    """
    if rounding not in REQUANT_ROUNDING:
        raise ValueError(
            f"unknown requantization rounding {rounding!r}; expected one of "
            f"{', '.join(REQUANT_ROUNDING)}"
        )
    a = np.asarray(acc)
    if a.dtype.kind not in "iu":
        raise ValueError(f"requantize expects integer accumulators, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if np.any(a < INT32_MIN) or np.any(a > INT32_MAX):
        raise ValueError("requantize accumulators must fit in int32")
    q = _channel_shape(np.asarray(multiplier).astype(np.int64), a.ndim, axis)
    s = _channel_shape(np.asarray(shift).astype(np.int64), a.ndim, axis)
    zp = _channel_shape(np.asarray(zero_point).astype(np.int64), a.ndim, axis)
    if np.any(q < 0) or np.any(q > INT32_MAX):
        raise ValueError("requantize multipliers must be Q31 values in [0, 2**31)")
    if np.any(s < MIN_SHIFT) or np.any(s > MAX_SHIFT):
        raise ValueError(f"requantize shifts must be in [{MIN_SHIFT}, {MAX_SHIFT}]")

    if rounding == "half_away_from_zero":
        left = np.maximum(s, 0)
        right = np.maximum(-s, 0)
        shifted = np.clip(a << left, INT32_MIN, INT32_MAX)  # int32 saturation
        high = saturating_rounding_doubling_high_mul(shifted, q).astype(np.int64)
        scaled = rounding_divide_by_pot(high, right).astype(np.int64)
    else:
        prod = a * q  # |prod| < 2**62
        t = 31 - s  # >= 0
        if rounding == "single_rounding":
            scaled = _round_shift_half_up(prod, t)
        else:
            scaled = _round_shift_half_to_even(prod, t)
    out = np.clip(scaled + zp, qmin, qmax)
    return out.astype(np.int32)
