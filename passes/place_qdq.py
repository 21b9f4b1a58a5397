"""place-qdq: write the plan into the graph as QuantizeLinear/DequantizeLinear.

- every quantized activation gets Q -> DQ right after its producer (one pair shared by
  all consumers, or one pair per consumer where the target says so: TensorRT);
- weights become int8 initializers behind a (per-channel) DequantizeLinear;
- biases become int32 with scale s_in * s_w (zero point 0), so ONNX Runtime fuses
  DQ -> Conv -> Q into QLinearConv; targets that keep float biases keep them;
- a float constant operand of an Add/Mul kernel becomes an integer initializer behind a
  DequantizeLinear (activation scheme, per-tensor): ONNX Runtime fuses DQ -> Add/Mul -> Q
  into QLinearAdd/QLinearMul only when every input comes from a DQ.
Nothing is placed inside a kernel (a fused region), and no Q/DQ is placed where no
kernel needs it.
"""

from __future__ import annotations

import numpy as np

from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import Plan, is_float, require_plan, to_quant_scheme
from qcompiler.precision.dtypes import PRECISION_OPTIONS, apply_precision, weight_codes
from qcompiler.quant.qparams import QParams, compute_qparams, quantize


@register_pass("place-qdq", requires={"calibrated"}, provides={"qdq-placed"})
class PlaceQDQ(Pass):
    """Insert Q/DQ pairs on quantized activations and quantize weights and biases."""

    config = dict(PRECISION_OPTIONS)

    def run(self, ir, ctx) -> bool:
        plan = require_plan(ir, self.name)
        target = ctx.target
        apply_precision(ir, ctx, plan, options=self.settings(ctx))  # int4 weights / int16 activations where asked and allowed
        rounding = "half_to_even"  # ONNX QuantizeLinear semantics; lowering applies the target's own
        per_consumer = bool(target.placement.qdq_per_consumer)
        tensors = ir.tensors()
        pairs = 0
        for name in plan.tensors:
            t = tensors.get(name)
            qp = ir.ann.qparams.get(name)
            if t is None or qp is None:
                continue
            consumers = list(t.outputs)
            is_out = ir.is_graph_output(t)
            if per_consumer and len(consumers) > 1:
                for c in consumers:
                    ir.insert_on_edge(t, lambda src, c=c: _qdq(ir, src, qp, f"{name}_{c.name}"), consumers=[c])
                    pairs += 1
                if is_out:
                    ir.insert_on_edge(t, lambda src: _qdq(ir, src, qp, name), consumers=[], include_graph_output=True)
                    pairs += 1
            else:
                ir.insert_on_edge(t, lambda src: _qdq(ir, src, qp, name), consumers=consumers,
                                  include_graph_output=is_out)
                pairs += 1
        weights, biases = _quantize_params(ir, plan, target, rounding)
        operands = _quantize_constant_operands(ir, plan, target, rounding)
        ctx.pass_report(self.name).update(qdq_pairs=pairs, weights=weights, int32_biases=biases,
                                          constant_operands=operands)
        return pairs + weights + operands > 0


def _qdq(ir, src, qp: QParams, base: str):
    scale = ir.constant(f"{base}_scale", np.asarray(qp.scale, dtype=np.float32))
    zp = ir.constant(f"{base}_zero_point", _storage(qp.zero_point, qp))
    attrs = {"axis": qp.axis} if qp.axis is not None else {}
    q = ir.add_node("QuantizeLinear", [src, scale, zp], attrs=attrs, name=f"{base}_Q",
                    out_dtype=zp.values.dtype, out_shape=src.shape)
    dq = ir.add_node("DequantizeLinear", [q.outputs[0], scale, zp], attrs=attrs, name=f"{base}_DQ",
                     out_dtype=src.dtype or np.float32, out_shape=src.shape)
    return dq.outputs[0]


def _dq_const(ir, values: np.ndarray, qp: QParams, base: str):
    """An integer initializer behind a DequantizeLinear; returns the DQ output."""
    q = ir.constant(f"{base}_quantized", _storage(values, qp))
    scale = ir.constant(f"{base}_scale", np.asarray(qp.scale, dtype=np.float32))
    zp = ir.constant(f"{base}_zero_point", _storage(qp.zero_point, qp))
    attrs = {"axis": qp.axis} if qp.axis is not None else {}
    dq = ir.add_node("DequantizeLinear", [q, scale, zp], attrs=attrs, name=f"{base}_DQ",
                     out_dtype=np.float32, out_shape=tuple(values.shape))
    return dq.outputs[0]


def _storage(values, qp: QParams) -> np.ndarray:
    """Integer values in the ONNX type of qp (int4/uint4 as ml_dtypes, which the IR packs)."""
    arr = np.asarray(values)
    if qp.dtype in ("int4", "uint4"):
        import ml_dtypes

        return arr.astype(ml_dtypes.int4 if qp.dtype == "int4" else ml_dtypes.uint4)
    return arr


CONST_OPERAND_OPS = ("Add", "Mul")


def _quantize_constant_operands(ir, plan: Plan, target, rounding: str) -> int:
    """Quantize float constant operands of Add/Mul kernels whose activation input is quantized."""
    nodes = {n.name: n for n in ir.graph.nodes}
    scheme = to_quant_scheme(target.scheme("activation"))
    count = 0
    for k in plan.kernels:
        anchor = nodes.get(k.nodes[0])
        if anchor is None or anchor.op not in CONST_OPERAND_OPS or len(anchor.inputs) != 2:
            continue
        if not any(name in ir.ann.qparams for name in k.inputs):
            continue  # nothing quantized feeds it, so it cannot become an integer op
        for i, t in enumerate(anchor.inputs):
            value = ir.const_value(t)
            if value is None or not is_float(t) or value.size == 0 or not np.all(np.isfinite(value)):
                continue
            qp = compute_qparams(float(value.min()), float(value.max()), scheme)
            ir.set_input(anchor, i, _dq_const(ir, quantize(value, qp, rounding), qp, f"{anchor.name}_in{i}"))
            count += 1
    return count


def _quantize_params(ir, plan: Plan, target, rounding: str):
    tensors = ir.tensors()
    nodes = {n.name: n for n in ir.graph.nodes}  # node names are unique in the IR
    done = {}
    weights = biases = 0
    for k in plan.kernels:
        if k.weight is None or k.weight not in ir.ann.qparams:
            continue
        anchor = nodes[k.nodes[0]]
        w_t = tensors[k.weight]
        w = ir.const_value(w_t)
        wqp = ir.ann.qparams[k.weight]
        if k.weight not in done:
            codes = weight_codes(ir, k.weight, w, wqp)  # chosen by AdaRound or int4 precision
            codes = quantize(w, wqp, rounding) if codes is None else codes
            done[k.weight] = _dq_const(ir, codes, wqp, k.weight)
            weights += 1
        ir.set_input(anchor, 1, done[k.weight])
        x = k.inputs[0] if k.inputs else None
        if k.bias is None or not target.placement.quantize_bias or x not in ir.ann.qparams:
            continue
        xqp = ir.ann.qparams[x]
        if xqp.axis is not None:
            continue
        b = np.asarray(ir.const_value(tensors[k.bias]), dtype=np.float64).reshape(-1)
        w_scale = np.asarray(wqp.scale, dtype=np.float64).reshape(-1)
        bscale = float(xqp.scale) * np.broadcast_to(w_scale, b.shape)
        bscale = np.maximum(bscale, np.finfo(np.float32).tiny)
        bq = np.clip(np.rint(b / bscale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        axis = 0 if bscale.size > 1 else None
        bqp = QParams(scale=bscale.astype(np.float32) if axis is not None else np.float32(bscale.reshape(-1)[0]),
                      zero_point=np.zeros(bscale.shape if axis is not None else (), np.int32), axis=axis,
                      dtype="int32")
        ir.set_input(anchor, 2, _dq_const(ir, bq, bqp, k.bias))  # 1-D: Conv and Gemm both broadcast it
        biases += 1
    return weights, biases
