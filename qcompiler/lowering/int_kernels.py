"""The integer kernels of a program in NumPy, as the target would run them.

Kernels work on int8 / uint8 tensors in the target layout with exact int32 accumulation
(the dot products ride on float64 matrix products: a sum of int8 x int8 products stays far
below 2**53, so every partial sum is an exact integer), then apply the target's
requantization: Q31 fixed-point multipliers with the target's rounding
(qcompiler.lowering.fixed_point) or a float32 scale, and the output clamp.

Convolutions are vectorised as im2col + one matrix product per conv (per group for
grouped convs); depthwise convs as one multiply-add per filter tap over the whole tensor.
Each kernel is fn(node, args, prog, cache) -> outputs; `KERNELS` maps program ops to them.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List

import numpy as np

from .fixed_point import INT32_MAX, INT32_MIN, quantize_multiplier, requantize
from .geometry import (_conv_geometry, _pad_spatial, _pool_windows, _spatial_axes, _window_counts, _windows,
                       nearest_indices)
from .integers import dtype_range, round_float
from .layouts import block_of, convert_layout, is_blocked
from .program import Program

__all__ = ["KERNELS"]


def _bshape(layout: str, ndim: int, channel_count: int):
    """Shape that lays a per-channel vector (padded length) along the channel axes."""
    if is_blocked(layout) and ndim == 5:
        k = block_of(layout)
        return (1, channel_count // k, 1, 1, k)
    if layout == "NHWC":
        return (1, 1, 1, channel_count)
    shape = [1] * ndim
    shape[1 if ndim > 1 else 0] = channel_count
    return tuple(shape)


def _requant(acc: np.ndarray, node, args_q: List[np.ndarray], prog: Program, zero_point: int, qmin: int,
             qmax: int, bshape=None) -> np.ndarray:
    """Requantize int accumulators with the node's constants (fixed point or float scale)."""
    dtype = np.dtype(node.attrs.get("dtype", "int8"))
    if node.attrs.get("output") == "float":  # int8 in, float out: rescale, add the float bias
        scale = np.asarray(args_q[0], dtype=np.float32)
        fbias = np.asarray(args_q[1], dtype=np.float32) if len(args_q) > 1 else np.float32(0)
        if bshape is not None and scale.size > 1:
            scale = scale.reshape(bshape)
        if bshape is not None and fbias.size > 1:
            fbias = fbias.reshape(bshape)
        return acc.astype(np.float32) * scale + fbias
    if prog.requant == "float_scale":
        scale = np.asarray(args_q[0], dtype=np.float32)
        if bshape is not None and scale.size > 1:
            scale = scale.reshape(bshape)
        v = acc.astype(np.float32) * scale
        if len(args_q) > 1:  # a float bias in output steps, added before the rounding
            ybias = np.asarray(args_q[1], dtype=np.float32)
            v = v + (ybias.reshape(bshape) if bshape is not None and ybias.size > 1 else ybias)
        out = round_float(v, prog.rounding) + np.float32(zero_point)
        return np.clip(out, qmin, qmax).astype(dtype)
    mult, shift = np.asarray(args_q[0]), np.asarray(args_q[1])
    if bshape is not None and mult.size > 1:
        mult, shift = mult.reshape(bshape), shift.reshape(bshape)
    if mult.size == 1:
        mult, shift = mult.reshape(()), shift.reshape(())
    out = requantize(acc, mult, shift, zero_point, qmin, qmax, rounding=prog.rounding)
    return out.astype(dtype)


def _as_f64(view, order, shape):
    out = np.empty(shape, dtype=np.float64)
    out.reshape(view.transpose(order).shape)[...] = view.transpose(order)
    return out


def _matmul_exact(cols: np.ndarray, wmat: np.ndarray) -> np.ndarray:
    acc = cols @ wmat
    return acc.astype(np.int64)


def _k_quantize(node, args, prog, cache):
    a = node.attrs
    x = np.asarray(args[0], dtype=np.float32)
    lo, hi = dtype_range(a.get("dtype", "int8"))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        q = np.rint(np.nan_to_num(x / np.float32(a["scale"]))) + np.float32(a.get("zero_point", 0))
    return [np.clip(q, lo, hi).astype(np.dtype(a.get("dtype", "int8")))]


def _k_dequantize(node, args, prog, cache):
    a = node.attrs
    x = args[0]
    return [((x.astype(np.int32) - np.int32(a.get("zero_point", 0))).astype(np.float32)
             * np.float32(a["scale"]))]


def _k_layout_convert(node, args, prog, cache):
    a = node.attrs
    return [convert_layout(args[0], a["src"], a["dst"], a.get("channels"), a.get("pad_value", 0))]


def _conv_prepare(node, w, prog, cache):
    key = ("conv", node.name)
    if key in cache:
        return cache[key]
    a = node.attrs
    kind, layout = a["kind"], a["layout"]
    g = int(a.get("group", 1))
    mats = []
    if kind == "depthwise":
        if layout == "NCHW":
            mats = w[:, 0].astype(np.int32)  # [G, FH, FW]
        elif layout == "NHWC":
            mats = w.astype(np.int32)  # [FH, FW, G]
        else:
            mats = w[:, 0, 0].astype(np.int32)  # [Gb, FH, FW, k]
    elif layout == "NCHW":
        ocg = w.shape[0] // g
        mats = [w[i * ocg:(i + 1) * ocg].reshape(ocg, -1).T.astype(np.float64) for i in range(g)]
    elif layout == "NHWC":
        ocg = w.shape[0] // g
        mats = [w[i * ocg:(i + 1) * ocg].reshape(ocg, -1).T.astype(np.float64) for i in range(g)]
    elif kind == "first":  # {OCb, FH, FW, IC, 4}
        mats = [w.transpose(1, 2, 3, 0, 4).reshape(-1, w.shape[0] * w.shape[4]).astype(np.float64)]
    elif layout in ("NCHW44", "NCHW44_DOT"):
        order = (1, 2, 3, 4, 0, 5) if layout == "NCHW44" else (1, 2, 3, 5, 0, 4)
        ws = [w] if kind == "dense" else [w[i] for i in range(g)]
        for wi in ws:  # {OCb, ICb, FH, FW, 4, 4}
            mats.append(wi.transpose(order).reshape(-1, wi.shape[0] * 4).astype(np.float64))
    else:  # NC4HW4 / NC32HW32: {OC, ICb, FH, FW, k}
        ws = [w] if kind == "dense" else [w[i] for i in range(g)]
        for wi in ws:
            mats.append(wi.transpose(1, 2, 3, 4, 0).reshape(-1, wi.shape[0]).astype(np.float64))
    cache[key] = mats
    return mats


def _k_conv(node, args, prog, cache):
    a = node.attrs
    x, w, bias = args[0], args[1], args[2]
    q_args = args[3:]
    kind, layout = a["kind"], a["layout"]
    in_layout = a.get("in_layout", layout)
    g = int(a.get("group", 1))
    zx = int(a.get("x_zero_point", 0))
    kh, kw, sh, sw, dh, dw, pads, axes, ho, wo = _conv_geometry(a, x, in_layout)
    xp = _pad_spatial(x, axes, pads, zx)
    mats = _conv_prepare(node, w, prog, cache)
    n = x.shape[0]
    m = n * ho * wo
    bias = np.asarray(bias, dtype=np.int64)
    qmin, qmax, zy = int(a["qmin"]), int(a["qmax"]), int(a.get("y_zero_point", 0))

    if kind == "depthwise":
        xi = xp.astype(np.int32)
        if layout == "NHWC":
            acc = np.zeros((n, ho, wo, xi.shape[3]), dtype=np.int32)
        elif layout == "NCHW":
            acc = np.zeros((n, xi.shape[1], ho, wo), dtype=np.int32)
        else:
            acc = np.zeros((n, xi.shape[1], ho, wo, xi.shape[4]), dtype=np.int32)
        for i in range(kh):
            for j in range(kw):
                hs = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                ws_ = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                if layout == "NHWC":
                    acc += xi[:, hs, ws_, :] * mats[i, j][None, None, None, :]
                elif layout == "NCHW":
                    acc += xi[:, :, hs, ws_] * mats[:, i, j][None, :, None, None]
                else:
                    acc += xi[:, :, hs, ws_, :] * mats[:, i, j, :][None, :, None, None, :]
        bs = _bshape(layout, acc.ndim, bias.size)
        acc = acc.astype(np.int64) + bias.reshape(bs)
        return [_requant(acc, node, q_args, prog, zy, qmin, qmax, bs)]

    # im2col: rows = output pixels (n, ho, wo), columns in the packed weight's K order
    if in_layout == "NCHW":  # plain (or the first-layer kernel reading NCHW)
        v = _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo)  # [N, C, Ho, Wo, kh, kw]
        c = v.shape[1]
        if kind == "first":
            cols = [_as_f64(v, (0, 2, 3, 4, 5, 1), (m, kh * kw * c))]
        else:
            icg = c // g
            cols = [_as_f64(v[:, i * icg:(i + 1) * icg], (0, 2, 3, 1, 4, 5), (m, icg * kh * kw))
                    for i in range(g)]
    elif in_layout == "NHWC":
        v = _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo)  # [N, Ho, Wo, C, kh, kw]
        c = v.shape[3]
        icg = c // g
        cols = [_as_f64(v[:, :, :, i * icg:(i + 1) * icg], (0, 1, 2, 4, 5, 3), (m, kh * kw * icg))
                for i in range(g)]
    else:  # blocked: [N, Cb, H, W, k]
        v = _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo)  # [N, Cb, Ho, Wo, k, kh, kw]
        cb, k = v.shape[1], v.shape[4]
        cbg = cb // g
        cols = [_as_f64(v[:, i * cbg:(i + 1) * cbg], (0, 2, 3, 1, 5, 6, 4), (m, cbg * kh * kw * k))
                for i in range(g)]
    accs = [_matmul_exact(cm, wm) for cm, wm in zip(cols, mats)]
    acc = accs[0] if len(accs) == 1 else np.concatenate(accs, axis=1)  # [M, OCp]
    ocp = acc.shape[1]
    acc += bias.reshape(1, ocp)
    y = _requant(acc, node, q_args, prog, zy, qmin, qmax, (1, ocp))
    if layout == "NCHW":
        return [np.ascontiguousarray(y.reshape(n, ho, wo, ocp).transpose(0, 3, 1, 2))]
    if layout == "NHWC":
        return [y.reshape(n, ho, wo, ocp)]
    k = block_of(layout)
    return [np.ascontiguousarray(y.reshape(n, ho, wo, ocp // k, k).transpose(0, 3, 1, 2, 4))]


def _k_gemm(node, args, prog, cache):
    a = node.attrs
    x, w, bias = args[0], args[1], args[2]
    key = ("gemm", node.name)
    if key not in cache:
        cache[key] = w.astype(np.float64).T  # [K, N]
    wm = cache[key]
    lead = x.shape[:-1]
    za = int(a.get("a_zero_point", 0))
    xa = x.reshape(-1, x.shape[-1]).astype(np.float64) - za
    acc = _matmul_exact(xa, wm) + np.asarray(bias, dtype=np.int64).reshape(1, -1)
    y = _requant(acc, node, args[3:], prog, int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"]),
                 (1, acc.shape[1]))
    return [y.reshape(lead + (acc.shape[1],))]


def _domain_table(cache, key, lo, hi, fn):
    """fn evaluated once on every integer in [lo, hi] (cached): a lookup table that gives
    exactly fn's results when the kernel's input domain is small (int8 operands)."""
    if key not in cache:
        cache[key] = (lo, fn(np.arange(lo, hi + 1, dtype=np.int64)))
    return cache[key]


def _k_requant(node, args, prog, cache):
    a = node.attrs
    x = args[0]
    zx = int(a.get("x_zero_point", 0))
    lo, hi = dtype_range(x.dtype)
    base, table = _domain_table(cache, ("requant", node.name), lo - zx, hi - zx, lambda d: _requant(
        d, node, args[1:], prog, int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"])))
    return [table[x.astype(np.int32) - zx - base]]


def _k_add(node, args, prog, cache):
    a = node.attrs
    x, y = args[0], args[1]
    za, zb = int(a.get("a_zero_point", 0)), int(a.get("b_zero_point", 0))
    zy, qmin, qmax = int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"])
    dtype = np.dtype(a.get("dtype", "int8"))
    if prog.requant == "float_scale":
        sa, sb = np.float32(args[2]), np.float32(args[3])
        v = (x.astype(np.float32) - np.float32(za)) * sa + (y.astype(np.float32) - np.float32(zb)) * sb
        return [np.clip(round_float(v, prog.rounding) + zy, qmin, qmax).astype(dtype)]
    ls = int(a.get("left_shift", 20))
    r = prog.rounding
    ma, sa_, mb, sb_, my, sy = (np.asarray(v).reshape(()) for v in args[2:8])
    # each input: (q - zp) << left_shift, rescaled to the common scale (int8 domain: a table)
    lo_a, hi_a = dtype_range(x.dtype)
    lo_b, hi_b = dtype_range(y.dtype)
    ba, ta = _domain_table(cache, ("add_a", node.name), lo_a - za, hi_a - za, lambda d: requantize(
        d << ls, ma, sa_, 0, INT32_MIN, INT32_MAX, rounding=r).astype(np.int32))
    bb, tb = _domain_table(cache, ("add_b", node.name), lo_b - zb, hi_b - zb, lambda d: requantize(
        d << ls, mb, sb_, 0, INT32_MIN, INT32_MAX, rounding=r).astype(np.int32))
    acc = ta[x.astype(np.int32) - za - ba] + tb[y.astype(np.int32) - zb - bb]
    return [requantize(acc, my, sy, zy, qmin, qmax, rounding=r).astype(dtype)]


def _k_mul(node, args, prog, cache):
    a = node.attrs
    x, y = args[0], args[1]
    za, zb = int(a.get("a_zero_point", 0)), int(a.get("b_zero_point", 0))
    lo_a, hi_a = dtype_range(x.dtype)
    lo_b, hi_b = dtype_range(y.dtype)
    corners = [(p - za) * (q - zb) for p in (lo_a, hi_a) for q in (lo_b, hi_b)]
    base, table = _domain_table(cache, ("mul", node.name), min(corners), max(corners), lambda d: _requant(
        d, node, args[2:], prog, int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"])))
    prod = (x.astype(np.int32) - za) * (y.astype(np.int32) - zb)
    return [table[prod - base]]


def _phys_axis(layout: str, axis: int, ndim: int) -> int:
    axis = axis + 4 if axis < 0 and layout != "NCHW" else axis
    if layout == "NHWC":
        return {0: 0, 1: 3, 2: 1, 3: 2}[axis]
    return axis  # plain and blocked (channel blocks at axis 1)


def _k_concat(node, args, prog, cache):
    a = node.attrs
    layout = a.get("layout", "NCHW")
    return [np.concatenate(args, axis=_phys_axis(layout, int(a["axis"]), args[0].ndim))]


def _k_maxpool(node, args, prog, cache):
    x = args[0]
    lo, _ = dtype_range(x.dtype)
    v, _ = _pool_windows(x, node.attrs, node.attrs.get("layout", "NCHW"), lo)
    return [np.ascontiguousarray(v.max(axis=(-2, -1)))]


def _pool_requant(acc, counts, node, args, prog, cache, bshape_spatial):
    a = node.attrs
    ratio = float(np.asarray(args[1], dtype=np.float64).reshape(-1)[0])
    zy, qmin, qmax = int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"])
    dtype = np.dtype(a.get("dtype", "int8"))
    counts = np.asarray(counts, dtype=np.int64)
    if prog.requant == "float_scale":
        scale = (np.float32(ratio) / counts.astype(np.float32)).reshape(bshape_spatial)
        v = acc.astype(np.float32) * scale
        return np.clip(round_float(v, prog.rounding) + zy, qmin, qmax).astype(dtype)
    mult, shift = quantize_multiplier(ratio / counts.astype(np.float64))
    mult = np.asarray(mult).reshape(bshape_spatial)
    shift = np.asarray(shift).reshape(bshape_spatial)
    return requantize(acc, mult, shift, zy, qmin, qmax, rounding=prog.rounding).astype(dtype)


def _k_avgpool(node, args, prog, cache):
    a = node.attrs
    layout = a.get("layout", "NCHW")
    x = args[0]
    zx = int(a.get("x_zero_point", 0))
    xi = x.astype(np.int32) - zx
    v, geo = _pool_windows(xi, a, layout, 0)
    acc = v.sum(axis=(-2, -1), dtype=np.int64)
    counts = _window_counts(geo, bool(a.get("count_include_pad", 0)))
    axes = geo[-1]
    bs = [1] * acc.ndim
    bs[axes[0]], bs[axes[1]] = counts.shape
    return [_pool_requant(acc, counts, node, args, prog, cache, tuple(bs))]


def _k_global_avgpool(node, args, prog, cache):
    a = node.attrs
    layout = a.get("layout", "NCHW")
    x = args[0]
    axes = _spatial_axes(layout)
    acc = (x.astype(np.int64) - int(a.get("x_zero_point", 0))).sum(axis=axes, keepdims=True)
    count = x.shape[axes[0]] * x.shape[axes[1]]
    return [_pool_requant(acc, np.asarray([count]), node, args, prog, cache, ())]


def _k_resize(node, args, prog, cache):
    a = node.attrs
    layout = a.get("layout", "NCHW")
    x = args[0]
    axes = _spatial_axes(layout)
    y = x
    for i, ax in enumerate(axes):
        n_in = x.shape[ax]
        if a.get("sizes"):
            n_out = int(a["sizes"][i])
            scale = n_out / n_in
        else:
            scale = float(a["scales"][i])
            n_out = int(math.floor(n_in * scale))
        idx = nearest_indices(n_in, n_out, scale, a.get("coordinate_transformation_mode", "half_pixel"),
                              a.get("nearest_mode", "round_prefer_floor"))
        y = y.take(idx, axis=ax)
    return [np.ascontiguousarray(y)]


def _k_lut(node, args, prog, cache):
    x, table = args[0], args[1]
    lo, _ = dtype_range(x.dtype)
    return [table[x.astype(np.int32) - lo]]


KERNELS: Dict[str, Callable] = {
    "Quantize": _k_quantize,
    "Dequantize": _k_dequantize,
    "LayoutConvert": _k_layout_convert,
    "Conv": _k_conv,
    "Gemm": _k_gemm,
    "Requant": _k_requant,
    "Add": _k_add,
    "Mul": _k_mul,
    "Concat": _k_concat,
    "MaxPool": _k_maxpool,
    "AveragePool": _k_avgpool,
    "GlobalAveragePool": _k_global_avgpool,
    "Resize": _k_resize,
    "Lut": _k_lut,
}
