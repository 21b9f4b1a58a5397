"""MaxPool (integer max, same scale), AveragePool and GlobalAveragePool (integer sums
requantized by the scale ratio over the window count)."""

from __future__ import annotations

import numpy as np

from .state import attrs_of, window_pads

__all__ = ["lower_maxpool", "lower_avgpool", "lower_gap"]


def pool_attrs(lw, node, with_dil=True):
    at = attrs_of(node)
    if len(at.get("kernel_shape", [])) != 2 or int(at.get("storage_order", 0)):
        return None
    kh, kw = at["kernel_shape"]
    strides = list(at.get("strides", [1, 1]))
    dil = list(at.get("dilations", [1, 1]))
    pads = window_pads(lw, node, at, [kh, kw], strides, dil)
    if pads is None:
        return None
    out = {"kernel_shape": [kh, kw], "strides": strides, "pads": pads, "ceil_mode": int(at.get("ceil_mode", 0))}
    if with_dil:
        out["dilations"] = dil
    elif dil != [1, 1]:
        return None
    return out, at


def lower_maxpool(lw, node, ins, tail) -> bool:
    x = ins[0]
    if not lw.is_qview(x) or len([o for o in node.output if o]) != 1:
        return False
    pa = pool_attrs(lw, node)
    if pa is None:
        return False
    base = lw.fresh(node.output[0])
    lw.add_tensor(base, x.dtype, lw.shape(node.output[0]), x.scale, x.zp)
    lw.emit("MaxPool", node.name or base, [x.pt], [base], pa[0], cls="agnostic", act_inputs=[0])
    lw.finish_same_scale(node, tail, base, x)
    return True


def lower_avgpool(lw, node, ins, tail) -> bool:
    x = ins[0]
    if not lw.is_qview(x):
        return False
    pa = pool_attrs(lw, node, with_dil=False)
    if pa is None:
        return False
    attrs, at = pa
    _, act, (s_y, z_y, dt) = tail
    lo, hi, _ = lw.out_clamp(act, s_y, z_y, dt)
    base = lw.out_name(tail, node)
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0]), s_y, z_y)
    ratio = lw.add_const(f"{base}.scale_ratio", np.asarray([np.float64(x.scale) / np.float64(s_y)]))
    attrs.update({"count_include_pad": int(at.get("count_include_pad", 0)), "x_zero_point": x.zp,
                  "y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt})
    lw.emit("AveragePool", node.name or base, [x.pt, ratio], [base], attrs, cls="agnostic", act_inputs=[0])
    lw.bind_tail(tail, base, s_y, z_y, dt)
    return True


def lower_gap(lw, node, ins, tail) -> bool:
    x = ins[0]
    xs = lw.shape(node.input[0])
    if not lw.is_qview(x) or xs is None or len(xs) != 4:
        return False
    _, act, (s_y, z_y, dt) = tail
    lo, hi, _ = lw.out_clamp(act, s_y, z_y, dt)
    base = lw.out_name(tail, node)
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0]), s_y, z_y)
    ratio = lw.add_const(f"{base}.scale_ratio", np.asarray([np.float64(x.scale) / np.float64(s_y)]))
    lw.emit("GlobalAveragePool", node.name or base, [x.pt, ratio], [base],
            {"x_zero_point": x.zp, "y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt},
            cls="agnostic", act_inputs=[0])
    lw.bind_tail(tail, base, s_y, z_y, dt)
    return True
