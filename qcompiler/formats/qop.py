"""QOperator lowering: DQ -> op -> Q groups become ONNX integer operators.

QLinearConv and QLinearMatMul are standard ONNX; QGemm, QLinearAdd, QLinearMul,
QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool, QLinearSigmoid and
QLinearLeakyRelu are ONNX Runtime's com.microsoft contrib ops. A Relu or Clip between
the op and its Q is absorbed into the output clamp when the Q's integer range already
enforces it. Pass-through ops (MaxPool, Reshape, ...) with equal parameters on both
sides run directly on the integers.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

MS = "com.microsoft"


def _dq_input(ir, t):
    """(q tensor, scale, zero point) when `t` is a DequantizeLinear output, else None."""
    p = ir.producer(t)
    if p is None or p.op != "DequantizeLinear":
        return None
    zp = p.inputs[2] if len(p.inputs) > 2 and p.inputs[2].name else None
    return p.inputs[0], p.inputs[1], zp


def _params_equal(ir, a, b) -> bool:
    va, vb = ir.const_value(a[1]), ir.const_value(b[1])
    za = ir.const_value(a[2]) if a[2] is not None else None
    zb = ir.const_value(b[2]) if b[2] is not None else None
    if va is None or vb is None:
        return False
    za = np.zeros(1) if za is None else za
    zb = np.zeros(1) if zb is None else zb
    return np.array_equal(va.reshape(-1), vb.reshape(-1)) and np.array_equal(za.reshape(-1), zb.reshape(-1))


def _clamp_absorbed(ir, act, qnode) -> bool:
    """Whether Relu/Clip before `qnode` changes nothing that the Q's saturation does not."""
    s = ir.const_value(qnode.inputs[1])
    z = ir.const_value(qnode.inputs[2]) if len(qnode.inputs) > 2 else np.zeros((), np.uint8)
    if s is None or z is None or s.size != 1:
        return False
    s, zi = float(s.reshape(-1)[0]), int(z.reshape(-1)[0])
    info = np.iinfo(z.dtype)
    lo, hi = (info.min - zi) * s, (info.max - zi) * s
    if act.op == "Relu":
        return zi == info.min
    if act.op == "Clip":
        cmin = ir.const_value(act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1].name else None
        cmax = ir.const_value(act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2].name else None
        ok_lo = cmin is None or lo >= float(cmin) - 1e-6 * max(1.0, abs(float(cmin)))
        ok_hi = cmax is None or hi <= float(cmax) + 1e-6 * max(1.0, abs(float(cmax)))
        return ok_lo and ok_hi
    return False


def lower_to_qop(ir) -> dict:
    counts: dict = {}
    for q in [n for n in ir.graph.nodes if n.op == "QuantizeLinear"]:
        if q.attrs.get("axis") is not None and np.asarray(ir.const_value(q.inputs[1])).size > 1:
            continue
        y = q.inputs[0]
        op = ir.producer(y)
        if op is None or len(y.outputs) != 1 or ir.is_graph_output(y):
            continue
        absorbed: List = []
        if op.op in ("Relu", "Clip") and _clamp_absorbed(ir, op, q):
            inner = op.inputs[0]
            prod = ir.producer(inner)
            if prod is not None and len(inner.outputs) == 1 and not ir.is_graph_output(inner) \
                    and prod.op in ("Conv", "MatMul", "Gemm", "Add"):
                absorbed = [op]
                op = prod
        made = _lower_one(ir, op, q)
        if made is None:
            continue
        ir.replace_uses(q.outputs[0], made)
        ir.remove_nodes([q] + absorbed + [op])
        key = ir.producer(made).op
        counts[key] = counts.get(key, 0) + 1
    return counts


def _lower_one(ir, op, q) -> Optional[object]:
    """Build the integer node for `op` feeding `q`; returns its output or None."""
    ys, yz = q.inputs[1], (q.inputs[2] if len(q.inputs) > 2 else None)
    if yz is None:
        return None
    ins = [(_dq_input(ir, t) if t.name else None) for t in op.inputs]
    out_dtype = np.dtype(ir.const_value(yz).dtype)

    def node(opname, inputs, domain=None, attrs=None):
        n = ir.add_node(opname, inputs, attrs=attrs, name=f"{op.name}_q", domain=domain,
                        out_dtype=out_dtype, out_shape=q.outputs[0].shape)
        return n.outputs[0]

    if op.op == "Conv" and ins[0] and ins[1]:
        x, w = ins[0], ins[1]
        args = [x[0], x[1], x[2], w[0], w[1], w[2], ys, yz]
        if len(ins) > 2 and op.inputs[2].name:
            if ins[2] is None or np.dtype(ir.const_value(ins[2][0]).dtype) != np.int32:
                return None
            args.append(ins[2][0])
        return node("QLinearConv", args, attrs=dict(op.attrs))
    if op.op == "MatMul" and ins[0] and ins[1]:
        a, b = ins
        return node("QLinearMatMul", [a[0], a[1], a[2], b[0], b[1], b[2], ys, yz])
    if op.op == "Gemm" and ins[0] and ins[1]:
        a, b = ins[0], ins[1]
        args = [a[0], a[1], a[2], b[0], b[1], b[2]]
        if len(ins) > 2 and op.inputs[2].name:
            if ins[2] is None:
                return None
            args.append(ins[2][0])
        else:
            args.append(_empty())
        args += [ys, yz]
        attrs = {k: v for k, v in op.attrs.items() if k in ("transA", "transB", "alpha")}
        return node("QGemm", args, domain=MS, attrs=attrs)
    if op.op in ("Add", "Mul") and len(ins) == 2 and all(ins):
        a, b = ins
        return node(f"QLinear{op.op}", [a[0], a[1], a[2], b[0], b[1], b[2], ys, yz], domain=MS)
    if op.op == "Concat" and all(ins):
        args = [ys, yz]
        for x in ins:
            args += [x[0], x[1], x[2]]
        return node("QLinearConcat", args, domain=MS, attrs={"axis": op.attrs.get("axis", 0)})
    if op.op == "GlobalAveragePool" and ins[0]:
        x = ins[0]
        return node("QLinearGlobalAveragePool", [x[0], x[1], x[2], ys, yz], domain=MS, attrs={"channels_last": 0})
    if op.op == "AveragePool" and ins[0]:
        x = ins[0]
        return node("QLinearAveragePool", [x[0], x[1], x[2], ys, yz], domain=MS, attrs=dict(op.attrs))
    if op.op in ("Sigmoid", "LeakyRelu") and ins[0]:
        x = ins[0]
        attrs = {"alpha": op.attrs.get("alpha", 0.01)} if op.op == "LeakyRelu" else {}
        return node(f"QLinear{op.op}", [x[0], x[1], x[2], ys, yz], domain=MS, attrs=attrs)
    if op.op in ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather",
                 "Resize", "Expand", "Tile") and ins[0] and _params_equal(ir, ins[0], (None, ys, yz)):
        if op.op == "MaxPool" and len(op.outputs) > 1 and op.outputs[1].outputs:
            return None
        if op.op == "Resize" and op.attrs.get("mode", "nearest") != "nearest":
            return None
        rest = list(op.inputs[1:])
        return node(op.op, [ins[0][0]] + rest, attrs=dict(op.attrs))
    return None


def _empty():
    import onnx_graphsurgeon as gs

    return gs.Variable.empty()
