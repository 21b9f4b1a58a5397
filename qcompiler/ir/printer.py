"""A stable, diffable text form of the IR: one line per node.

    conv1 = Conv(x:f32[1,3,32,32], w:f32[8,3,3,3]=const) -> y:f32[1,8,32,32] {pads=[1,1,1,1]} @region=r0 [y: u8 s=0.0213 zp=12]
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import onnx_graphsurgeon as gs

_DT = {
    np.dtype("float32"): "f32", np.dtype("float16"): "f16", np.dtype("float64"): "f64",
    np.dtype("int8"): "s8", np.dtype("uint8"): "u8", np.dtype("int16"): "s16",
    np.dtype("int32"): "s32", np.dtype("int64"): "s64", np.dtype("bool"): "bool",
}


def _dtype(t) -> str:
    dt = t.dtype
    if dt is None:
        return "?"
    try:
        return _DT.get(np.dtype(dt), str(np.dtype(dt)))
    except TypeError:
        return str(dt)


def _shape(t) -> str:
    shape = t.shape
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def tensor_str(t) -> str:
    if t.name == "" and isinstance(t, gs.Variable):
        return "_"
    s = f"{t.name}:{_dtype(t)}{_shape(t)}"
    if isinstance(t, gs.Constant):
        v = np.asarray(t.values)
        s += f"={v.reshape(-1)[0].item()!r}" if v.size == 1 else "=const"  # 1.0, not np.float32(1.0)
    return s


def _attr_str(v) -> str:
    if isinstance(v, gs.Constant):
        return "<tensor>"
    if isinstance(v, gs.Graph):
        return "<graph>"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_attr_str(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return str(v)


def qparams_str(qp) -> str:
    """QParams-like objects (scale, zero_point, dtype, axis) printed compactly."""
    scale = np.asarray(getattr(qp, "scale", np.nan)).reshape(-1)
    zp = np.asarray(getattr(qp, "zero_point", 0)).reshape(-1)
    dtype = getattr(qp, "dtype", "?")
    if scale.size == 1:
        return f"{dtype} s={scale[0]:.6g} zp={int(zp[0])}"
    axis = getattr(qp, "axis", None)
    return f"{dtype} axis={axis} s=[{scale.min():.4g}..{scale.max():.4g}]x{scale.size}"


def node_lines(ir) -> Dict[str, str]:
    """Node name -> its line, in graph order (the unit the dump diff compares)."""
    region_of: Dict[str, str] = {}
    for region in ir.ann.regions.values():
        for n in region.nodes:
            region_of[n] = region.name
    out: Dict[str, str] = {}
    for node in ir.graph.nodes:
        op = node.op if node.domain in (None, "", "ai.onnx") else f"{node.domain}.{node.op}"
        ins = ", ".join(tensor_str(t) for t in node.inputs)
        outs = ", ".join(tensor_str(t) for t in node.outputs)
        line = f"{node.name} = {op}({ins}) -> {outs}"
        if node.attrs:
            attrs = ", ".join(f"{k}={_attr_str(v)}" for k, v in sorted(node.attrs.items()))
            line += " {" + attrs + "}"
        if node.name in region_of:
            line += f" @region={region_of[node.name]}"
        if node.name in ir.ann.layout:
            line += f" @layout={ir.ann.layout[node.name]}"
        qps = [f"{t.name}: {qparams_str(ir.ann.qparams[t.name])}" for t in node.outputs
               if t.name in ir.ann.qparams]
        if qps:
            line += " [" + "; ".join(qps) + "]"
        out[node.name] = line
    return out


def format_ir(ir) -> str:
    g = ir.graph
    lines: List[str] = [f"graph {g.name} opset={g.opset} nodes={len(g.nodes)}"]
    for t in g.inputs:
        line = f"input {tensor_str(t)}"
        if t.name in ir.ann.qparams:
            line += f" [{qparams_str(ir.ann.qparams[t.name])}]"
        lines.append(line)
    lines.extend(node_lines(ir).values())
    for t in g.outputs:
        lines.append(f"output {tensor_str(t)}")
    groups = ir.ann.groups.groups()
    for i, members in enumerate(groups):
        lines.append(f"scale-group {i}: " + ", ".join(map(str, members)))
    return "\n".join(lines) + "\n"
