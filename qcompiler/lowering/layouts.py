"""Tensor layouts of lowered programs: activation blocking and weight packing.

Activations (4-D, logical NCHW):

    NCHW                {N, C, H, W}          plain; also "plain" for tensors of any other rank
    NHWC                {N, H, W, C}
    NCHW44, NCHW44_DOT  {N, C/4, H, W, 4}     arm64 NEON / SDOT kernels
    NC4HW4              {N, C/4, H, W, 4}     cuda dp4a
    NC32HW32            {N, C/32, H, W, 32}   cuda tensor cores

A blocked layout stores channel c at block c // k, lane c % k. When C is not a multiple
of k the last block is padded; padded lanes carry no meaning (kernels write the output
zero point there, and every consumer ignores them: packed weights are zero for padded
input channels, conversions back to NCHW drop them).

Conv weights (logical OIHW: [OC, IC/group, FH, FW]) are packed per layout and kind
("dense", "first", "depthwise", "group"); see `weight_shape` for every packed shape.
Channels are zero-padded up to the block; `unpack_weight` inverts `pack_weight` exactly.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

PLAIN = "NCHW"
LAYOUTS = ("NCHW", "NHWC", "NCHW44", "NCHW44_DOT", "NC4HW4", "NC32HW32")
BLOCK = {"NCHW44": 4, "NCHW44_DOT": 4, "NC4HW4": 4, "NC32HW32": 32}
KINDS = ("dense", "first", "depthwise", "group")

__all__ = [
    "PLAIN", "LAYOUTS", "BLOCK", "KINDS", "block_of", "is_blocked", "check_layout", "round_up",
    "same_activation_form", "physical_shape", "to_layout", "from_layout", "convert_layout", "channel_axes",
    "pack_weight", "unpack_weight", "weight_shape",
]


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    return layout


def block_of(layout: str) -> int:
    """Channel block of a layout (1 for NCHW and NHWC)."""
    return BLOCK.get(check_layout(layout), 1)


def same_activation_form(a: str, b: str) -> bool:
    """Whether activations in layouts a and b are stored identically (NCHW44 and
    NCHW44_DOT differ only in how weights are packed): no conversion between them."""
    canon = {"NCHW44_DOT": "NCHW44"}
    return canon.get(a, a) == canon.get(b, b)


def is_blocked(layout: str) -> bool:
    return block_of(layout) > 1


def round_up(n: int, k: int) -> int:
    return -(-int(n) // int(k)) * int(k)


def channel_axes(layout: str, rank: int = 4) -> Tuple[int, ...]:
    """Physical axes holding the channel: (1,) for NCHW, (3,) for NHWC, (1, 4) blocked."""
    check_layout(layout)
    if layout == "NHWC":
        return (3,)
    if is_blocked(layout):
        return (1, 4)
    return (1,) if rank > 1 else (0,)


def physical_shape(shape: Sequence[int], layout: str) -> Tuple[int, ...]:
    """Physical shape of a logical NCHW shape in `layout`."""
    k = block_of(layout)
    if layout == PLAIN:
        return tuple(shape)
    n, c, h, w = shape
    if layout == "NHWC":
        return (n, h, w, c)
    return (n, -(-c // k), h, w, k)


# ----------------------------------------------------------------------------- activations

def to_layout(x: np.ndarray, layout: str, pad_value=0) -> np.ndarray:
    """A logical NCHW tensor in `layout` (padded lanes hold pad_value)."""
    check_layout(layout)
    if layout == PLAIN:
        return x
    if x.ndim != 4:
        raise ValueError(f"layout {layout} needs a 4-D NCHW tensor, got shape {x.shape}")
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    k = block_of(layout)
    n, c, h, w = x.shape
    cp = round_up(c, k)
    if cp != c:
        padded = np.full((n, cp, h, w), pad_value, dtype=x.dtype)
        padded[:, :c] = x
        x = padded
    return np.ascontiguousarray(x.reshape(n, cp // k, k, h, w).transpose(0, 1, 3, 4, 2))


def from_layout(x: np.ndarray, layout: str, channels: Optional[int] = None) -> np.ndarray:
    """The logical NCHW tensor (padded lanes dropped) of a tensor stored in `layout`."""
    check_layout(layout)
    if layout == PLAIN:
        return x
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    n, cb, h, w, k = x.shape
    if k != block_of(layout):
        raise ValueError(f"a {layout} tensor must end in a block of {block_of(layout)}, got shape {x.shape}")
    out = x.transpose(0, 1, 4, 2, 3).reshape(n, cb * k, h, w)
    c = cb * k if channels is None else int(channels)
    return np.ascontiguousarray(out[:, :c])


def convert_layout(x: np.ndarray, src: str, dst: str, channels: Optional[int] = None,
                   pad_value=0) -> np.ndarray:
    if src == dst:
        return x
    return to_layout(from_layout(x, src, channels), dst, pad_value)


# ----------------------------------------------------------------------------- weights

def _pad_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    if a.shape[axis] == size:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return np.pad(a, widths)


def weight_shape(original_shape: Sequence[int], layout: str, kind: str, groups: int = 1) -> Tuple[int, ...]:
    """The packed shape of an OIHW weight [OC, IC/g, FH, FW] (see the module doc)."""
    oc, icg, fh, fw = (int(s) for s in original_shape)
    k = block_of(layout)
    _check_kind(kind)
    if layout == "NCHW":
        return (oc, icg, fh, fw)
    if layout == "NHWC":
        if kind == "depthwise":
            return (fh, fw, oc)
        return (oc, fh, fw, icg)
    if kind == "depthwise":
        return (round_up(oc, k) // k, 1, 1, fh, fw, k)
    if layout in ("NCHW44", "NCHW44_DOT"):
        if kind == "first":
            return (round_up(oc, 4) // 4, fh, fw, icg, 4)
        if kind == "group":
            g = int(groups)
            return (g, round_up(oc // g, 4) // 4, round_up(icg, 4) // 4, fh, fw, 4, 4)
        return (round_up(oc, 4) // 4, round_up(icg, 4) // 4, fh, fw, 4, 4)
    # NC4HW4 / NC32HW32: cuDNN-style vectorised filters {OC, IC/k, FH, FW, k}
    if kind == "group":
        g = int(groups)
        return (g, oc // g, round_up(icg, k) // k, fh, fw, k)
    return (round_up(oc, k), round_up(icg, k) // k, fh, fw, k)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown weight kind {kind!r}; known: {', '.join(KINDS)}")


def pack_weight(w: np.ndarray, layout: str, kind: str, groups: int = 1) -> np.ndarray:
    """Pack an OIHW weight [OC, IC/g, FH, FW] into `layout` for a conv of `kind`.

    kind: "dense" (group 1), "first" (group 1, the NCHW-in first layer: input channels
    are not padded), "depthwise" ([G, 1, FH, FW]), "group" (group > 1, `groups` given).
    Padded channels get zero weights.
    """
    check_layout(layout)
    _check_kind(kind)
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"pack_weight expects an OIHW weight, got shape {w.shape}")
    oc, icg, fh, fw = w.shape
    if kind == "depthwise" and icg != 1:
        raise ValueError(f"a depthwise weight has one input channel per group, got shape {w.shape}")
    if kind == "group" and (groups < 1 or oc % groups):
        raise ValueError(f"{oc} output channels do not split into {groups} groups")
    k = block_of(layout)
    if layout == "NCHW":
        return np.ascontiguousarray(w)
    if layout == "NHWC":
        if kind == "depthwise":
            return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    if kind == "depthwise":
        wp = _pad_axis(w[:, 0], 0, round_up(oc, k))  # [Gp, FH, FW]
        gb = wp.shape[0] // k
        return np.ascontiguousarray(wp.reshape(gb, k, fh, fw).transpose(0, 2, 3, 1)[:, None, None])
    if layout in ("NCHW44", "NCHW44_DOT"):
        dot = layout == "NCHW44_DOT"
        if kind == "first":
            wp = _pad_axis(w, 0, round_up(oc, 4))
            ob = wp.shape[0] // 4
            # [OCb, 4oc, IC, FH, FW] -> [OCb, FH, FW, IC, 4oc]
            return np.ascontiguousarray(wp.reshape(ob, 4, icg, fh, fw).transpose(0, 3, 4, 2, 1))
        if kind == "group":
            g = int(groups)
            wg = w.reshape(g, oc // g, icg, fh, fw)
            wg = _pad_axis(_pad_axis(wg, 1, round_up(oc // g, 4)), 2, round_up(icg, 4))
            _, ocp, icp, _, _ = wg.shape
            b = wg.reshape(g, ocp // 4, 4, icp // 4, 4, fh, fw)  # g, ob, o4, ib, i4, fh, fw
            order = (0, 1, 3, 5, 6, 2, 4) if dot else (0, 1, 3, 5, 6, 4, 2)
            return np.ascontiguousarray(b.transpose(order))
        wp = _pad_axis(_pad_axis(w, 0, round_up(oc, 4)), 1, round_up(icg, 4))
        ocp, icp = wp.shape[:2]
        b = wp.reshape(ocp // 4, 4, icp // 4, 4, fh, fw)  # ob, o4, ib, i4, fh, fw
        order = (0, 2, 4, 5, 1, 3) if dot else (0, 2, 4, 5, 3, 1)
        return np.ascontiguousarray(b.transpose(order))
    # NC4HW4 / NC32HW32
    if kind == "group":
        g = int(groups)
        wg = _pad_axis(w.reshape(g, oc // g, icg, fh, fw), 2, round_up(icg, k))
        icp = wg.shape[2]
        return np.ascontiguousarray(wg.reshape(g, oc // g, icp // k, k, fh, fw).transpose(0, 1, 2, 4, 5, 3))
    wp = _pad_axis(_pad_axis(w, 0, round_up(oc, k)), 1, round_up(icg, k))
    ocp, icp = wp.shape[:2]
    return np.ascontiguousarray(wp.reshape(ocp, icp // k, k, fh, fw).transpose(0, 1, 3, 4, 2))


def unpack_weight(packed: np.ndarray, layout: str, kind: str, original_shape: Sequence[int],
                  groups: int = 1) -> np.ndarray:
    """The OIHW weight of `original_shape` that `pack_weight` packed (padding dropped)."""
    check_layout(layout)
    _check_kind(kind)
    oc, icg, fh, fw = (int(s) for s in original_shape)
    p = np.asarray(packed)
    expected = weight_shape(original_shape, layout, kind, groups)
    if tuple(p.shape) != expected:
        raise ValueError(f"packed weight has shape {p.shape}, expected {expected} for {layout} {kind}")
    k = block_of(layout)
    if layout == "NCHW":
        return np.ascontiguousarray(p)
    if layout == "NHWC":
        if kind == "depthwise":
            return np.ascontiguousarray(p.transpose(2, 0, 1)[:, None])
        return np.ascontiguousarray(p.transpose(0, 3, 1, 2))
    if kind == "depthwise":
        gb = p.shape[0]
        w = p[:, 0, 0].transpose(0, 3, 1, 2).reshape(gb * k, fh, fw)[:oc]
        return np.ascontiguousarray(w[:, None])
    if layout in ("NCHW44", "NCHW44_DOT"):
        dot = layout == "NCHW44_DOT"
        if kind == "first":
            ob = p.shape[0]
            w = p.transpose(0, 4, 3, 1, 2).reshape(ob * 4, icg, fh, fw)
            return np.ascontiguousarray(w[:oc])
        if kind == "group":
            g, ob, ib = p.shape[:3]
            # packed axes: g, ob, ib, fh, fw, (o4, i4) if dot else (i4, o4)
            order = (0, 1, 5, 2, 6, 3, 4) if dot else (0, 1, 6, 2, 5, 3, 4)
            b = p.transpose(order).reshape(g, ob * 4, ib * 4, fh, fw)
            return np.ascontiguousarray(b[:, : oc // g, :icg].reshape(oc, icg, fh, fw))
        ob, ib = p.shape[:2]
        order = (0, 4, 1, 5, 2, 3) if dot else (0, 5, 1, 4, 2, 3)
        w = p.transpose(order).reshape(ob * 4, ib * 4, fh, fw)
        return np.ascontiguousarray(w[:oc, :icg])
    if kind == "group":
        g, ocg, ib = p.shape[:3]
        w = p.transpose(0, 1, 2, 5, 3, 4).reshape(g, ocg, ib * k, fh, fw)[:, :, :icg]
        return np.ascontiguousarray(w.reshape(oc, icg, fh, fw))
    ocp, ib = p.shape[:2]
    w = p.transpose(0, 1, 4, 2, 3).reshape(ocp, ib * k, fh, fw)
    return np.ascontiguousarray(w[:oc, :icg])
