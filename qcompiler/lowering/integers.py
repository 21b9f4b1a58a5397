"""Integer value ranges of program dtypes, and the rounding of float results to integers
(float-scale requantization), shared by lowering and the interpreter."""

from __future__ import annotations

import numpy as np

from .fixed_point import INT32_MAX, INT32_MIN

__all__ = ["dtype_range", "round_float"]

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
               "int32": (INT32_MIN, INT32_MAX)}


def dtype_range(dtype: str):
    return _INT_RANGES[str(np.dtype(dtype))]


def round_float(v: np.ndarray, rounding: str) -> np.ndarray:
    """Round floats to integers the way `rounding` says (float-scale requantization)."""
    if rounding == "half_to_even":
        return np.rint(v)
    if rounding == "half_away_from_zero":
        return np.sign(v) * np.floor(np.abs(v) + 0.5)
    if rounding == "single_rounding":
        return np.floor(v + 0.5)
    raise ValueError(f"unknown rounding {rounding!r}")
