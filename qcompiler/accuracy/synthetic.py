"""Models for testing the accuracy tools: small conv nets whose BatchNorm statistics match
their data (as a trained net's do), and "sabotage": rescaling the channels of one layer
by orders of magnitude and compensating in the next, which leaves the FP32 function
unchanged but ruins per-tensor quantization of the activation in between (the failure
mode that cross-layer equalization repairs and that the sensitivity analysis must find).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["cle_net", "reestimate_bn", "sabotage_channels", "gaussian_batches"]


def _conv(nodes, inits, rng, x, cin, cout, k, name, group=1, stride=1, spread=0.25):
    fan_in = (cin // group) * k * k
    w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
    w *= np.exp(rng.normal(0, spread, size=cout)).reshape(-1, 1, 1, 1)
    inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}.weight"))
    out = f"{name}.out"
    nodes.append(helper.make_node("Conv", [x, f"{name}.weight"], [out], name=name, kernel_shape=[k, k],
                                  pads=[k // 2] * 4, strides=[stride, stride], group=group))
    return out


def _bn(nodes, inits, rng, x, c, name):
    g = rng.uniform(0.2, 1.5, c)
    b = rng.normal(0.5, 0.8, c)  # some channels mostly positive: high-bias absorption has work
    names = [f"{name}.{s}" for s in ("weight", "bias", "running_mean", "running_var")]
    for n, a in zip(names, (g, b, np.zeros(c), np.ones(c))):
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), n))
    out = f"{name}.out"
    nodes.append(helper.make_node("BatchNormalization", [x] + names, [out], name=name, epsilon=1e-5))
    return out


def cle_net(channels: int = 16, hw: int = 16, depthwise: bool = True, blocks: int = 2, seed: int = 0,
            batch="N", opset: int = 13) -> onnx.ModelProto:
    """stem Conv3x3-BN-Relu, then `blocks` x (Conv1x1-BN-Relu -> [depthwise 3x3-BN-Relu ->]
    Conv1x1-BN-Relu), then a 1x1 conv head: Conv -> Relu -> Conv pairs (dense and depthwise)
    for equalization. BN statistics are placeholders: call :func:`reestimate_bn`."""
    rng = np.random.default_rng(seed)
    nodes: List = []
    inits: List = []
    x = "input"
    y = _conv(nodes, inits, rng, x, 3, channels, 3, "stem.conv")
    y = _bn(nodes, inits, rng, y, channels, "stem.bn")
    nodes.append(helper.make_node("Relu", [y], ["stem.relu.out"], name="stem.relu"))
    y = "stem.relu.out"
    for b in range(blocks):
        hidden = channels * 2
        y = _conv(nodes, inits, rng, y, channels, hidden, 1, f"block{b}.expand.conv")
        y = _bn(nodes, inits, rng, y, hidden, f"block{b}.expand.bn")
        nodes.append(helper.make_node("Relu", [y], [f"block{b}.expand.relu.out"], name=f"block{b}.expand.relu"))
        y = f"block{b}.expand.relu.out"
        if depthwise:
            y = _conv(nodes, inits, rng, y, hidden, hidden, 3, f"block{b}.dw.conv", group=hidden, spread=0.6)
            y = _bn(nodes, inits, rng, y, hidden, f"block{b}.dw.bn")
            nodes.append(helper.make_node("Relu", [y], [f"block{b}.dw.relu.out"], name=f"block{b}.dw.relu"))
            y = f"block{b}.dw.relu.out"
        y = _conv(nodes, inits, rng, y, hidden, channels, 1, f"block{b}.project.conv")
        y = _bn(nodes, inits, rng, y, channels, f"block{b}.project.bn")
        nodes.append(helper.make_node("Relu", [y], [f"block{b}.project.relu.out"], name=f"block{b}.project.relu"))
        y = f"block{b}.project.relu.out"
    y = _conv(nodes, inits, rng, y, channels, 8, 1, "head.conv")
    nodes[-1].output[0] = "output"
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, hw, hw])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 8, hw, hw])
    graph = helper.make_graph(nodes, "cle_net", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="qcompiler.accuracy.synthetic")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def gaussian_batches(model: onnx.ModelProto, n: int = 8, batch: int = 4, seed: int = 0,
                     dims: Optional[Dict[str, int]] = None) -> List[Dict[str, np.ndarray]]:
    """n batches of standard-normal inputs (dynamic dims: `batch` for the first, else 16)."""
    rng = np.random.default_rng(seed)
    out = []
    inits = {i.name for i in model.graph.initializer}
    for _ in range(n):
        feed = {}
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            shape = []
            for i, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(d.dim_value)
                else:
                    shape.append(batch if i == 0 else (dims or {}).get(d.dim_param, 16))
            feed[vi.name] = rng.standard_normal(shape).astype(np.float32)
        out.append(feed)
    return out


def _session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def reestimate_bn(model: onnx.ModelProto, batches: Sequence[Dict[str, np.ndarray]]) -> onnx.ModelProto:
    """Set every BatchNormalization's running mean/var to its input's statistics on
    `batches`, in graph order (each BN sees the already re-estimated ones before it), so
    that the model's BN statistics describe its data as a trained model's do."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
        sess = _session(probe)
        vals = [sess.run([node.input[0]], b)[0] for b in batches]
        x = np.concatenate([np.moveaxis(v, 1, 0).reshape(v.shape[1], -1) for v in vals], axis=1)
        mean, var = x.mean(axis=1), x.var(axis=1)
        for name, arr in ((node.input[3], mean), (node.input[4], var)):
            inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))
    return m


def sabotage_channels(model: onnx.ModelProto, layer: str, factors: Optional[Iterable[float]] = None,
                      seed: int = 0) -> onnx.ModelProto:
    """Scale output channel i of `layer` (a Conv node, or the BatchNormalization right after
    it when there is one: its gamma and beta) by factors[i] and divide input channel i of
    the conv(s) that read it (through Relu/LeakyRelu/MaxPool) by the same factor. The FP32
    function is unchanged (up to float rounding). Default factors: log-uniform in
    [1e-2, 1e2], so the channels of the activation in between span four decades.
    Weights may be initializers or Constant nodes. A factor of 1 everywhere but one
    channel makes a single outlier channel (bench/bench_accuracy.py does that to PP-OCR's
    direction classifier)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    for n in g.node:  # weights held by Constant nodes (Paddle2ONNX exports) are edited in place
        if n.op_type == "Constant" and n.output and n.output[0] not in inits:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    inits[n.output[0]] = a.t
    by_name = {n.name: n for n in g.node}
    readers: Dict[str, List] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    conv = by_name[layer]
    out = conv.output[0]
    bn = None
    if len(readers.get(out, [])) == 1 and readers[out][0].op_type == "BatchNormalization":
        bn = readers[out][0]
        out = bn.output[0]
    w = numpy_helper.to_array(inits[conv.input[1]])
    c = w.shape[0]
    if factors is None:
        factors = 10.0 ** np.random.default_rng(seed).uniform(-2, 2, size=c)
    f = np.asarray(list(factors), dtype=np.float64)
    if f.size != c:
        raise ValueError(f"{layer} has {c} output channels, got {f.size} factors")

    def scale(name, s, shape):
        arr = numpy_helper.to_array(inits[name]).astype(np.float64) * s.reshape(shape)
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), inits[name].name))

    if bn is not None:
        scale(bn.input[1], f, (-1,))
        scale(bn.input[2], f, (-1,))
    else:
        scale(conv.input[1], f, (-1, 1, 1, 1))
        if len(conv.input) > 2 and conv.input[2]:
            scale(conv.input[2], f, (-1,))
    t = out
    while True:
        rs = readers.get(t, [])
        if len(rs) == 1 and rs[0].op_type in ("Relu", "LeakyRelu", "MaxPool"):
            t = rs[0].output[0]
            continue
        break
    targets = readers.get(t, [])
    if not targets or any(r.op_type != "Conv" for r in targets):
        raise ValueError(f"the output of {layer} is not read by convs (through Relu): cannot compensate")
    for r in targets:
        w2 = numpy_helper.to_array(inits[r.input[1]]).astype(np.float64)
        group = next((a.i for a in r.attribute if a.name == "group"), 1)
        cin_g, cout_g = w2.shape[1], w2.shape[0] // group
        w2 = w2.reshape(group, cout_g, cin_g, -1) / f.reshape(group, 1, cin_g, 1)
        inits[r.input[1]].CopyFrom(numpy_helper.from_array(
            w2.reshape(numpy_helper.to_array(inits[r.input[1]]).shape).astype(np.float32), inits[r.input[1]].name))
    return m
