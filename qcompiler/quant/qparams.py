"""Quantization parameters and the float <-> integer mappings.

``QParams`` holds a scale and a zero point, per tensor (0-d arrays) or per channel (1-d
arrays along ``axis``). The mappings follow ONNX QuantizeLinear / DequantizeLinear:

    q = saturate(round(x / scale) + zero_point)        x = (q - zero_point) * scale

computed in float32 (float64 for int32), rounding half to even by default, saturating
to the full range of the integer type (int4: [-8, 7], uint8: [0, 255], ...). The
scheme's narrow or reduced grid is respected by the scale itself: a tensor inside the
range its QParams were computed from never reaches the codes a narrow grid excludes.

Zero ranges: a scale is never 0, NaN or Inf. Any range whose scale would be smaller
than :data:`MIN_SCALE` (= float32 machine epsilon, 2**-23 ~ 1.19e-7, the floor PyTorch's
observers use too) gets ``MIN_SCALE``; an all-zero tensor therefore gets scale 2**-23
and zero point at the scheme's zero (0 for symmetric signed, qmin for affine).
A floor this size also keeps requantization multipliers s_in * s_w / s_out bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scheme import QuantScheme, _check_dtype, dtype_bits, dtype_is_signed, _DTYPE_INFO

__all__ = [
    "MIN_SCALE",
    "QParams",
    "compute_qparams",
    "quantize",
    "dequantize",
    "fake_quant",
    "ROUNDING_MODES",
]

MIN_SCALE: float = float(np.finfo(np.float32).eps)  # 2**-23

ROUNDING_MODES = ("half_to_even", "half_away_from_zero")


def _full_range(dtype: str) -> tuple[int, int]:
    bits = dtype_bits(dtype)
    if dtype_is_signed(dtype):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale and zero point of one quantized tensor.

    scale:      float32 array, 0-d for per-tensor, 1-d (one per channel) with ``axis``.
    zero_point: array of the storage dtype (int8 for int4, uint8 for uint4), same shape.
    axis:       None for per-tensor, else the channel axis of the tensor.
    dtype:      quantized type name ("int8", "uint8", "int16", "int4", "uint4", "int32").

    The arrays are read-only copies. Equality and hashing compare values.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    dtype: str = "int8"

    def __post_init__(self) -> None:
        _check_dtype(self.dtype)
        scale = np.array(self.scale, dtype=np.float32)  # copy
        if self.axis is None:
            if scale.size != 1:
                raise ValueError(f"per-tensor QParams need one scale, got shape {scale.shape}")
            scale = scale.reshape(())
        else:
            if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
                raise ValueError(f"QParams axis must be None or an int, got {self.axis!r}")
            object.__setattr__(self, "axis", int(self.axis))
            if scale.ndim != 1:
                raise ValueError(
                    f"per-channel QParams need a 1-d scale, got shape {scale.shape}"
                )
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"QParams scale must be finite and > 0, got {scale}")
        zp_raw = np.asarray(self.zero_point)
        if zp_raw.dtype.kind not in "iu":
            if zp_raw.dtype.kind != "f" or not np.all(zp_raw == np.round(zp_raw)):
                raise ValueError(f"QParams zero point must be integers, got {zp_raw}")
        lo, hi = _full_range(self.dtype)
        if np.any(zp_raw < lo) or np.any(zp_raw > hi):
            raise ValueError(
                f"QParams zero point {zp_raw} is outside the {self.dtype} range [{lo}, {hi}]"
            )
        zp = np.array(np.broadcast_to(zp_raw, scale.shape), dtype=_DTYPE_INFO[self.dtype][2])
        scale.setflags(write=False)
        zp.setflags(write=False)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp)

    # ---- properties -------------------------------------------------------------------

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def num_channels(self) -> int:
        return 1 if self.axis is None else int(self.scale.shape[0])

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(_DTYPE_INFO[self.dtype][2])

    @property
    def onnx_dtype(self) -> int:
        return _DTYPE_INFO[self.dtype][3]

    @property
    def qmin(self) -> int:
        """Lowest code of the integer type (where QuantizeLinear saturates)."""
        return _full_range(self.dtype)[0]

    @property
    def qmax(self) -> int:
        """Highest code of the integer type (where QuantizeLinear saturates)."""
        return _full_range(self.dtype)[1]

    # ---- value semantics --------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QParams):
            return NotImplemented
        return (
            self.axis == other.axis
            and self.dtype == other.dtype
            and self.scale.shape == other.scale.shape
            and bool(np.array_equal(self.scale, other.scale))
            and bool(np.array_equal(self.zero_point, other.zero_point))
        )

    def __hash__(self) -> int:
        return hash((self.axis, self.dtype, self.scale.tobytes(), self.zero_point.tobytes()))

    def __repr__(self) -> str:
        if self.axis is None:
            return (
                f"QParams({self.dtype}, scale={float(self.scale):.6g}, "
                f"zero_point={int(self.zero_point)})"
            )
        n = self.scale.shape[0]
        sc = np.array2string(self.scale, precision=4, threshold=6)
        zp = np.array2string(self.zero_point, threshold=6)
        return f"QParams({self.dtype}, axis={self.axis}, channels={n}, scale={sc}, zero_point={zp})"


# ---- parameter computation ------------------------------------------------------------


def _scale_zero_point(
    lo: np.ndarray, hi: np.ndarray, scheme: QuantScheme
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised core of compute_qparams: float64 lo/hi arrays -> (float32 scale, int64 zp).

    No validation; lo <= hi assumed. Works on any array shape (used by the MSE search).
    """
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    qmin, qmax = scheme.qmin, scheme.qmax
    if scheme.symmetric:
        zp0 = scheme.symmetric_zero_point
        half = min(qmax - zp0, zp0 - qmin)
        absmax = np.maximum(-lo, hi)
        scale = absmax / half
        scale = np.maximum(scale, MIN_SCALE).astype(np.float32)
        scale = np.where(scale < MIN_SCALE, np.float32(MIN_SCALE), scale)
        zp = np.full(scale.shape, zp0, dtype=np.int64)
        return scale, zp
    scale = (hi - lo) / (qmax - qmin)
    scale = np.maximum(scale, MIN_SCALE).astype(np.float32)
    scale = np.where(scale < MIN_SCALE, np.float32(MIN_SCALE), scale)
    zp = np.rint(qmin - lo / scale.astype(np.float64))
    zp = np.clip(zp, qmin, qmax).astype(np.int64)
    return scale, zp


def compute_qparams(lo, hi, scheme: QuantScheme) -> QParams:
    """QParams covering the range [lo, hi] (extended to include 0) on ``scheme``'s grid.

    lo/hi are scalars for a per-tensor scheme, or 1-d arrays (one entry per channel) for
    a per-channel scheme. Symmetric: scale = max(|lo|, |hi|) / h with h the number of
    codes on the shorter side of the zero point (127 for int8, 127 for uint8 around 128,
    63 with reduce_range), zero point 0 (signed) or the grid middle (unsigned).
    Affine: scale = (hi - lo) / (qmax - qmin), zero point = round(qmin - lo / scale).
    Scales below MIN_SCALE (zero ranges included) become MIN_SCALE.
    """
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    try:
        lo_a, hi_a = np.broadcast_arrays(lo_a, hi_a)
    except ValueError:
        raise ValueError(f"lo and hi have different shapes: {lo_a.shape} vs {hi_a.shape}") from None
    if not (np.all(np.isfinite(lo_a)) and np.all(np.isfinite(hi_a))):
        raise ValueError(f"quantization range must be finite, got lo={lo}, hi={hi}")
    if np.any(lo_a > hi_a):
        raise ValueError(f"quantization range has lo > hi: lo={lo}, hi={hi}")
    if scheme.axis is None:
        if lo_a.size != 1:
            raise ValueError(
                f"a per-tensor scheme needs scalar lo/hi, got shape {lo_a.shape}"
            )
        lo_a = lo_a.reshape(())
        hi_a = hi_a.reshape(())
    elif lo_a.ndim != 1:
        raise ValueError(
            f"a per-channel scheme needs 1-d lo/hi (one per channel), got shape {lo_a.shape}"
        )
    with np.errstate(over="ignore"):
        scale, zp = _scale_zero_point(lo_a, hi_a, scheme)
    if not np.all(np.isfinite(scale)):
        raise ValueError(f"quantization range [{lo}, {hi}] is too wide for a float32 scale")
    return QParams(scale=scale, zero_point=zp, axis=scheme.axis, dtype=scheme.dtype)


# ---- mappings -------------------------------------------------------------------------


def _round_half_away(v: np.ndarray) -> np.ndarray:
    t = np.trunc(v)
    frac = v - t  # exact for floats
    return t + np.where(np.abs(frac) >= 0.5, np.sign(v), 0).astype(v.dtype)


def _round(v: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "half_to_even":
        return np.rint(v)
    if rounding == "half_away_from_zero":
        return _round_half_away(v)
    raise ValueError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDING_MODES)}")


def _broadcast_params(qp: QParams, ndim: int, shape: tuple[int, ...]):
    """scale and zero point shaped to broadcast against a tensor of ``shape``."""
    if qp.axis is None:
        return qp.scale, qp.zero_point
    axis = qp.axis + ndim if qp.axis < 0 else qp.axis
    if not 0 <= axis < ndim:
        raise ValueError(f"QParams axis {qp.axis} is out of range for a tensor of rank {ndim}")
    if shape[axis] != qp.scale.shape[0]:
        raise ValueError(
            f"tensor has {shape[axis]} channels on axis {qp.axis} but QParams have "
            f"{qp.scale.shape[0]}"
        )
    bshape = [1] * ndim
    bshape[axis] = shape[axis]
    return qp.scale.reshape(bshape), qp.zero_point.reshape(bshape)


def quantize(
    x,
    qp: QParams,
    rounding: str = "half_to_even",
    *,
    qmin: int | None = None,
    qmax: int | None = None,
) -> np.ndarray:
    """Float -> integer codes, as ONNX QuantizeLinear (default rounding half to even).

    Returns an array of ``qp.np_dtype``. ``rounding="half_away_from_zero"`` rounds ties
    away from zero instead. Saturates to the integer type's range, or to [qmin, qmax]
    when given (to clamp to a narrow or reduced grid). NaN maps to the zero point.
    """
    x = np.asarray(x)
    lo, hi = qp.qmin, qp.qmax
    if qmin is not None:
        lo = max(lo, int(qmin))
    if qmax is not None:
        hi = min(hi, int(qmax))
    ftype = np.float64 if qp.dtype == "int32" else np.float32
    scale, zp = _broadcast_params(qp, x.ndim, x.shape)
    scale, zp = scale.astype(ftype), zp.astype(ftype)
    if x.ndim == 0 or x.nbytes <= _QUANTIZE_BLOCK:
        return _quantize_block(x, scale, zp, lo, hi, rounding, ftype, qp.np_dtype)
    # A large tensor goes in blocks of rows: the float temporaries stay small (a 1 GB weight
    # would need about 3 GB of them at once).
    out = np.empty(x.shape, qp.np_dtype)
    step = max(1, _QUANTIZE_BLOCK // max(1, x[0].nbytes))
    rows = lambda p: np.ndim(p) == x.ndim and p.shape[0] == x.shape[0] > 1  # noqa: E731
    for i in range(0, x.shape[0], step):
        b = slice(i, i + step)
        out[b] = _quantize_block(x[b], scale[b] if rows(scale) else scale, zp[b] if rows(zp) else zp,
                                 lo, hi, rounding, ftype, qp.np_dtype)
    return out


_QUANTIZE_BLOCK = 16 << 20  # bytes of input quantized at once


def _quantize_block(x, scale, zp, lo, hi, rounding, ftype, out_dtype) -> np.ndarray:
    v = x.astype(ftype, copy=False) / scale
    v = _round(v, rounding) + zp
    if np.isnan(v).any():
        v = np.where(np.isnan(v), zp, v)
    v = np.clip(v, lo, hi)
    return v.astype(out_dtype)


def dequantize(q, qp: QParams) -> np.ndarray:
    """Integer codes -> float32, as ONNX DequantizeLinear: (q - zero_point) * scale."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"dequantize expects integer codes, got dtype {q.dtype}")
    scale, zp = _broadcast_params(qp, q.ndim, q.shape)
    diff = q.astype(np.int64) - zp.astype(np.int64)
    if qp.dtype == "int32":
        return (diff.astype(np.float64) * scale.astype(np.float64)).astype(np.float32)
    return diff.astype(np.float32) * scale


def fake_quant(
    x,
    qp: QParams,
    rounding: str = "half_to_even",
    *,
    qmin: int | None = None,
    qmax: int | None = None,
) -> np.ndarray:
    """dequantize(quantize(x)): x snapped onto the quantization grid, as float32."""
    return dequantize(quantize(x, qp, rounding, qmin=qmin, qmax=qmax), qp)
