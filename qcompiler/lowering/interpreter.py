"""The integer reference interpreter: runs a lowered Program in NumPy as the target would.

Integer kernels work on int8 / uint8 tensors in the target layout with exact int32
accumulation (the dot products ride on float64 matrix products: a sum of int8 x int8
products stays far below 2**53, so every partial sum is an exact integer), then apply the
target's requantization: Q31 fixed-point multipliers with the target's rounding
(qcompiler.lowering.fixed_point) or a float32 scale, and the output clamp. Floats appear
only at Dequantize and in the ops the program keeps in float (standard ONNX ops, run by
the small NumPy op library at the end of this module).

Convolutions are vectorised as im2col + one matrix product per conv (per group for
grouped convs); depthwise convs as one multiply-add per filter tap over the whole tensor.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ModelError, UsageError
from .fixed_point import INT32_MAX, INT32_MIN, quantize_multiplier, requantize
from .layouts import block_of, convert_layout, is_blocked
from .program import DOMAIN, Program

__all__ = ["run_program", "FLOAT_OPS", "run_float_op", "round_float", "dtype_range"]

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


# ============================================================================= entry point

def run_program(prog: Program, feeds: Mapping[str, np.ndarray], poison_padding: bool = False,
                keep: Sequence[str] = (),
                observe: Optional[Callable[[str, np.ndarray], Optional[np.ndarray]]] = None
                ) -> Dict[str, np.ndarray]:
    """Execute `prog` on `feeds` (input name -> array) and return {output name: array}.

    poison_padding: fill the padded lanes of every blocked tensor with random values as
    soon as it is produced, which proves that padding never leaks into real channels.
    keep: extra tensor names to return (for debugging), in their physical layout.
    observe: called as observe(name, value) for every tensor produced; a returned array
    replaces the value (verify_program's layer-wise mode feeds reference values this way).
    """
    env: Dict[str, np.ndarray] = {}
    for name in prog.inputs:
        if name not in feeds:
            raise UsageError(f"the program needs input '{name}'", f"inputs: {', '.join(prog.inputs)}")
        info = prog.tensors[name]
        env[name] = np.asarray(feeds[name]).astype(np.dtype(info.dtype), copy=False)
    unknown = sorted(set(feeds) - set(prog.inputs))
    if unknown:
        raise UsageError(f"the program has no input '{unknown[0]}'", f"inputs: {', '.join(prog.inputs)}")
    consts = prog.constants
    cache = prog.__dict__.setdefault("_prepared", {})
    rng = np.random.default_rng(1234) if poison_padding else None
    for node in prog.nodes:
        args = [None if not i else (consts[i] if i in consts else env[i]) for i in node.inputs]
        try:
            if node.domain == DOMAIN:
                fn = KERNELS.get(node.op)
                if fn is None:
                    raise ModelError(f"program node '{node.name}' uses unknown kernel '{node.op}'",
                                     "the program was written by a newer qcompiler")
                outs = fn(node, args, prog, cache)
            else:
                attrs = node.attrs
                if node.op == "Split":
                    attrs = dict(attrs, _num_outputs=len(node.outputs))
                outs = run_float_op(node.op, args, attrs)
        except (ModelError, UsageError):
            raise
        except Exception as e:
            raise ModelError(f"program node '{node.name}' ({node.op}) failed: {type(e).__name__}: {e}",
                             "check the input shapes against the program's inputs") from None
        for name, val in zip(node.outputs, outs):
            if name:
                if rng is not None:
                    val = _poison(prog, name, val, rng)
                if observe is not None:
                    repl = observe(name, val)
                    if repl is not None:
                        val = repl
                env[name] = val
    result = {name: env[name] for name in prog.outputs}
    for name in keep:
        result[name] = env[name] if name in env else consts[name]
    return result


def _poison(prog, name, val, rng):
    info = prog.tensors.get(name)
    if info is None or not is_blocked(info.layout) or info.channels is None or val.ndim != 5:
        return val
    k = block_of(info.layout)
    c = info.channels
    if c % k == 0:
        return val
    lo, hi = dtype_range(val.dtype)
    val = val.copy()
    val[:, -1, :, :, c % k:] = rng.integers(lo, hi + 1, size=val[:, -1, :, :, c % k:].shape)
    return val


# ============================================================================= helpers

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


def _spatial_axes(layout: str):
    return (1, 2) if layout == "NHWC" else (2, 3)


def _pad_spatial(x, axes, pads, value):
    """pads: (top, left, bottom, right)."""
    t, l, b, r = (int(p) for p in pads)
    if not (t or l or b or r):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axes[0]] = (t, b)
    widths[axes[1]] = (l, r)
    return np.pad(x, widths, mode="constant", constant_values=value)


def _out_size(size, k, s, d, p0, p1, ceil_mode=False):
    eff = d * (k - 1) + 1
    num = size + p0 + p1 - eff
    if ceil_mode:
        out = -(-num // s) + 1
        # the last window must start inside the input or its leading padding
        if (out - 1) * s >= size + p0:
            out -= 1
        return out
    return num // s + 1


def _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo):
    """View [..., Ho, Wo, ..., kh, kw]: sliding windows over the two spatial axes."""
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    v = sliding_window_view(xp, (eh, ew), axis=axes)
    sl = [slice(None)] * v.ndim
    sl[axes[0]] = slice(0, sh * (ho - 1) + 1, sh)
    sl[axes[1]] = slice(0, sw * (wo - 1) + 1, sw)
    sl[-2] = slice(None, None, dh)
    sl[-1] = slice(None, None, dw)
    return v[tuple(sl)]


def _conv_geometry(a, x, layout_in):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    axes = _spatial_axes(layout_in)
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    ho = _out_size(h, kh, sh, dh, pads[0], pads[2])
    wo = _out_size(w, kw, sw, dw, pads[1], pads[3])
    return kh, kw, sh, sw, dh, dw, pads, axes, ho, wo


def _as_f64(view, order, shape):
    out = np.empty(shape, dtype=np.float64)
    out.reshape(view.transpose(order).shape)[...] = view.transpose(order)
    return out


def _matmul_exact(cols: np.ndarray, wmat: np.ndarray) -> np.ndarray:
    acc = cols @ wmat
    return acc.astype(np.int64)


# ============================================================================= kernels

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


def _pool_windows(x, a, layout, pad_value):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pads = list(a.get("pads", [0, 0, 0, 0]))
    ceil_mode = bool(a.get("ceil_mode", 0))
    axes = _spatial_axes(layout)
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    ho = _out_size(h, kh, sh, dh, pads[0], pads[2], ceil_mode)
    wo = _out_size(w, kw, sw, dw, pads[1], pads[3], ceil_mode)
    extra_h = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - (h + pads[0] + pads[2]))
    extra_w = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - (w + pads[1] + pads[3]))
    full = [pads[0], pads[1], pads[2] + extra_h, pads[3] + extra_w]
    xp = _pad_spatial(x, axes, full, pad_value)
    v = _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo)
    return v, (h, w, ho, wo, pads, full, kh, kw, sh, sw, dh, dw, axes)


def _k_maxpool(node, args, prog, cache):
    x = args[0]
    lo, _ = dtype_range(x.dtype)
    v, _ = _pool_windows(x, node.attrs, node.attrs.get("layout", "NCHW"), lo)
    return [np.ascontiguousarray(v.max(axis=(-2, -1)))]


def _window_counts(geo, include_pad):
    h, w, ho, wo, pads, full, kh, kw, sh, sw, dh, dw, axes = geo
    ones = np.ones((h, w), dtype=np.int64)
    # explicit padding counts when include_pad; the ceil_mode overhang never counts
    if include_pad:
        ones = np.pad(ones, ((pads[0], pads[2]), (pads[1], pads[3])), constant_values=1)
        ones = np.pad(ones, ((0, full[2] - pads[2]), (0, full[3] - pads[3])))
    else:
        ones = np.pad(ones, ((full[0], full[2]), (full[1], full[3])))
    v = _windows(ones, (0, 1), kh, kw, sh, sw, dh, dw, ho, wo)
    return v.sum(axis=(-2, -1))  # [Ho, Wo]


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


def source_coords(n_in, n_out, scale, mode):
    o = np.arange(n_out, dtype=np.float64)
    if mode == "asymmetric":
        return o / scale
    if mode == "align_corners":
        return o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(o)
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(o)
    if mode == "tf_half_pixel_for_nearest":
        return (o + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adj = n_out / (n_in * scale)
        center = n_in / 2.0
        off = center * (1 - adj)
        return off + (o + 0.5) / scale - 0.5
    return (o + 0.5) / scale - 0.5  # half_pixel


def nearest_indices(n_in, n_out, scale, coord_mode, nearest_mode):
    x = source_coords(n_in, n_out, scale, coord_mode)
    if nearest_mode == "round_prefer_ceil":
        i = np.floor(x + 0.5)
    elif nearest_mode == "floor":
        i = np.floor(x)
    elif nearest_mode == "ceil":
        i = np.ceil(x)
    else:  # round_prefer_floor
        i = np.ceil(x - 0.5)
    return np.clip(i, 0, n_in - 1).astype(np.int64)


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


# ============================================================================= float ops
# The ops a program keeps in float (and integer data movement in NCHW), with ONNX
# semantics, in NumPy. Each takes the input list (None for an omitted optional input)
# and the attribute dict and returns the output list.

def _f(fn):
    return lambda ins, at: [fn(*ins[:1], at)]


def _unary(fn):
    return lambda ins, at: [fn(ins[0]).astype(ins[0].dtype, copy=False)]


def _binary(fn):
    def run(ins, at):
        a, b = ins[0], ins[1]
        out = fn(a, b)
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and fn is np.divide:
            out = np.trunc(out).astype(np.result_type(a, b))
        return [np.asarray(out).astype(np.result_type(a, b), copy=False)]
    return run


def _clip(ins, at):
    x = ins[0]
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else at.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else at.get("max")
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype))
    return [y]


def _sigmoid(x):
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _hard_sigmoid(x, at):
    alpha = np.float32(at.get("alpha", 0.2))
    beta = np.float32(at.get("beta", 0.5))
    return np.clip(alpha * x + beta, 0, 1).astype(x.dtype)


def _hard_swish(x, at):
    return (x * np.clip(x * np.float32(1.0 / 6.0) + np.float32(0.5), 0, 1)).astype(x.dtype)


def _leaky(x, at):
    alpha = np.float32(at.get("alpha", 0.01))
    return np.where(x >= 0, x, x * alpha).astype(x.dtype)


def _elu(x, at):
    alpha = np.float32(at.get("alpha", 1.0))
    return np.where(x >= 0, x, alpha * (np.exp(x) - 1)).astype(x.dtype)


def _softmax(ins, at, log=False):
    x = ins[0]
    axis = int(at.get("axis", -1))
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    return [((x - m) - np.log(s)) if log else e / s]


def _cast(ins, at):
    from onnx import helper

    to = helper.tensor_dtype_to_np_dtype(int(at["to"]))
    return [ins[0].astype(to)]


def _reshape(ins, at):
    x, shape = ins[0], [int(s) for s in ins[1]]
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(ins, at):
    x = ins[0]
    axis = int(at.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def _axes(ins, at, idx=1):
    if len(ins) > idx and ins[idx] is not None:
        return [int(a) for a in np.asarray(ins[idx]).reshape(-1)]
    ax = at.get("axes")
    return None if ax is None else [int(a) for a in ax]


def _squeeze(ins, at):
    axes = _axes(ins, at)
    return [np.squeeze(ins[0], axis=None if axes is None else tuple(axes))]


def _unsqueeze(ins, at):
    x = ins[0]
    axes = sorted(a + x.ndim + len(_axes(ins, at)) if a < 0 else a for a in _axes(ins, at))
    for a in axes:
        x = np.expand_dims(x, a)
    return [x]


def _transpose(ins, at):
    perm = at.get("perm")
    return [np.asarray(np.transpose(ins[0], perm), order="C")]


def _concat(ins, at):
    return [np.concatenate([np.asarray(i) for i in ins if i is not None], axis=int(at["axis"]))]


def _gather(ins, at):
    return [np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=int(at.get("axis", 0)))]


def _slice(ins, at):
    x = ins[0]
    if len(ins) > 1:
        starts = np.asarray(ins[1]).reshape(-1)
        ends = np.asarray(ins[2]).reshape(-1)
        axes = np.asarray(ins[3]).reshape(-1) if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
        steps = np.asarray(ins[4]).reshape(-1) if len(ins) > 4 and ins[4] is not None else np.ones(len(starts))
    else:
        starts, ends = np.asarray(at["starts"]), np.asarray(at["ends"])
        axes = np.asarray(at.get("axes", list(range(len(starts)))))
        steps = np.ones(len(starts))
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) + x.ndim if int(a) < 0 else int(a)
        dim = x.shape[a]
        s, e, st = int(s), int(e), int(st)
        if st > 0:
            s = max(0, min(dim, s + dim if s < 0 else s))
            e = max(0, min(dim, e + dim if e < 0 else e))
        else:
            s = max(-1, min(dim - 1, s + dim if s < 0 else s))
            e = max(-1, min(dim - 1, e + dim if e < 0 else e))
            if e < 0:
                e = None
        sl[a] = slice(s, e, st)
    return [x[tuple(sl)]]


def _split(ins, at):
    x = ins[0]
    axis = int(at.get("axis", 0))
    split = None
    if len(ins) > 1 and ins[1] is not None:
        split = [int(s) for s in ins[1]]
    elif at.get("split"):
        split = [int(s) for s in at["split"]]
    n_out = int(at.get("_num_outputs", at.get("num_outputs", len(split) if split else 2)))
    if split is None:
        size = x.shape[axis]
        chunk = -(-size // n_out)
        split = [min(chunk, size - i * chunk) for i in range(n_out)]
    idx = np.cumsum(split)[:-1]
    return list(np.split(x, idx, axis=axis))


def _expand(ins, at):
    shape = [int(s) for s in ins[1]]
    return [ins[0] * np.ones(shape, dtype=ins[0].dtype)]


def _reduce(fn):
    def run(ins, at):
        axes = _axes(ins, at)
        keep = bool(at.get("keepdims", 1))
        if axes is not None and len(axes) == 0 and at.get("noop_with_empty_axes", 0):
            return [ins[0]]
        out = fn(ins[0], axis=None if not axes else tuple(axes), keepdims=keep)
        return [np.asarray(out).astype(ins[0].dtype, copy=False)]
    return run


def _float_windows(x, at, pad_value):
    kh, kw = at["kernel_shape"]
    fake = dict(at)
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        fake["pads"] = same_pads(x.shape[2:], at["kernel_shape"], at.get("strides", [1, 1]),
                                 at.get("dilations", [1, 1]), at["auto_pad"])
    return _pool_windows(x, fake, "NCHW", pad_value)


def same_pads(spatial, kernel, strides, dilations, auto_pad):
    pads_begin, pads_end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-int(size) // int(s))
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
        small = total // 2
        big = total - small
        if auto_pad == "SAME_UPPER":
            pads_begin.append(small)
            pads_end.append(big)
        else:
            pads_begin.append(big)
            pads_end.append(small)
    return pads_begin + pads_end


def _maxpool_f(ins, at):
    x = ins[0]
    lo = -np.inf if x.dtype.kind == "f" else dtype_range(x.dtype)[0]
    v, _ = _float_windows(x, at, lo)
    return [np.ascontiguousarray(v.max(axis=(-2, -1)))]


def _avgpool_f(ins, at):
    x = ins[0]
    v, geo = _float_windows(x, at, 0)
    s = v.sum(axis=(-2, -1), dtype=np.float64)
    counts = _window_counts(geo, bool(at.get("count_include_pad", 0)))
    return [(s / counts[None, None]).astype(x.dtype)]


def _gap_f(ins, at):
    return [ins[0].mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(ins[0].dtype)]


def _gmp_f(ins, at):
    return [ins[0].max(axis=(2, 3), keepdims=True)]


def _conv_f(ins, at):
    x, w = ins[0].astype(np.float32), ins[1].astype(np.float32)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = int(at.get("group", 1))
    kh, kw = w.shape[2], w.shape[3]
    a = {"kernel_shape": [kh, kw], "strides": at.get("strides", [1, 1]), "dilations": at.get("dilations", [1, 1]),
         "pads": at.get("pads", [0, 0, 0, 0])}
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        a["pads"] = same_pads(x.shape[2:], [kh, kw], a["strides"], a["dilations"], at["auto_pad"])
    kh, kw, sh, sw, dh, dw, pads, axes, ho, wo = _conv_geometry(a, x, "NCHW")
    xp = _pad_spatial(x, axes, pads, 0)
    v = _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo)  # [N, C, Ho, Wo, kh, kw]
    n, c = x.shape[:2]
    icg, oc = c // g, w.shape[0]
    ocg = oc // g
    outs = []
    for i in range(g):
        cols = v[:, i * icg:(i + 1) * icg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
        outs.append(cols @ w[i * ocg:(i + 1) * ocg].reshape(ocg, -1).T)
    y = np.concatenate(outs, axis=1) if g > 1 else outs[0]
    if b is not None:
        y = y + b.reshape(1, -1)
    return [np.ascontiguousarray(y.reshape(n, ho, wo, oc).transpose(0, 3, 1, 2)).astype(np.float32)]


def _conv_transpose_f(ins, at):
    x, w = ins[0].astype(np.float32), ins[1].astype(np.float32)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = int(at.get("group", 1))
    n, c, h, wd = x.shape
    cpg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    sh, sw = at.get("strides", [1, 1])
    dh, dw = at.get("dilations", [1, 1])
    pads = list(at.get("pads", [0, 0, 0, 0]))
    opad = list(at.get("output_padding", [0, 0]))
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + opad[0]
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + opad[1]
    if at.get("output_shape"):
        oh, ow = at["output_shape"][-2:]
        th, tw = full_h - oh, full_w - ow
        if at.get("auto_pad", "NOTSET") == "SAME_UPPER":
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        else:
            pads = [th - th // 2, tw - tw // 2, th // 2, tw // 2]
    elif at.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        oh, ow = h * sh, wd * sw
        th, tw = full_h - oh, full_w - ow
        if at["auto_pad"] == "SAME_UPPER":
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        else:
            pads = [th - th // 2, tw - tw // 2, th // 2, tw // 2]
    oc = cpg * g
    icg = c // g
    out = np.zeros((n, oc, full_h, full_w), dtype=np.float64)
    for gi in range(g):
        xg = x[:, gi * icg:(gi + 1) * icg]  # [N, icg, H, W]
        wg = w[gi * icg:(gi + 1) * icg]  # [icg, cpg, kh, kw]
        # contributions [N, H, W, cpg, kh, kw]
        contrib = np.tensordot(xg, wg, axes=([1], [0]))  # [N, H, W, cpg, kh, kw]
        for i in range(kh):
            for j in range(kw):
                out[:, gi * cpg:(gi + 1) * cpg, i * dh: i * dh + sh * (h - 1) + 1: sh,
                    j * dw: j * dw + sw * (wd - 1) + 1: sw] += contrib[..., i, j].transpose(0, 3, 1, 2)
    out = out[:, :, pads[0]: full_h - pads[2], pads[1]: full_w - pads[3]]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return [np.ascontiguousarray(out).astype(np.float32)]


def _batchnorm_f(ins, at):
    x, gamma, beta, mean, var = ins[:5]
    eps = float(at.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = (gamma / np.sqrt(var + np.float32(eps))).astype(np.float32)
    return [(x - mean.reshape(shape)) * a.reshape(shape) + beta.reshape(shape)]


def _matmul_f(ins, at):
    return [np.matmul(ins[0], ins[1])]


def _gemm_f(ins, at):
    a, b = ins[0], ins[1]
    if at.get("transA", 0):
        a = a.T
    if at.get("transB", 0):
        b = b.T
    y = np.float32(at.get("alpha", 1.0)) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + np.float32(at.get("beta", 1.0)) * ins[2]
    return [y.astype(ins[0].dtype)]


def _resize_f(ins, at):
    x = ins[0]
    scales = sizes = None
    if len(ins) == 2 and ins[1] is not None:  # opset 10: (X, scales)
        scales = np.asarray(ins[1], dtype=np.float64)
    else:
        if len(ins) > 2 and ins[2] is not None and np.asarray(ins[2]).size:
            scales = np.asarray(ins[2], dtype=np.float64)
        if len(ins) > 3 and ins[3] is not None and np.asarray(ins[3]).size:
            sizes = np.asarray(ins[3], dtype=np.int64)
    mode = at.get("mode", "nearest")
    ctm = at.get("coordinate_transformation_mode", "half_pixel")
    y = x.astype(np.float64) if mode != "nearest" else x
    for ax in range(x.ndim):
        n_in = x.shape[ax]
        if sizes is not None:
            n_out = int(sizes[ax])
            scale = n_out / n_in
        else:
            scale = float(scales[ax])
            n_out = int(math.floor(n_in * scale))
        if n_out == n_in and scale == 1.0:
            continue
        if mode == "nearest":
            idx = nearest_indices(n_in, n_out, scale, ctm, at.get("nearest_mode", "round_prefer_floor"))
            y = y.take(idx, axis=ax)
        else:  # linear along this axis
            src = np.clip(source_coords(n_in, n_out, scale, ctm), 0, n_in - 1)
            i0 = np.floor(src).astype(np.int64)
            i1 = np.minimum(i0 + 1, n_in - 1)
            frac = (src - i0).reshape([-1 if i == ax else 1 for i in range(x.ndim)])
            y = y.take(i0, axis=ax) * (1 - frac) + y.take(i1, axis=ax) * frac
    return [np.ascontiguousarray(y).astype(x.dtype)]


def _pad_f(ins, at):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        pads = [int(p) for p in ins[1]]
        value = ins[2].item() if len(ins) > 2 and ins[2] is not None and np.asarray(ins[2]).size else 0
    else:
        pads = [int(p) for p in at["pads"]]
        value = at.get("value", 0.0)
    r = x.ndim
    widths = [(pads[i], pads[i + r]) for i in range(r)]
    mode = at.get("mode", "constant")
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=value)]
    return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge"}[mode])]


def _quantize_linear_f(ins, at):
    x, scale = ins[0].astype(np.float32), np.asarray(ins[1], dtype=np.float32)
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), dtype=np.uint8)
    axis = int(at.get("axis", 1))
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), np.asarray(zp).reshape(shape)
    lo, hi = dtype_range(np.asarray(zp).dtype)
    q = np.rint(x / scale) + zp.astype(np.float32)
    return [np.clip(q, lo, hi).astype(np.asarray(zp).dtype)]


def _dequantize_linear_f(ins, at):
    x, scale = ins[0], np.asarray(ins[1], dtype=np.float32)
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), dtype=x.dtype)
    axis = int(at.get("axis", 1))
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), np.asarray(zp).reshape(shape)
    return [((x.astype(np.int64) - np.asarray(zp).astype(np.int64)).astype(np.float32) * scale)]


def _argmax(ins, at):
    axis = int(at.get("axis", 0))
    y = np.argmax(ins[0], axis=axis)
    if at.get("keepdims", 1):
        y = np.expand_dims(y, axis)
    return [y.astype(np.int64)]


def _where(ins, at):
    return [np.where(ins[0], ins[1], ins[2])]


def _range(ins, at):
    return [np.arange(ins[0].item(), ins[1].item(), ins[2].item()).astype(ins[0].dtype)]


def _constant_of_shape(ins, at):
    v = at.get("value")
    fill = np.asarray(v).reshape(-1)[0] if v is not None else np.float32(0)
    return [np.full([int(s) for s in ins[0]], fill, dtype=np.asarray(fill).dtype)]


def _tile(ins, at):
    return [np.tile(ins[0], [int(r) for r in ins[1]])]


def _depth_to_space(ins, at):
    x = ins[0]
    b = int(at["blocksize"])
    n, c, h, w = x.shape
    if at.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


def _erf(x):
    # Abramowitz-Stegun 7.1.26 is too coarse for GELU checks; use math.erf elementwise.
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


FLOAT_OPS: Dict[str, Callable] = {
    "Identity": lambda ins, at: [ins[0]],
    "Dropout": lambda ins, at: [ins[0]],
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Clip": _clip,
    "Sigmoid": _unary(_sigmoid),
    "HardSigmoid": _f(_hard_sigmoid),
    "HardSwish": _f(_hard_swish),
    "LeakyRelu": _f(_leaky),
    "Elu": _f(_elu),
    "Tanh": _unary(np.tanh),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Abs": _unary(np.abs),
    "Neg": _unary(np.negative),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Round": _unary(np.rint),
    "Erf": _unary(_erf),
    "Softplus": _unary(lambda x: np.logaddexp(0, x)),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Pow": lambda ins, at: [np.power(ins[0], ins[1]).astype(ins[0].dtype)],
    "Max": lambda ins, at: [np.maximum.reduce([i for i in ins])],
    "Min": lambda ins, at: [np.minimum.reduce([i for i in ins])],
    "Equal": lambda ins, at: [np.equal(ins[0], ins[1])],
    "Less": lambda ins, at: [np.less(ins[0], ins[1])],
    "Greater": lambda ins, at: [np.greater(ins[0], ins[1])],
    "Not": lambda ins, at: [np.logical_not(ins[0])],
    "Where": _where,
    "Cast": _cast,
    "Shape": lambda ins, at: [np.asarray(ins[0].shape[int(at.get("start", 0)):at.get("end")], dtype=np.int64)],
    "Size": lambda ins, at: [np.asarray(ins[0].size, dtype=np.int64)],
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "Concat": _concat,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "DepthToSpace": _depth_to_space,
    "ReduceMean": _reduce(np.mean),
    "ReduceSum": _reduce(np.sum),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "GlobalAveragePool": _gap_f,
    "GlobalMaxPool": _gmp_f,
    "AveragePool": _avgpool_f,
    "MaxPool": _maxpool_f,
    "Conv": _conv_f,
    "ConvTranspose": _conv_transpose_f,
    "BatchNormalization": _batchnorm_f,
    "MatMul": _matmul_f,
    "Gemm": _gemm_f,
    "Softmax": lambda ins, at: _softmax(ins, at),
    "LogSoftmax": lambda ins, at: _softmax(ins, at, log=True),
    "Resize": _resize_f,
    "Pad": _pad_f,
    "QuantizeLinear": _quantize_linear_f,
    "DequantizeLinear": _dequantize_linear_f,
    "ArgMax": _argmax,
}


def run_float_op(op: str, inputs: List[Optional[np.ndarray]], attrs: dict) -> List[np.ndarray]:
    fn = FLOAT_OPS.get(op)
    if fn is None:
        raise ModelError(f"op '{op}' has no implementation in the program interpreter",
                         "it cannot be lowered; keep the model in QDQ form or add the op")
    return fn(list(inputs), attrs)
