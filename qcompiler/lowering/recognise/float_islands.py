"""Float islands: an op without an integer kernel stays a float op of the program, its
quantized inputs dequantized at the boundary (once per tensor and scale) and a following
Q becoming a Quantize kernel. Elementwise float ops with scalar or per-channel constants
can run in a blocked layout, so an island inside a layout region needs no conversions."""

from __future__ import annotations

import numpy as np
from onnx import helper

from ...errors import ModelError
from ..float_ops import FLOAT_OPS
from .state import INT_DTYPES, Val, attrs_of

__all__ = ["float_node", "materialize_float"]

# float ops that are elementwise: with scalar or per-channel constants they run on a
# blocked (or NHWC) tensor as well, so a float island inside a layout region needs no
# conversions
FLOAT_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Relu", "Clip", "Sigmoid",
                               "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Tanh", "Exp", "Log", "Sqrt",
                               "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "Softplus"})


def materialize_float(lw, v: Val, hint: str) -> str:
    """A program tensor holding the float value of v (Dequantize for a quantized view)."""
    if v.kind == "float":
        return v.pt
    if v.kind == "const":
        key = ("const", id(v))
        if key not in lw.float_cache:
            lw.float_cache[key] = lw.add_const(v.onnx_name or hint, v.value)
        return lw.float_cache[key]
    if v.kind == "int":
        return v.pt
    key = ("dq", v.pt, v.scale, v.zp)
    if key not in lw.float_cache:
        out = lw.fresh(v.onnx_name or hint)
        info = lw.prog.tensors[v.pt]
        lw.add_tensor(out, "float32", info.shape)
        lw.emit("Dequantize", f"{out}.dequantize", [v.pt], [out],
                {"scale": float(v.scale), "zero_point": int(v.zp)}, cls="agnostic", act_inputs=[0])
        lw.float_cache[key] = out
    return lw.float_cache[key]


def float_node(lw, node, ins):
    op = node.op_type
    if op not in FLOAT_OPS:
        if not lw.plan_only:
            raise ModelError(f"--emit program: op {op} (node '{node.name}') has no integer kernel on "
                             f"{lw.target.name} and no float implementation in the program interpreter",
                             "emit qdq (the default) or qop: ONNX Runtime runs this op in float there")
        lw.no_program_kernel[node.name or node.output[0]] = op
    in_names, act, cc = [], [], []
    for idx, (i, v) in enumerate(zip(node.input, ins)):
        if v is None:
            in_names.append("")
            continue
        in_names.append(materialize_float(lw, v, i))
        if v.kind != "const":
            act.append(idx)
        elif np.asarray(v.value).size > 1:
            cc.append(idx)
    outs = []
    for o in node.output:
        if not o:
            outs.append("")
            continue
        dt = lw.elem.get(o)
        dtype = str(helper.tensor_dtype_to_np_dtype(dt)) if dt else "float32"
        pt = lw.fresh(o)
        lw.add_tensor(pt, dtype, lw.shape(o))
        outs.append(pt)
        if dtype in INT_DTYPES:
            lw.vals[o] = Val("int", pt=pt, dtype=dtype, onnx_name=o)
        else:
            lw.vals[o] = Val("float", pt=pt, onnx_name=o)
    elementwise = op in FLOAT_ELEMENTWISE and len([o for o in outs if o]) == 1
    lw.emit(op, node.name or f"{op}_{len(lw.pending)}", in_names, outs, attrs_of(node), domain="",
            act_inputs=act, cls="agnostic" if elementwise and act else "plain", channel_consts=cc)
    lw.stats["float_ops"] += 1
