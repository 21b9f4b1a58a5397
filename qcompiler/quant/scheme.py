"""Quantization schemes: which integer grid a tensor is mapped onto.

A :class:`QuantScheme` says *how* a tensor is quantized (integer type, symmetric or
affine, per-tensor or per-channel, narrow range, reduced range). It carries no numbers
from data; those live in :class:`qcompiler.quant.qparams.QParams`.

Integer grids (``qmin``/``qmax``)::

    dtype    bits  full range          narrow              reduce_range (one bit less)
    int8     8     [-128, 127]         [-127, 127]         [-64, 63]  (narrow: [-63, 63])
    uint8    8     [0, 255]            [1, 255]            [0, 127]   (narrow: [1, 127])
    int16    16    [-32768, 32767]     [-32767, 32767]     [-16384, 16383]
    int4     4     [-8, 7]             [-7, 7]             [-4, 3]
    uint4    4     [0, 15]             [1, 15]             [0, 7]
    int32    32    [-2^31, 2^31-1]     [-(2^31-1), 2^31-1]  [-2^30, 2^30-1]

``reduce_range`` drops one bit of the grid, the way ONNX Runtime's ``reduce_range``
option does for x86 CPUs without VNNI (where u8 x s8 products summed in pairs by
``vpmaddubsw`` can saturate int16); the values are still stored in the full type.
``narrow`` drops the most negative code of a signed type (so the grid is symmetric
around 0) and the code 0 of an unsigned type (so that the uint8 grid around the
symmetric zero point 128 is symmetric too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QuantScheme", "DTYPES", "dtype_bits", "dtype_is_signed"]

# dtype name -> (bits, signed, numpy storage dtype, onnx TensorProto data type)
# TensorProto numbers: UINT8=2, INT8=3, INT16=5, INT32=6, UINT4=21, INT4=22.
_DTYPE_INFO: dict[str, tuple[int, bool, type, int]] = {
    "int8": (8, True, np.int8, 3),
    "uint8": (8, False, np.uint8, 2),
    "int16": (16, True, np.int16, 5),
    "int4": (4, True, np.int8, 22),
    "uint4": (4, False, np.uint8, 21),
    "int32": (32, True, np.int32, 6),
}

DTYPES: tuple[str, ...] = tuple(_DTYPE_INFO)


def _check_dtype(dtype: str) -> None:
    if dtype not in _DTYPE_INFO:
        raise ValueError(
            f"unknown quantized dtype {dtype!r}; expected one of {', '.join(DTYPES)}"
        )


def dtype_bits(dtype: str) -> int:
    """Number of bits of a quantized dtype name ("int4" -> 4)."""
    _check_dtype(dtype)
    return _DTYPE_INFO[dtype][0]


def dtype_is_signed(dtype: str) -> bool:
    """Whether a quantized dtype name is a signed integer type."""
    _check_dtype(dtype)
    return _DTYPE_INFO[dtype][1]


@dataclass(frozen=True)
class QuantScheme:
    """How a tensor is quantized.

    dtype:        one of "int8", "uint8", "int16", "int4", "uint4", "int32".
    symmetric:    zero point fixed at the middle of the grid (0 for signed types,
                  128 for uint8, 8 for uint4, ...); otherwise affine.
    axis:         None for per-tensor parameters, else the channel axis.
    narrow:       drop the most negative signed code (or code 0 of an unsigned type).
    reduce_range: use one bit less than the type holds (see module docstring).
    """

    dtype: str = "int8"
    symmetric: bool = True
    axis: int | None = None
    narrow: bool = False
    reduce_range: bool = False

    def __post_init__(self) -> None:
        _check_dtype(self.dtype)
        if self.axis is not None and (isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer))):
            raise ValueError(f"QuantScheme axis must be None or an int, got {self.axis!r}")
        if self.axis is not None:
            object.__setattr__(self, "axis", int(self.axis))
        object.__setattr__(self, "symmetric", bool(self.symmetric))
        object.__setattr__(self, "narrow", bool(self.narrow))
        object.__setattr__(self, "reduce_range", bool(self.reduce_range))

    # ---- grid -------------------------------------------------------------------------

    @property
    def bits(self) -> int:
        """Bits of the grid actually used (one less than the type with reduce_range)."""
        return _DTYPE_INFO[self.dtype][0] - (1 if self.reduce_range else 0)

    @property
    def storage_bits(self) -> int:
        """Bits of the integer type the values are stored in."""
        return _DTYPE_INFO[self.dtype][0]

    @property
    def signed(self) -> bool:
        return _DTYPE_INFO[self.dtype][1]

    @property
    def qmin(self) -> int:
        b = self.bits
        if self.signed:
            lo = -(1 << (b - 1))
            return lo + 1 if self.narrow else lo
        return 1 if self.narrow else 0

    @property
    def qmax(self) -> int:
        b = self.bits
        if self.signed:
            return (1 << (b - 1)) - 1
        return (1 << b) - 1

    @property
    def symmetric_zero_point(self) -> int:
        """The zero point a symmetric scheme uses: 0 if signed, else the grid middle."""
        if self.signed:
            return 0
        return (self.qmin + self.qmax + 1) // 2

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    # ---- types ------------------------------------------------------------------------

    @property
    def np_dtype(self) -> np.dtype:
        """NumPy dtype the quantized values are stored in (int4/uint4 use int8/uint8)."""
        return np.dtype(_DTYPE_INFO[self.dtype][2])

    @property
    def onnx_dtype(self) -> int:
        """onnx.TensorProto data type number of the quantized type."""
        return _DTYPE_INFO[self.dtype][3]

    def with_axis(self, axis: int | None) -> "QuantScheme":
        """The same scheme with another channel axis (None = per-tensor)."""
        return QuantScheme(self.dtype, self.symmetric, axis, self.narrow, self.reduce_range)

    def __str__(self) -> str:
        parts = [self.dtype, "symmetric" if self.symmetric else "asymmetric"]
        parts.append("per_tensor" if self.axis is None else f"per_channel(axis={self.axis})")
        if self.narrow:
            parts.append("narrow")
        if self.reduce_range:
            parts.append("reduce_range")
        return " ".join(parts)
