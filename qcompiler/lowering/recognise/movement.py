"""Integer data movement: Concat (inputs requantized to the output's parameters where they
differ), nearest Resize, and Reshape-like ops that run unchanged on the int8 tensor,
followed by a Requant when the Q after them has other parameters."""

from __future__ import annotations

import numpy as np

from .state import attrs_of

__all__ = ["lower_concat", "lower_move", "lower_resize"]


def lower_concat(lw, node, ins, tail) -> bool:
    _, act, (s_y, z_y, dt) = tail
    if any(not lw.is_qview(v) for v in ins):
        return False
    rank = len(lw.shape(node.input[0]) or [])
    if not rank:
        return False
    axis = int(attrs_of(node)["axis"])
    axis = axis + rank if axis < 0 else axis
    lo, hi, _ = lw.out_clamp(act, s_y, z_y, dt)
    parts = []
    for i, v in enumerate(ins):
        if lw.same_params(v, s_y, z_y, dt) and act is None:
            parts.append(v.pt)
        else:
            parts.append(lw.emit_requant(v, s_y, z_y, dt, (lo, hi), f"{node.input[i]}.requant"))
    base = lw.out_name(tail, node)
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0]), s_y, z_y)
    lw.emit("Concat", node.name or base, parts, [base], {"axis": axis, "dtype": dt}, cls="agnostic",
            act_inputs=list(range(len(parts))))
    lw.bind_tail(tail, base, s_y, z_y, dt)
    return True


def lower_resize(lw, node, ins, tail) -> bool:
    x = ins[0]
    at = attrs_of(node)
    xs = lw.shape(node.input[0])
    if not lw.is_qview(x) or at.get("mode", "nearest") != "nearest" or xs is None or len(xs) != 4:
        return False
    scales = sizes = None
    for idx, v in enumerate(ins[1:], 1):
        if v is None:
            continue
        if v.kind != "const":
            return False
        arr = np.asarray(v.value)
        if arr.size == 0:
            continue
        if (len(ins) == 2 and idx == 1) or idx == 2:
            scales = arr.astype(np.float64)
        elif idx == 3:
            sizes = arr.astype(np.int64)
    if sizes is not None:
        if sizes.size != 4 or sizes[0] != xs[0] or sizes[1] != xs[1]:
            return False
        attrs = {"sizes": [int(sizes[2]), int(sizes[3])]}
    elif scales is not None:
        if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
            return False
        attrs = {"scales": [float(scales[2]), float(scales[3])]}
    else:
        return False
    if at.get("exclude_outside", 0) or "axes" in at:
        return False
    attrs.update({"mode": "nearest",
                  "coordinate_transformation_mode": at.get("coordinate_transformation_mode", "half_pixel"),
                  "nearest_mode": at.get("nearest_mode", "round_prefer_floor")})
    if lw.model.opset_import and lw.opset() < 11:
        attrs["coordinate_transformation_mode"] = "asymmetric"
        attrs["nearest_mode"] = "floor"
    base = lw.fresh(node.output[0])
    lw.add_tensor(base, x.dtype, lw.shape(node.output[0]), x.scale, x.zp)
    lw.emit("Resize", node.name or base, [x.pt], [base], attrs, cls="agnostic", act_inputs=[0])
    lw.finish_same_scale(node, tail, base, x)
    return True


def lower_move(lw, node, ins, tail) -> bool:
    x = ins[0]
    if not lw.is_qview(x) or any(v is not None and v.kind != "const" for v in ins[1:]):
        return False
    consts = [("" if v is None else lw.add_const(f"{node.input[i + 1]}", v.value))
              for i, v in enumerate(ins[1:])]
    base = lw.fresh(node.output[0])
    lw.add_tensor(base, x.dtype, lw.shape(node.output[0]), x.scale, x.zp)
    op = "Identity" if node.op_type == "Dropout" else node.op_type
    ins_names = [x.pt] + ([] if op == "Identity" else consts)
    attrs = {} if op == "Identity" else attrs_of(node)
    lw.emit(op, node.name or base, ins_names, [base], attrs, domain="", act_inputs=[0])
    lw.finish_same_scale(node, tail, base, x)
    return True
