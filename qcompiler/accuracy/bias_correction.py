"""Bias correction (Nagel et al. 2019, section 4.2).

Quantizing a layer's weights, W -> W_q = W + eps, shifts the expected value of its
outputs by E[eps x] = eps E[x] (per output channel). The error is systematic, it does not
average out, and it adds up through the layers. Subtracting it from the bias removes it:

    b <- b - (E[W_q x] - E[W x]) = b - eps E[x]

E[x] comes from calibration data (measured on the float model: the mean input map per
position, so that zero padding at the borders is accounted for exactly), or, data-free,
from the BatchNorm statistics propagated to the layer's input (per channel; exact away
from zero padding). Conv and Gemm get the correction; MatMul has no bias input and is
skipped.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qcompiler.quant.plan import Plan
from qcompiler.quant.qparams import fake_quant

from .common import Layer, bias_vector, node_map, set_bias


def measure_input_means(ir, names, batches) -> Dict[str, np.ndarray]:
    """E[x] over the batch axis for each tensor (the mean map [C, ...]); where shapes vary
    from batch to batch, the per-channel mean [C] instead."""
    from qcompiler.ir.io import ir_to_model
    from qcompiler.quant.session import session_with_outputs

    names = list(dict.fromkeys(names))
    sess = session_with_outputs(ir_to_model(ir), names)
    inputs = {i.name for i in sess.get_inputs()}
    sums: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    chan: Dict[str, list] = {n: [0.0, 0] for n in names}
    varying = set()
    for b in batches:
        outs = sess.run(names, {k: v for k, v in b.items() if k in inputs})
        for n, v in zip(names, outs):
            v = np.asarray(v, np.float64)
            if v.ndim < 2:
                continue
            c = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)
            chan[n][0] = chan[n][0] + c.sum(axis=1)
            chan[n][1] += c.shape[1]
            if n in varying:
                continue
            s = v.sum(axis=0)
            if n in sums and sums[n].shape != s.shape:
                varying.add(n)
                continue
            sums[n] = sums.get(n, 0) + s
            counts[n] = counts.get(n, 0) + v.shape[0]
    out = {}
    for n in names:
        if n in sums and n not in varying:
            out[n] = sums[n] / counts[n]
        elif chan[n][1]:
            out[n] = chan[n][0] / chan[n][1]
    return out


def _conv_of_map(node, eps: np.ndarray, mean_map: np.ndarray) -> Optional[np.ndarray]:
    """Mean over output positions of conv(mean_map, eps): the exact expected output shift."""
    import onnxruntime as ort

    attrs = {k: v for k, v in node.attrs.items() if k in ("kernel_shape", "pads", "strides", "dilations", "group",
                                                          "auto_pad")}
    x = mean_map[None].astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "bc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(eps.astype(np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        y = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    except Exception:
        return None
    return y[0].reshape(y.shape[1], -1).astype(np.float64).mean(axis=1)


def correct_biases(ir, expected: Dict[str, np.ndarray], rounding: str = "half_to_even") -> Dict:
    """Subtract eps E[x] from every weighted kernel's bias; `expected` maps input tensor
    names to E[x] (a mean map [C, ...] or per-channel [C]). Returns a report."""
    plan_json = ir.ann.notes["quant_plan"]
    plan = Plan.from_json(plan_json)
    nodes = node_map(ir)
    tensors = ir.tensors()
    corrected, skipped = {}, {}
    for ki, k in enumerate(plan.kernels):
        if k.weight is None or k.weight not in ir.ann.qparams:
            continue
        node = nodes.get(k.nodes[0])
        if node is None or not Layer.supported(ir, node) or node.inputs[1].name != k.weight:
            skipped[k.name] = "not a Conv/Gemm with its weight in place"
            continue
        if node.op == "MatMul":
            skipped[k.name] = "MatMul has no bias input"
            continue
        x_name = node.inputs[0].name
        mu = expected.get(x_name)
        if mu is None:
            skipped[k.name] = f"no expected value for its input {x_name}"
            continue
        layer = Layer(ir, node)
        w = layer.w
        wq = fake_quant(w.astype(np.float32), ir.ann.qparams[k.weight], rounding).astype(np.float64)
        eps = wq - w
        shift = None
        if node.op == "Conv" and mu.ndim == w.ndim - 1 and mu.shape[0] == layer.cin:
            shift = _conv_of_map(node, eps, mu)
        if shift is None:
            v = mu if mu.ndim == 1 else mu.reshape(mu.shape[0], -1).mean(axis=1)
            if v.size == 1:
                v = np.full(layer.cin, float(v[0]))
            if v.size != layer.cin:
                skipped[k.name] = f"input has {v.size} channels, the layer reads {layer.cin}"
                continue
            shift = layer.apply_to_channel_vector(eps, v)
        b = bias_vector(ir, node, layer.cout)
        dtype = np.dtype(tensors[k.weight].dtype or np.float32)
        c = set_bias(ir, node, b - shift, dtype if dtype.kind == "f" else np.float32)
        plan_json["kernels"][ki]["bias"] = c.name
        ref = float(np.sqrt(np.mean(b ** 2))) if b.size else 0.0
        corrected[k.name] = {"max_shift": float(np.max(np.abs(shift))), "bias_rms": ref}
    return {"corrected": len(corrected), "skipped": skipped, "layers": corrected}
