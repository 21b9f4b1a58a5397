"""Bit-operations and size report.

For every multiply-accumulate layer (Conv, ConvTranspose, MatMul, Gemm, LSTM, GRU, RNN, and
the integer forms QLinearConv, QLinearMatMul, QGemm, ConvInteger, MatMulInteger):

    bitops = MACs x activation bits x weight bits

with the bits read from the graph: an input that comes out of a DequantizeLinear has the
bits of its quantized type (uint8/int8: 8, int16: 16, int4: 4), an integer op's operands
the bits of their zero points' type, any other float input its float width (32). On an
IR before place-qdq the bits come from the QParams the calibration attached. Totals, the
INT8 share of MACs and of bit-operations, and the model size (parameters at their stored
width) complete the report. An FP32 layer costs
32 x 32 = 1024 bit-operations per MAC, an INT8 one 8 x 8 = 64: a layer kept float costs
16 times its INT8 price.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import onnx
from onnx import TensorProto

# integer op -> input index of (data, weight, data zero point, weight zero point)
INTEGER_MAC_OPS = {"QLinearConv": (0, 3, 2, 5), "QLinearMatMul": (0, 3, 2, 5), "QGemm": (0, 3, 2, 5),
                   "ConvInteger": (0, 1, 2, 3), "MatMulInteger": (0, 1, 2, 3)}
# recurrent layers: gates per step (each gate a [H, I + H] matrix-vector product)
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm") + tuple(INTEGER_MAC_OPS) + tuple(RECURRENT_GATES)
_CONV_LIKE = ("Conv", "QLinearConv", "ConvInteger")

_BITS = {TensorProto.FLOAT: 32, TensorProto.FLOAT16: 16, TensorProto.BFLOAT16: 16, TensorProto.DOUBLE: 64,
         TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16, TensorProto.UINT16: 16,
         TensorProto.INT32: 32, TensorProto.UINT32: 32, TensorProto.INT64: 64, TensorProto.UINT64: 64,
         TensorProto.BOOL: 8}
for _name, _bits in (("INT4", 4), ("UINT4", 4), ("FLOAT8E4M3FN", 8), ("FLOAT8E5M2", 8)):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = _bits


def _with_input_shapes(model: onnx.ModelProto, feeds) -> onnx.ModelProto:
    from qcompiler.ir.io import external_skeleton

    m, _ = external_skeleton(model, "unused")  # a copy without the weights' data: shapes are enough
    if feeds:
        # shapes inferred earlier for other input shapes (a batch of -1 from the exporter,
        # say) would win over the concrete ones: infer again from the inputs
        del m.graph.value_info[:]
        for vi in m.graph.output:
            vi.type.tensor_type.ClearField("shape")
        for vi in m.graph.input:
            if vi.name in feeds:
                shape = np.shape(feeds[vi.name])
                dims = vi.type.tensor_type.shape.dim
                if len(dims) != len(shape):
                    continue
                for d, v in zip(dims, shape):
                    d.Clear()
                    d.dim_value = int(v)
    return m


# com.microsoft integer ops ONNX shape inference does not know, and a standard op with the
# same output shape: (op, data inputs, attributes kept)
_SHAPE_STANDINS = {
    "QLinearAdd": ("Add", (0, 3), ()), "QLinearMul": ("Mul", (0, 3), ()),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), ()),
    "QLinearAveragePool": ("AveragePool", (0,), ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape",
                                                 "pads", "strides")),
    "QLinearSigmoid": ("Sigmoid", (0,), ()), "QLinearLeakyRelu": ("LeakyRelu", (0,), ("alpha",)),
    "QLinearSoftmax": ("Softmax", (0,), ("axis",)), "QGemm": ("Gemm", (0, 3), ("transA", "transB")),
    "QLinearConcat": ("Concat", None, ("axis",)),  # inputs: Y scale, Y zero point, then (X, scale, zp)...
}


def _standard_standins(m: onnx.ModelProto) -> None:
    """Swap the com.microsoft integer ops of a shapes-only copy for their stand-ins, so shape
    inference carries on past them (an --emit qop model is mostly such ops)."""
    for node in m.graph.node:
        stand = _SHAPE_STANDINS.get(node.op_type) if node.domain == "com.microsoft" else None
        if stand is None:
            continue
        op, idx, keep = stand
        inputs = list(node.input)[2::3] if idx is None else [node.input[i] for i in idx if i < len(node.input)]
        attrs = [a for a in node.attribute if a.name in keep]
        node.op_type, node.domain = op, ""
        del node.input[:]
        node.input.extend(inputs)
        del node.attribute[:]
        node.attribute.extend(attrs)


def shapes_of(model: onnx.ModelProto, feeds=None) -> Dict[str, tuple]:
    """Static shapes of every tensor shape inference can resolve with the given input shapes."""
    m = _with_input_shapes(model, feeds)
    _standard_standins(m)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        try:
            m = onnx.shape_inference.infer_shapes(m)
        except Exception:
            pass
    shapes: Dict[str, tuple] = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = t.shape.dim
        if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in m.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    for node in m.graph.node:  # Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
    return shapes


def mac_counts(model: onnx.ModelProto, feeds=None) -> Dict[str, int]:
    """MACs per multiply-accumulate node (MAC_OPS; nodes whose shapes stay unknown are left out)."""
    shapes = shapes_of(model, feeds)
    macs: Dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in MAC_OPS or len(node.input) < 2:
            continue
        xi, wi = INTEGER_MAC_OPS.get(node.op_type, (0, 1))[:2]
        if len(node.input) <= wi:
            continue
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[wi])
        x = shapes.get(node.input[xi])
        try:
            if node.op_type in RECURRENT_GATES:
                # X [T, N, I] (layout 1: [N, T, I]); W [directions, gates * H, I]
                if x is not None and w is not None and len(x) == 3 and len(w) == 3:
                    steps = x[0] * x[1]
                    hidden = w[1] // RECURRENT_GATES[node.op_type]
                    macs[node.name] = int(steps * w[0] * w[1] * (w[2] + hidden))
            elif node.op_type in _CONV_LIKE and out is not None and w is not None and len(w) >= 2:
                macs[node.name] = int(np.prod(out)) * int(np.prod(w[1:]))
            elif node.op_type == "ConvTranspose" and x is not None and w is not None and len(w) >= 2:
                macs[node.name] = int(np.prod(x)) * int(np.prod(w[1:]))
            elif x is not None and len(x) >= 1 and w is not None and len(w) >= 2:
                # MatMul/Gemm forms: out elements x K; Gemm's output is [M, N] (transA/transB)
                attr = {a.name: a.i for a in node.attribute if a.name in ("transA", "transB")}
                k = x[-2] if (attr.get("transA") and len(x) >= 2) else x[-1]
                if out is None and node.op_type in ("Gemm", "QGemm") and len(x) == 2:
                    # QGemm (com.microsoft) has no ONNX shape inference: M from A, N from B
                    out = (x[1] if attr.get("transA") else x[0], w[0] if attr.get("transB") else w[1])
                if out is not None:
                    macs[node.name] = int(np.prod(out)) * int(k)
        except (TypeError, ValueError, IndexError):
            continue
    return macs


def _elem_types(model: onnx.ModelProto) -> Dict[str, int]:
    types: Dict[str, int] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _operand_bits(name: str, producers, types) -> int:
    """Bits an operand of a MAC op is computed in: a DequantizeLinear output counts as its
    quantized input's type; anything else as its own (float) type."""
    p = producers.get(name)
    seen = 0
    while p is not None and seen < 4:
        if p.op_type == "DequantizeLinear":
            q = p.input[0]
            t = types.get(q)
            if t is None and len(p.input) > 2 and p.input[2]:
                t = types.get(p.input[2])  # zero point carries the quantized type
            if t is None:
                qp = producers.get(q)
                if qp is not None and qp.op_type == "QuantizeLinear" and len(qp.input) > 2:
                    t = types.get(qp.input[2])
            return _BITS.get(t, 8)
        if p.op_type in ("Transpose", "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze"):
            name = p.input[0]
            p = producers.get(name)
            seen += 1
            continue
        break
    return _BITS.get(types.get(name, TensorProto.FLOAT), 32)


def _float_op_bits(node, ir, plan, pre_qdq: bool, producers, types) -> "tuple[int, int]":
    """(activation bits, weight bits) of a Conv/MatMul/Gemm in a QDQ model (or an IR before
    place-qdq, from its QParams)."""
    a_bits = _operand_bits(node.input[0], producers, types)
    w_bits = _operand_bits(node.input[1], producers, types)
    if pre_qdq:
        a = _bits_from_ir(ir, plan, node.name, 0)
        w = _bits_from_ir(ir, plan, node.name, 1)
        return (a or a_bits), (w or w_bits)
    a_q, w_q = _is_quantized(node.input[0], producers), _is_quantized(node.input[1], producers)
    if not (a_q and w_q):
        # one float operand: the layer computes in float (a DQ'd input is float by then)
        fb = max(_BITS.get(types.get(node.input[0], TensorProto.FLOAT), 32) if not a_q else 0,
                 _BITS.get(types.get(node.input[1], TensorProto.FLOAT), 32) if not w_q else 0)
        return fb, fb
    return a_bits, w_bits


def _zero_point_bits(node, index: int, types) -> int:
    """Bits of an integer op's operand: its zero point's type (uint8 where it is absent)."""
    if len(node.input) > index and node.input[index]:
        return _BITS.get(types.get(node.input[index], TensorProto.UINT8), 8)
    return 8


def _is_quantized(name: str, producers) -> bool:
    p = producers.get(name)
    for _ in range(5):
        if p is None:
            return False
        if p.op_type == "DequantizeLinear":
            return True
        if p.op_type not in ("Transpose", "Reshape", "Identity", "Flatten", "Squeeze", "Unsqueeze"):
            return False
        p = producers.get(p.input[0])
    return False


def _bits_from_ir(ir, plan, node_name: str, index: int) -> Optional[int]:
    from qcompiler.quant.scheme import dtype_bits

    for k in (plan.kernels if plan is not None else ()):
        if node_name not in k.nodes:
            continue
        tname = k.weight if index == 1 else (k.inputs[0] if k.inputs else None)
        qp = ir.ann.qparams.get(tname) if tname else None
        return dtype_bits(qp.dtype) if qp is not None else None
    return 32  # not in a kernel: float


def model_size(model: onnx.ModelProto) -> Dict[str, int]:
    """Parameter bytes at their stored width (int4 packed two a byte) and parameter count."""
    total_bits = 0
    params = 0
    float_params = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        params += n
        bits = _BITS.get(init.data_type, 32)
        total_bits += n * bits
        if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            float_params += n
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    n = int(np.prod(a.t.dims)) if len(a.t.dims) else 1
                    params += n
                    total_bits += n * _BITS.get(a.t.data_type, 32)
    return {"parameter_bytes": int((total_bits + 7) // 8), "parameters": params,
            "float_parameters": float_params, "serialized_bytes": _serialized_bytes(model)}


def _serialized_bytes(model: onnx.ModelProto) -> int:
    from qcompiler.ir.io import model_size

    return model_size(model)  # ByteSize() serializes the whole model, and fails over 2 GB


def bitops_report(ir_or_model, plan=None, feeds=None,
                  model: Optional[onnx.ModelProto] = None) -> Dict:
    """Per-layer MACs x activation bits x weight bits, totals and model size.

    `ir_or_model`: an IR (after place-qdq, or before it with calibrated QParams) or an
    exported ONNX model; `plan`: the quantization plan (default the IR's `ir.ann.plan`;
    optional, it names the kernel of each layer); `feeds`: one input batch (its shapes
    resolve dynamic dimensions); `model`: the IR already exported (saves exporting it again)."""
    ir = None
    if isinstance(ir_or_model, onnx.ModelProto):
        model = ir_or_model
    else:
        from qcompiler.ir import ir_to_model

        ir = ir_or_model
        model = model if model is not None else ir_to_model(ir)
        if plan is None:
            plan = ir.ann.plan
    macs = mac_counts(model, feeds)
    types = _elem_types(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    pre_qdq = ir is not None and not any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    kernel_of = {n: k.name for k in (plan.kernels if plan is not None else ()) for n in k.nodes}
    layers = []
    for node in model.graph.node:
        if node.op_type not in MAC_OPS or node.name not in macs:
            continue
        m = macs[node.name]
        if node.op_type in INTEGER_MAC_OPS:
            _, _, xz, wz = INTEGER_MAC_OPS[node.op_type]
            a_bits, w_bits = _zero_point_bits(node, xz, types), _zero_point_bits(node, wz, types)
        elif node.op_type in RECURRENT_GATES:  # no INT8 recurrent kernel in any target: float
            a_bits = w_bits = 32
        else:
            a_bits, w_bits = _float_op_bits(node, ir, plan, pre_qdq, producers, types)
        layers.append({"name": node.name, "op": node.op_type, "kernel": kernel_of.get(node.name),
                       "macs": m, "activation_bits": a_bits, "weight_bits": w_bits,
                       "bitops": m * a_bits * w_bits})
    total_macs = sum(x["macs"] for x in layers)
    total_bitops = sum(x["bitops"] for x in layers)
    int8_macs = sum(x["macs"] for x in layers if x["activation_bits"] <= 8 and x["weight_bits"] <= 8)
    fp32_bitops = total_macs * 32 * 32
    return {
        "layers": layers,
        "total_macs": total_macs,
        "total_bitops": total_bitops,
        "fp32_bitops": fp32_bitops,
        "bitops_ratio_vs_fp32": round(total_bitops / fp32_bitops, 6) if fp32_bitops else None,
        "int8_macs": int8_macs,
        "int8_mac_share": round(int8_macs / total_macs, 6) if total_macs else None,
        "float_macs": sum(x["macs"] for x in layers if x["activation_bits"] > 16 or x["weight_bits"] > 16),
        "size": model_size(model),
    }


def format_bitops(rep: Dict, top: int = 10) -> str:
    lines = [f"MACs {rep['total_macs'] / 1e6:.2f} M   bit-ops {rep['total_bitops'] / 1e9:.3f} G "
             f"({100 * (rep['bitops_ratio_vs_fp32'] or 0):.1f}% of FP32)   INT8 MAC share "
             f"{100 * (rep['int8_mac_share'] or 0):.1f}%   parameters {rep['size']['parameter_bytes'] / 1e6:.2f} MB"]
    worst = sorted(rep["layers"], key=lambda x: -x["bitops"])[:top]
    if worst:
        lines.append(f"  {'layer':<40} {'MACs':>12} {'A':>3} {'W':>3} {'bit-ops':>14}")
        for x in worst:
            lines.append(f"  {x['name'][:40]:<40} {x['macs']:>12,} {x['activation_bits']:>3} {x['weight_bits']:>3} "
                         f"{x['bitops']:>14,}")
    return "\n".join(lines)


def mac_summary(rep: Dict) -> Dict:
    """The build report's "macs" entry from a bitops_report: total, INT8 MACs, INT8 share."""
    share = rep["int8_mac_share"]
    return {"total_macs": rep["total_macs"], "int8_macs": rep["int8_macs"],
            "int8_share": round(share, 4) if share is not None else None}
