"""Models that are already quantized: what form they are in, and the Q/DQ form read back
into FP32 tensors plus quantization parameters (the import-qdq pass builds on this).

Forms (:func:`detect_form`):

    float      no quantization ops
    qdq        QuantizeLinear/DequantizeLinear pairs around float ops (ONNX Runtime's
               quantize_static in QDQ format, PyTorch/TensorFlow QAT exports, TensorRT
               explicit quantization models): importable, parameters kept
    qoperator  integer operators with built-in requantization (QLinearConv,
               QLinearMatMul, QGemm, QLinearAdd, ...): ONNX Runtime's QOperator format
    integer    dynamic quantization (DynamicQuantizeLinear + MatMulInteger / ConvInteger,
               DynamicQuantizeMatMul, DynamicQuantizeLSTM)

:func:`strip_qdq` removes every activation Q->DQ pair and every DQ(constant) weight or
bias, leaving a float graph and :class:`Imported` records of what was quantized how.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from qcompiler.errors import ModelError
from qcompiler.quant.qparams import QParams, dequantize, quantize

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
                 "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
                 "QLinearSoftmax", "QLinearWhere", "QLinearReduceMean", "QLinearConvTranspose", "QAttention",
                 "QEmbedLayerNormalization", "QOrderedMatMul")
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "MatMulNBits")

_ONNX_TO_NAME = {2: "uint8", 3: "int8", 5: "int16", 4: "uint16", 6: "int32", 21: "uint4", 22: "int4"}


@dataclass
class QuantForm:
    form: str  # float | qdq | qoperator | integer | mixed
    counts: Dict[str, int] = field(default_factory=dict)
    message: str = ""


def detect_form(model_or_ir) -> QuantForm:
    """Which quantized form a model (ModelProto or IR) is in, with a message for users."""
    ops = _op_counts(model_or_ir)
    qop = {k: v for k, v in ops.items() if k in QOPERATOR_OPS}
    integer = {k: v for k, v in ops.items() if k in INTEGER_OPS}
    qdq = {k: v for k, v in ops.items() if k in QDQ_OPS}
    listing = lambda d: ", ".join(f"{v} {k}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))  # noqa: E731
    if qop:
        return QuantForm("qoperator" if not integer else "mixed", {**qop, **integer, **qdq}, (
            f"the model is in ONNX Runtime's QOperator form ({listing(qop)}): its integer kernels carry their own "
            "requantization, there are no Q/DQ pairs to re-target. It runs as it is in ONNX Runtime. To build it "
            "for a target, quantize the FP32 model with qcompiler (--calib), or re-export it in QDQ form "
            "(onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)) and import that"))
    if integer:
        return QuantForm("integer", {**integer, **qdq}, (
            f"the model is dynamically quantized ({listing(integer)}): int8 weights, activations quantized at run "
            "time, no static activation scales to import. It runs as it is in ONNX Runtime; qcompiler makes this "
            "form from the FP32 model with mode: dynamic, or a static build for a target from the FP32 model "
            "with --calib"))
    if qdq:
        return QuantForm("qdq", qdq, f"the model holds Q/DQ nodes ({listing(qdq)}): importable")
    return QuantForm("float", {}, "the model holds no quantization nodes: build it from FP32 with --calib "
                                  "(import-qdq is for models that are already quantized)")


def _op_counts(model_or_ir) -> Counter:
    if hasattr(model_or_ir, "graph") and hasattr(model_or_ir.graph, "nodes"):
        return Counter(n.op for n in model_or_ir.graph.nodes)
    return Counter(n.op_type for n in model_or_ir.graph.node)


# ---------------------------------------------------------------- reading Q/DQ


@dataclass
class ImportedWeight:
    qparams: QParams
    codes: np.ndarray  # integer values as stored
    consumers: List[str] = field(default_factory=list)


@dataclass
class Imported:
    activations: Dict[str, QParams] = field(default_factory=dict)  # float tensor -> its Q/DQ params
    weights: Dict[str, ImportedWeight] = field(default_factory=dict)  # new float constant -> codes, params
    biases: Dict[str, QParams] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    pairs: int = 0


def _dtype_name(ir, t, fallback: str = "uint8") -> str:
    v = ir.const_value(t) if t is not None and t.name else None
    if v is not None:
        name = str(np.asarray(v).dtype)
        return {"int4": "int4", "uint4": "uint4"}.get(name, name)
    return fallback


def _params(ir, node) -> Optional[QParams]:
    """QParams of a Q or DQ node from its constant scale and zero point (None if not constant)."""
    scale = ir.const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        return None
    zp_t = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    zp = ir.const_value(zp_t) if zp_t is not None else None
    if zp_t is not None and zp is None:
        return None
    if zp is None:
        dtype = "uint8"
        if node.op == "DequantizeLinear":
            codes = ir.const_value(node.inputs[0])
            if codes is not None:
                dtype = str(np.asarray(codes).dtype)
        zp = np.zeros(np.shape(scale), dtype=np.int64)
    else:
        dtype = str(np.asarray(zp).dtype)
    dtype = {"int4": "int4", "uint4": "uint4"}.get(dtype, dtype)
    scale = np.asarray(scale, dtype=np.float32)
    if int(node.attrs.get("block_size", 0) or 0):
        raise ModelError(f"{node.op} '{node.name}' uses blocked quantization (block_size), which qcompiler does "
                         "not import", "re-export with per-tensor or per-channel scales")
    axis = None
    if scale.size > 1 or scale.ndim == 1:
        axis = int(node.attrs.get("axis", 1))
        scale = scale.reshape(-1)
        zp = np.asarray(zp).reshape(-1)
        if scale.size == 1 and np.asarray(zp).size == 1:
            axis = None
    if axis is None:
        scale = scale.reshape(())
        zp = np.asarray(zp).reshape(())
    return QParams(scale=scale, zero_point=np.asarray(zp).astype(np.int64), axis=axis, dtype=dtype)


def strip_qdq(ir) -> Imported:
    """Remove the model's Q/DQ nodes (see module doc); the IR becomes a float graph."""
    imp = Imported()
    for dq in [n for n in ir.graph.nodes if n.op == "DequantizeLinear"]:
        if not dq.outputs:
            continue
        x = dq.inputs[0]
        qp = _params(ir, dq)
        if qp is None:
            raise ModelError(f"DequantizeLinear '{dq.name}' has a scale or zero point that is not a constant",
                             "qcompiler imports Q/DQ models with constant quantization parameters")
        out = dq.outputs[0]
        codes = ir.const_value(x)
        src = ir.producer(x)
        if codes is None and src is not None and src.op == "QuantizeLinear" and ir.const_value(src.inputs[0]) is not None:
            qq = _params(ir, src)  # Q(constant float) -> DQ: a weight quantized in the graph
            codes = quantize(ir.const_value(src.inputs[0]), qq)
        if codes is not None:
            codes = np.asarray(codes)
            if codes.dtype.kind not in "iu" and str(codes.dtype) not in ("int4", "uint4"):
                raise ModelError(f"DequantizeLinear '{dq.name}' reads a {codes.dtype} constant",
                                 "expected integer codes")
            if qp.axis is not None and qp.axis < 0:
                qp = QParams(qp.scale, qp.zero_point, qp.axis + codes.ndim, qp.dtype)
            ints = codes.astype(np.int64)
            value = dequantize(ints, qp)
            base = x.name[: -len("_quantized")] if x.name.endswith("_quantized") else out.name
            const = ir.constant(base if base != out.name else out.name + "_float", value)
            consumers = [c.name for c in out.outputs]
            ir.replace_uses(out, const)
            ir.remove_node(dq)
            if const.name == out.name + "_float":
                ir.rename_tensor(const, out.name)  # the bias keeps its name
            if src is not None and src.op == "QuantizeLinear" and not src.outputs[0].outputs:
                ir.remove_node(src)
            if qp.dtype == "int32":
                imp.biases[const.name] = qp
            else:
                imp.weights[const.name] = ImportedWeight(qp, ints, consumers)
            continue
        if src is None or src.op != "QuantizeLinear":
            raise ModelError(f"DequantizeLinear '{dq.name}' reads '{x.name}', which no QuantizeLinear makes "
                             "(an integer model input?)", "qcompiler imports models with float inputs and outputs")
        qq = _params(ir, src)
        if qq is None:
            raise ModelError(f"QuantizeLinear '{src.name}' has a scale or zero point that is not a constant",
                             "qcompiler imports Q/DQ models with constant quantization parameters")
        if qq != qp:
            imp.warnings.append(f"QuantizeLinear '{src.name}' and DequantizeLinear '{dq.name}' have different "
                                "parameters; the DequantizeLinear's are kept")
        t = src.inputs[0]
        ir.replace_uses(out, t)  # a graph output keeps its name: t may be renamed here
        prev = imp.activations.get(t.name)
        if prev is not None and prev != qp:
            imp.warnings.append(f"tensor '{t.name}' has Q/DQ pairs with different parameters; the first is kept")
        else:
            imp.activations[t.name] = qp
        imp.pairs += 1
        ir.remove_node(dq)
        if not src.outputs[0].outputs and not ir.is_graph_output(src.outputs[0]):
            ir.remove_node(src)
    left = [n for n in ir.graph.nodes if n.op == "QuantizeLinear"]
    if left:
        n = left[0]
        raise ModelError(f"QuantizeLinear '{n.name}' is not followed by a DequantizeLinear (the model hands out "
                         "integers)", "qcompiler imports models with float inputs and outputs")
    return imp
