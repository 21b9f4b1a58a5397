"""fold-requant: clean up quantization round trips.

DQ -> Q with equal parameters is an identity on the integers: the Q's consumers read
the DQ's input directly. DQ -> Q with different parameters is one requantization; it is
kept (ONNX has no single requant op) and counted.

A multiplication by a positive scalar constant between two quantized tensors,
Q_A -> DQ -> Mul(k) -> Q_B, is a requantization too: when nothing else reads A, A is
quantized straight onto B's grid (scale s_B / k, zero point zp_B), so its codes are B's
and the Mul, a DQ and a Q disappear. That is the `/ 6` of every `x * relu6(x + 3) / 6`
HardSwish (18 QLinearMul kernels of PP-OCR cls, 7 % of its x86 latency), and one rounding
less. Integer lowering for a target
(fixed-point multipliers) happens in lower-layout / --emit program; with --emit qop this
pass also lowers DQ -> op -> Q groups to ONNX integer operators (qcompiler.formats.qop).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from qcompiler.pipeline.options import EMIT_OPTION
from qcompiler.pipeline.registry import Pass, register_pass


def _params(ir, node):
    vals = [ir.const_value(t) if t.name else None for t in node.inputs[1:3]]
    if vals[0] is None:
        return None
    zp = vals[1] if len(vals) > 1 and vals[1] is not None else np.zeros_like(vals[0], dtype=np.uint8)
    return (np.asarray(vals[0]), np.asarray(zp), node.attrs.get("axis", 1) if np.asarray(vals[0]).size > 1 else None)


def same_params(a, b) -> bool:
    return (a is not None and b is not None and a[2] == b[2] and a[0].shape == b[0].shape
            and np.array_equal(a[0], b[0]) and a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1]))


@register_pass("fold-requant", requires={"qdq-placed"}, provides={"requant-folded"})
class FoldRequant(Pass):
    """Remove DQ->Q pairs with equal parameters; count the requantizations that remain."""

    config = {"emit": EMIT_OPTION}

    def run(self, ir, ctx) -> bool:
        removed = requants = 0
        for q in [n for n in ir.graph.nodes if n.op == "QuantizeLinear"]:
            src = q.inputs[0]
            dq = ir.producer(src)
            if dq is None or dq.op != "DequantizeLinear":
                continue
            if same_params(_params(ir, dq), _params(ir, q)) and not ir.is_graph_output(q.outputs[0]):
                ir.replace_uses(q.outputs[0], dq.inputs[0])
                ir.remove_node(q)
                if not src.outputs and not ir.is_graph_output(src):
                    ir.remove_node(dq)
                removed += 1
            else:
                requants += 1
        scalar_muls = sum(_fold_scalar_mul(ir, mul) for mul in [n for n in ir.graph.nodes if n.op == "Mul"])
        rep = ctx.pass_report(self.name)
        rep.update(identity_pairs_removed=removed, requantizations=requants, scalar_muls_folded=scalar_muls)
        if self.settings(ctx).emit == "qop":
            from qcompiler.formats.qop import lower_to_qop

            rep["qop"] = lower_to_qop(ir)
            return True
        return removed + scalar_muls > 0


def _scalar(ir, t):
    """The value of `t` when it is a scalar constant, or the DequantizeLinear of one."""
    v = ir.const_value(t)
    if v is None:
        dq = ir.producer(t)
        if dq is None or dq.op != "DequantizeLinear":
            return None
        p = _params(ir, dq)
        q = ir.const_value(dq.inputs[0])
        if p is None or q is None or q.size != 1 or p[0].size != 1:
            return None
        v = (q.astype(np.float64) - p[1].astype(np.float64)) * p[0].astype(np.float64)
    return float(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size == 1 else None


def _fold_scalar_mul(ir, mul) -> bool:
    """Q_A -> DQ_A -> Mul(k > 0) -> Q_B: quantize A with (s_B / k, zp_B) and drop DQ_A, Mul, Q_B."""
    if mul.domain not in ("", None) or len(mul.inputs) != 2:
        return False
    for i in (0, 1):
        dq_a, k = ir.producer(mul.inputs[i]), _scalar(ir, mul.inputs[1 - i])
        if dq_a is not None and dq_a.op == "DequantizeLinear" and k is not None:
            break
    else:
        return False
    q_a = ir.producer(dq_a.inputs[0])
    q_b = ir.sole_consumer(mul.outputs[0])
    if not (k > 0 and np.isfinite(k)) or q_a is None or q_a.op != "QuantizeLinear" or q_b is None \
            or q_b.op != "QuantizeLinear" or ir.sole_consumer(q_a.outputs[0]) is not dq_a \
            or ir.sole_consumer(dq_a.outputs[0]) is not mul or ir.is_graph_output(q_b.outputs[0]):
        return False
    pa, pb = _params(ir, q_a), _params(ir, q_b)
    if pa is None or pb is None or pa[2] is not None or pb[2] is not None or pa[1].dtype != pb[1].dtype:
        return False  # per-tensor, same integer type only
    if not same_params(pa, _params(ir, dq_a)):
        return False  # Q_A already writes another tensor's codes (an earlier fold of a chain)
    scale = np.float32(float(pb[0]) / k)
    if not (np.isfinite(scale) and scale > 0):
        return False
    a = q_a.inputs[0]
    ir.set_input(q_a, 1, ir.constant(f"{a.name}_scale", scale))
    ir.set_input(q_a, 2, ir.constant(f"{a.name}_zero_point", pb[1].copy()))
    if a.name in ir.ann.qparams:
        ir.ann.qparams[a.name] = replace(ir.ann.qparams[a.name], scale=scale, zero_point=pb[1].copy())
    ir.replace_uses(q_b.outputs[0], q_a.outputs[0])
    ir.remove_nodes([q_b, mul, dq_a])
    return True
