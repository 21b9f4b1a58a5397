"""Spatial geometry shared by the interpreter's integer kernels and float ops: output
sizes, explicit and SAME padding, sliding windows over the two spatial axes of any layout,
pooling window counts, and the source coordinates of a nearest / linear Resize."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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
