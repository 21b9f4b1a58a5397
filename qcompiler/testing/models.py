"""Synthetic ONNX models shared by tests, examples and benchmarks.

Every builder returns a fresh ``onnx.ModelProto`` that passes
``onnx.checker.check_model(model, full_check=True)`` and runs in ONNX Runtime.
Models are deterministic: all weights come from ``np.random.default_rng(seed)``.

The weights imitate a trained network rather than being all-ones toys:

* conv / gemm weights use He-normal scaling with a per-output-channel log-normal
  spread (wider for depthwise convs, as in real MobileNets), so per-channel and
  per-tensor weight quantization give visibly different results;
* every BatchNormalization has non-trivial gamma, beta, running mean and running
  variance, so a BN-folding pass that ignores any of the four is caught by a
  numerical comparison.

Default opset is 13 (``opset=13``).  Exceptions, all documented on the builder:
``conv_bias_add_act("HardSwish")`` needs opset >= 14 (HardSwish was added in
opset 14) and ``opset11_model`` defaults to opset 11.

Tensor naming follows the PyTorch style: node ``layer1.0.conv1`` reads
``layer1.0.conv1.weight`` and writes ``layer1.0.conv1.out``.  The graph input is
called ``input`` and, for single-output models, the graph output ``output``.

Batch dimension: builders take ``batch=1``; pass a string (e.g. ``"N"``) to get
a symbolic (dynamic) batch dimension.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ACTIVATIONS",
    "BUILDERS",
    "cnn_lstm",
    "yolox_like",
    "conv_bn_relu",
    "convtranspose_bn",
    "gemm_bn",
    "matmul_bn",
    "shared_weight_conv_bn",
    "standalone_bn",
    "conv_bias_add_act",
    "fused_group_with_middle_output",
    "identity_dropout_constant",
    "opset11_model",
    "residual_concat_net",
    "resnet18_like",
    "mobilenet_like",
    "residual_chain",
    "with_external_data",
    "weights_to_constant_nodes",
]

Dim = Union[int, str]

BN_EPSILON = 1e-5

#: Activation names accepted by :func:`conv_bias_add_act`.
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoidMul", "SigmoidMul")
_ACT_ALIASES = {
    "relu": "Relu",
    "clip": "Clip",
    "relu6": "Clip",
    "leakyrelu": "LeakyRelu",
    "hardswish": "HardSwish",
    "hardsigmoidmul": "HardSigmoidMul",
    "hardsigmoid": "HardSigmoidMul",
    "sigmoidmul": "SigmoidMul",
    "silu": "SigmoidMul",
    "swish": "SigmoidMul",
}


# --------------------------------------------------------------------------------------
# Internal graph builder
# --------------------------------------------------------------------------------------


class _Builder:
    """Accumulates nodes and initializers; hands out realistic random weights."""

    def __init__(self, seed: int, opset: int):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self._names: set = set()
        self._shared_consts: Dict[Tuple, str] = {}

    # ---- naming -------------------------------------------------------------------
    def unique(self, name: str) -> str:
        if name not in self._names:
            self._names.add(name)
            return name
        i = 1
        while f"{name}_{i}" in self._names:
            i += 1
        self._names.add(f"{name}_{i}")
        return f"{name}_{i}"

    # ---- tensors ------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[Dim], elem_type=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        self._names.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        name = self.unique(name)
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def scalar(self, value: float) -> str:
        """A shared float32 scalar initializer (exporters share these, so do we)."""
        key = ("f32", float(value))
        if key not in self._shared_consts:
            label = f"{value:g}".replace("-", "m").replace(".", "p")
            self._shared_consts[key] = self.init(f"const_{label}", np.array(value, np.float32))
        return self._shared_consts[key]

    def node(self, op: str, inputs: Sequence[str], name: str, n_out: int = 1, **attrs) -> str:
        name = self.unique(name)
        if n_out == 1:
            outputs = [name + ".out"]
        else:
            outputs = [f"{name}.out{i}" for i in range(n_out)]
        for o in outputs:
            self._names.add(o)
        self.nodes.append(helper.make_node(op, list(inputs), outputs, name=name, **attrs))
        return outputs[0]

    # ---- realistic random parameters ---------------------------------------------
    def he_weight(self, shape: Sequence[int], fan_in: int, channel_axis: int = 0,
                  spread: float = 0.25) -> np.ndarray:
        w = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        if spread > 0:
            s = np.exp(self.rng.normal(0.0, spread, size=shape[channel_axis]))
            bshape = [1] * len(shape)
            bshape[channel_axis] = shape[channel_axis]
            w = w * s.reshape(bshape)
        return w.astype(np.float32)

    def bias(self, n: int, scale: float = 0.1) -> np.ndarray:
        return (self.rng.standard_normal(n) * scale).astype(np.float32)

    def bn_params(self, c: int, gamma: Tuple[float, float] = (0.5, 1.5),
                  var: Tuple[float, float] = (0.3, 3.0)) -> Tuple[np.ndarray, ...]:
        rng = self.rng
        g = rng.uniform(*gamma, size=c)
        b = rng.normal(0.0, 0.2, size=c)
        m = rng.normal(0.0, 0.5, size=c)
        v = np.exp(rng.uniform(np.log(var[0]), np.log(var[1]), size=c))
        return tuple(a.astype(np.float32) for a in (g, b, m, v))

    # ---- layers -------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1,
             pad: Optional[int] = None, groups: int = 1, bias: bool = True,
             spread: Optional[float] = None, dilation: int = 1) -> str:
        if cin % groups or cout % groups:
            raise ValueError(f"{name}: cin={cin} and cout={cout} must be divisible by groups={groups}")
        if pad is None:
            pad = (k // 2) * dilation
        fan_in = (cin // groups) * k * k
        if spread is None:
            spread = 0.6 if groups > 1 and groups == cin else 0.25
        w = self.he_weight((cout, cin // groups, k, k), fan_in, 0, spread)
        ins = [x, self.init(f"{name}.weight", w)]
        if bias:
            ins.append(self.init(f"{name}.bias", self.bias(cout)))
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        if groups != 1:
            attrs["group"] = groups
        if dilation != 1:
            attrs["dilations"] = [dilation, dilation]
        return self.node("Conv", ins, name, **attrs)

    def bn(self, x: str, c: int, name: str, **kw) -> str:
        g, b, m, v = self.bn_params(c, **kw)
        ins = [x] + [self.init(f"{name}.{s}", a)
                     for s, a in zip(("weight", "bias", "running_mean", "running_var"), (g, b, m, v))]
        return self.node("BatchNormalization", ins, name, epsilon=BN_EPSILON, momentum=0.9)

    def relu(self, x: str, name: str) -> str:
        return self.node("Relu", [x], name)

    def relu6(self, x: str, name: str) -> str:
        if self.opset >= 11:
            return self.node("Clip", [x, self.scalar(0.0), self.scalar(6.0)], name)
        return self.node("Clip", [x], name, min=0.0, max=6.0)

    def add(self, a: str, b: str, name: str) -> str:
        return self.node("Add", [a, b], name)

    def conv_bn_act(self, x: str, cin: int, cout: int, k: int, name: str, act: Optional[str] = "relu",
                    stride: int = 1, groups: int = 1, conv_bias: bool = False) -> str:
        y = self.conv(x, cin, cout, k, f"{name}.conv", stride=stride, groups=groups, bias=conv_bias)
        y = self.bn(y, cout, f"{name}.bn")
        if act == "relu":
            y = self.relu(y, f"{name}.relu")
        elif act == "relu6":
            y = self.relu6(y, f"{name}.relu6")
        elif act is not None:
            raise ValueError(act)
        return y

    def gap_flatten_gemm(self, x: str, c: int, num_classes: int, name: str = "fc") -> str:
        y = self.node("GlobalAveragePool", [x], "avgpool")
        y = self.node("Flatten", [y], "flatten", axis=1)
        w = self.he_weight((num_classes, c), c, 0, spread=0.1) * np.float32(0.5)
        return self.node("Gemm", [y, self.init(f"{name}.weight", w),
                                  self.init(f"{name}.bias", self.bias(num_classes, 0.01))],
                         name, alpha=1.0, beta=1.0, transB=1)

    # ---- finish -------------------------------------------------------------------
    def model(self, outputs: Union[str, Sequence[str]], graph_name: str,
              output_names: Optional[Sequence[str]] = None) -> onnx.ModelProto:
        if isinstance(outputs, str):
            outputs = [outputs]
        outputs = list(outputs)
        if output_names is None:
            output_names = ["output"] if len(outputs) == 1 else [None] * len(outputs)
        # Rename the producing node's output to the requested graph-output name.
        final = []
        for t, want in zip(outputs, output_names):
            if want is None or want == t:
                final.append(t)
                continue
            for n in self.nodes:
                for i, o in enumerate(n.output):
                    if o == t:
                        n.output[i] = want
                for i, inp in enumerate(n.input):
                    if inp == t:
                        n.input[i] = want
            final.append(want)
        return _finish(self.nodes, self.inputs, final, self.inits, graph_name, self.opset)


def _finish(nodes, inputs, output_names, inits, graph_name: str, opset: int) -> onnx.ModelProto:
    """Assemble a model, fill the graph-output shapes by shape inference, check it."""
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in output_names]
    graph = helper.make_graph(nodes, graph_name, inputs, outs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="qcompiler.testing.models",
    )
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for o in model.graph.output:
        vi = known.get(o.name)
        if vi is not None and vi.type.tensor_type.HasField("shape"):
            o.type.CopyFrom(vi.type)
        else:  # pragma: no cover - every builder's outputs are inferable
            o.type.tensor_type.shape.SetInParent()
    onnx.checker.check_model(model, full_check=True)
    return model


def _default_opset(opset: Optional[int], default: int = 13) -> int:
    return default if opset is None else int(opset)


# --------------------------------------------------------------------------------------
# Small single-pattern models (unit tests of individual passes)
# --------------------------------------------------------------------------------------


def conv_bn_relu(cin: int = 3, cout: int = 8, hw: int = 16, bias: bool = True,
                 depthwise: bool = False, groups: int = 1, kernel: int = 3, stride: int = 1,
                 batch: Dim = 1, seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu.

    ``bias`` controls whether the Conv has a bias input (folding BN must create one
    when it is absent).  ``depthwise=True`` sets ``group=cin`` and needs ``cout`` to be a
    multiple of ``cin`` (e.g. ``conv_bn_relu(cin=8, cout=8, depthwise=True)``);
    otherwise ``groups`` is used as given.
    """
    if depthwise:
        if cout % cin:
            raise ValueError(f"depthwise conv needs cout ({cout}) to be a multiple of cin ({cin}); "
                             f"try conv_bn_relu(cin={cin}, cout={cin}, depthwise=True)")
        groups = cin
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    y = b.conv(x, cin, cout, kernel, "conv", stride=stride, groups=groups, bias=bias)
    y = b.bn(y, cout, "bn")
    y = b.relu(y, "relu")
    return b.model(y, "conv_bn_relu")


def convtranspose_bn(cin: int = 8, cout: int = 4, hw: int = 8, kernel: int = 3, stride: int = 2,
                     pad: int = 1, output_padding: int = 1, groups: int = 1, bias: bool = True,
                     relu: bool = True, batch: Dim = 1, seed: int = 0,
                     opset: int = 13) -> onnx.ModelProto:
    """ConvTranspose (2x upsampling by default) -> BatchNormalization [-> Relu].

    The ConvTranspose weight has ONNX layout ``[cin, cout/groups, k, k]`` — output
    channels on axis 1, which is the classic trap when folding BN into it.
    Output spatial size: ``(hw-1)*stride - 2*pad + kernel + output_padding`` (16 by default).
    """
    if cin % groups or cout % groups:
        raise ValueError("cin and cout must be divisible by groups")
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    fan_in = (cin // groups) * kernel * kernel // (stride * stride)
    w = b.he_weight((cin, cout // groups, kernel, kernel), max(fan_in, 1), channel_axis=1)
    ins = [x, b.init("deconv.weight", w)]
    if bias:
        ins.append(b.init("deconv.bias", b.bias(cout)))
    attrs = dict(kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
                 output_padding=[output_padding] * 2)
    if groups != 1:
        attrs["group"] = groups
    y = b.node("ConvTranspose", ins, "deconv", **attrs)
    y = b.bn(y, cout, "bn")
    if relu:
        y = b.relu(y, "relu")
    return b.model(y, "convtranspose_bn")


def gemm_bn(in_features: int = 16, out_features: int = 8, batch: Dim = 4, bias: bool = True,
            trans_b: bool = True, alpha: float = 1.0, beta: float = 1.0, relu: bool = True,
            seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """Gemm ``[N, K] -> [N, M]`` -> BatchNormalization over the M features (a BatchNorm1d).

    ``trans_b=True`` stores the weight as ``[M, K]`` (PyTorch Linear layout), otherwise
    ``[K, M]``.  ``alpha``/``beta`` are the Gemm attributes (a folding pass has to honour them).
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, in_features])
    w = b.he_weight((out_features, in_features), in_features, 0)
    if not trans_b:
        w = np.ascontiguousarray(w.T)
    ins = [x, b.init("fc.weight", w)]
    if bias:
        ins.append(b.init("fc.bias", b.bias(out_features)))
    attrs = dict(alpha=float(alpha), transB=1 if trans_b else 0)
    if bias:
        attrs["beta"] = float(beta)
    y = b.node("Gemm", ins, "fc", **attrs)
    y = b.bn(y, out_features, "bn")
    if relu:
        y = b.relu(y, "relu")
    return b.model(y, "gemm_bn")


def matmul_bn(in_features: int = 16, out_features: int = 8, batch: Dim = 4, bias: bool = True,
              relu: bool = True, seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """MatMul ``[N, K] x W[K, M]`` [-> Add bias[M]] -> BatchNormalization over M.

    The activation stays 2-D ``[N, M]``, which is the ``(N, C)`` layout that ONNX
    BatchNormalization accepts, so BN normalizes the MatMul's last (= channel) axis.
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, in_features])
    w = b.he_weight((in_features, out_features), in_features, channel_axis=1)
    y = b.node("MatMul", [x, b.init("fc.weight", w)], "fc")
    if bias:
        y = b.node("Add", [y, b.init("fc.bias", b.bias(out_features))], "fc.add")
    y = b.bn(y, out_features, "bn")
    if relu:
        y = b.relu(y, "relu")
    return b.model(y, "matmul_bn")


def shared_weight_conv_bn(cin: int = 4, cout: int = 8, hw: int = 8, batch: Dim = 1,
                          seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """Two Convs reading one weight initializer ``shared.weight``; only the first has a BN.

    Outputs: ``out_a = Relu(BN(Conv(x, W, b_a)))`` and ``out_b = Relu(Conv_s2(x, W, b_b))``.
    Folding the BN into ``shared.weight`` in place would silently change ``out_b``:
    a correct pass must clone the weight (or skip).
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    w = b.init("shared.weight", b.he_weight((cout, cin, 3, 3), cin * 9))
    a = b.node("Conv", [x, w, b.init("conv_a.bias", b.bias(cout))], "conv_a",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = b.bn(a, cout, "bn_a")
    a = b.relu(a, "relu_a")
    c = b.node("Conv", [x, w, b.init("conv_b.bias", b.bias(cout))], "conv_b",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    c = b.relu(c, "relu_b")
    return b.model([a, c], "shared_weight_conv_bn", output_names=["out_a", "out_b"])


def standalone_bn(channels: int = 8, hw: int = 8, batch: Dim = 1, seed: int = 0,
                  opset: int = 13) -> onnx.ModelProto:
    """BatchNormalization nodes that cannot be folded into a producer.

    ``bn_in`` reads the graph input directly; ``bn_add`` follows an Add (as in the
    PP-OCRv4 det model).  ``output = Relu(bn_add(bn_in(x) + x))``.  A pass may turn
    them into a per-channel Mul+Add (or keep them), but must not drop them.
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, channels, hw, hw])
    y = b.bn(x, channels, "bn_in")
    y = b.add(y, x, "add")
    y = b.bn(y, channels, "bn_add")
    y = b.relu(y, "relu")
    return b.model(y, "standalone_bn")


def _canon_act(act: str) -> str:
    key = act.replace("_", "").replace("-", "").lower()
    if key not in _ACT_ALIASES:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS} "
                         f"(aliases: Relu6, SiLU, Swish, HardSigmoid)")
    return _ACT_ALIASES[key]


def conv_bias_add_act(act: str = "Relu", cin: int = 4, cout: int = 8, hw: int = 16,
                      batch: Dim = 1, seed: int = 0,
                      opset: Optional[int] = None) -> onnx.ModelProto:
    """Conv (no bias input) -> Add(constant [1,C,1,1]) -> activation.

    ``act`` is one of :data:`ACTIVATIONS`:

    * ``"Relu"``
    * ``"Clip"`` (alias ``"Relu6"``): opset-13 Clip with min=0/max=6 as scalar inputs
    * ``"LeakyRelu"`` (alpha=0.1)
    * ``"HardSwish"``: the single HardSwish op, which exists from opset 14 on, so this
      variant defaults to opset 14 and rejects ``opset < 14``
    * ``"HardSigmoidMul"`` (alias ``"HardSigmoid"``): ``x * HardSigmoid(x)`` with
      alpha=1/6, beta=0.5 — the decomposed hard-swish that Paddle exports
    * ``"SigmoidMul"`` (aliases ``"SiLU"``, ``"Swish"``): ``x * Sigmoid(x)``

    ``opset`` defaults to 13 (14 for HardSwish).
    """
    act = _canon_act(act)
    if act == "HardSwish":
        opset = _default_opset(opset, 14)
        if opset < 14:
            raise ValueError("HardSwish needs opset >= 14")
    else:
        opset = _default_opset(opset, 13)
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    y = b.conv(x, cin, cout, 3, "conv", bias=False)
    bias = (b.rng.standard_normal((1, cout, 1, 1)) * 0.3).astype(np.float32)
    y = b.node("Add", [y, b.init("conv.bias_add", bias)], "bias_add")
    if act == "Relu":
        y = b.relu(y, "act")
    elif act == "Clip":
        y = b.relu6(y, "act")
    elif act == "LeakyRelu":
        y = b.node("LeakyRelu", [y], "act", alpha=0.1)
    elif act == "HardSwish":
        y = b.node("HardSwish", [y], "act")
    elif act == "HardSigmoidMul":
        h = b.node("HardSigmoid", [y], "act.hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
        y = b.node("Mul", [y, h], "act.mul")
    elif act == "SigmoidMul":
        s = b.node("Sigmoid", [y], "act.sigmoid")
        y = b.node("Mul", [y, s], "act.mul")
    return b.model(y, f"conv_bias_add_{act.lower()}")


def fused_group_with_middle_output(cin: int = 4, cout: int = 8, hw: int = 8, batch: Dim = 1,
                                   seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """Conv -> Relu -> Conv, where the first Conv's (pre-Relu) output is also a graph output.

    Outputs: ``conv_out`` (the first Conv's result) and ``output``.  Fusing Conv+Relu
    into one quantized op would lose ``conv_out``; a fuser has to notice it.
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    c = b.conv(x, cin, cout, 3, "conv1")
    r = b.relu(c, "relu1")
    y = b.conv(r, cout, cout, 3, "conv2")
    return b.model([c, y], "fused_group_with_middle_output", output_names=["conv_out", "output"])


def identity_dropout_constant(cin: int = 4, cout: int = 8, hw: int = 8, batch: Dim = 1,
                              seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """Clutter for canonicalization: Identity, Dropout, Constant nodes and a dead branch.

    ``input -> Identity -> Conv(weight from a Constant node) -> Dropout(ratio 0.3, mask
    output present but unused) -> Add(Constant) -> Relu -> Identity -> output``.  A dead
    branch (Mul -> Sigmoid -> ReduceMean) reads the input but reaches no graph output.
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    y = b.node("Identity", [x], "identity_in")
    w = b.he_weight((cout, cin, 3, 3), cin * 9)
    wc = b.node("Constant", [], "conv.weight_const", value=numpy_helper.from_array(w, "conv.weight"))
    y = b.node("Conv", [y, wc, b.init("conv.bias", b.bias(cout))], "conv",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    ratio = b.init("dropout.ratio", np.array(0.3, np.float32))
    y = b.node("Dropout", [y, ratio], "dropout", n_out=2)
    shift = b.node("Constant", [], "shift_const",
                   value=numpy_helper.from_array(b.bias(cout, 0.2).reshape(1, cout, 1, 1), "shift"))
    y = b.add(y, shift, "add_shift")
    y = b.relu(y, "relu")
    y = b.node("Identity", [y], "identity_out")
    # dead branch
    d = b.node("Mul", [x, b.init("dead.scale", np.array(2.0, np.float32))], "dead.mul")
    d = b.node("Sigmoid", [d], "dead.sigmoid")
    b.node("ReduceMean", [d], "dead.reduce", keepdims=0)
    return b.model(y, "identity_dropout_constant")


def opset11_model(cin: int = 3, channels: int = 8, hw: int = 16, num_classes: int = 4,
                  batch: Dim = 1, seed: int = 0, opset: int = 11,
                  weights_as_constants: bool = False) -> onnx.ModelProto:
    """A small conv/BN net exported at an old opset (11 by default), like the PP-OCR cls model.

    ``Conv-BN-Clip(0,6) -> Conv(dw)-BN-Relu -> Conv-BN -> Add -> GAP -> Flatten -> Gemm``.

    Note on Clip: from opset 11 on, Clip takes min/max as *inputs* (here scalar
    initializers, as Paddle/PyTorch export them); with ``opset <= 10`` this builder
    emits the old form with ``min``/``max`` *attributes*.  ``weights_as_constants=True``
    stores every weight in a Constant node instead of an initializer, exactly as
    ch_ppocr_mobile_v2.0_cls_infer.onnx does (it has 0 initializers).
    """
    if opset < 9:
        raise ValueError("opset11_model supports opset >= 9 (BatchNormalization-9)")
    b = _Builder(seed, opset)
    x = b.input("input", [batch, cin, hw, hw])
    y = b.conv_bn_act(x, cin, channels, 3, "stem", act="relu6", stride=2)
    r = y
    y = b.conv_bn_act(y, channels, channels, 3, "dw", act="relu", groups=channels)
    y = b.conv_bn_act(y, channels, channels, 1, "pw", act=None)
    y = b.add(y, r, "add")
    y = b.gap_flatten_gemm(y, channels, num_classes)
    model = b.model(y, "opset11_model")
    if weights_as_constants:
        model = weights_to_constant_nodes(model)
    return model


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------


def _basic_block(b: _Builder, x: str, cin: int, cout: int, stride: int, name: str) -> str:
    y = b.conv_bn_act(x, cin, cout, 3, f"{name}.conv1", stride=stride)
    y = b.conv(y, cout, cout, 3, f"{name}.conv2", bias=False)
    # Second BN of a block: smaller gamma, as trained ResNets have (keeps the residual
    # stream from growing block after block).
    y = b.bn(y, cout, f"{name}.bn2", gamma=(0.2, 0.8))
    if stride != 1 or cin != cout:
        sc = b.conv(x, cin, cout, 1, f"{name}.downsample.0", stride=stride, bias=False)
        sc = b.bn(sc, cout, f"{name}.downsample.1", gamma=(0.2, 0.8))
    else:
        sc = x
    y = b.add(y, sc, f"{name}.add")
    return b.relu(y, f"{name}.relu")


def residual_concat_net(channels: int = 16, hw: int = 32, blocks: int = 2, seed: int = 0,
                        num_classes: int = 10, batch: Dim = 1, opset: int = 13) -> onnx.ModelProto:
    """The small conv / residual / concat model used to compare targets.

    Input ``[batch, 3, hw, hw]`` (3 channels: not a multiple of 4)::

        stem: Conv3x3(3->C)-BN-Relu
        `blocks` x BasicBlock(C)            (Conv-BN-Relu-Conv-BN + identity Add, Relu)
        branch a: Conv1x1(C->6)-BN-Relu     (6 channels: not a multiple of 4)
        branch b: Conv3x3(C->C)-BN-Relu
        Concat(a, b) -> C+6 channels
        MaxPool 2x2/2
        Conv1x1(C+6 -> 2C)-BN-Relu
        BasicBlock(2C, stride 2, 1x1 downsample)
        GlobalAveragePool -> Flatten -> Gemm(2C -> num_classes)

    With the defaults: 40 nodes (11 Conv, 11 BN), about 33k parameters, ~140 KB.
    """
    b = _Builder(seed, opset)
    c = channels
    x = b.input("input", [batch, 3, hw, hw])
    y = b.conv_bn_act(x, 3, c, 3, "stem")
    for i in range(blocks):
        y = _basic_block(b, y, c, c, 1, f"block{i}")
    a = b.conv_bn_act(y, c, 6, 1, "branch_a")
    bb = b.conv_bn_act(y, c, c, 3, "branch_b")
    y = b.node("Concat", [a, bb], "concat", axis=1)
    y = b.node("MaxPool", [y], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    y = b.conv_bn_act(y, c + 6, 2 * c, 1, "expand")
    y = _basic_block(b, y, 2 * c, 2 * c, 2, "block_down")
    y = b.gap_flatten_gemm(y, 2 * c, num_classes)
    return b.model(y, "residual_concat_net")


def resnet18_like(hw: int = 224, num_classes: int = 1000, width: int = 64, seed: int = 0,
                  batch: Dim = 1, opset: int = 13) -> onnx.ModelProto:
    """ResNet-18 topology with random (realistically scaled) weights.

    7x7/2 stem Conv-BN-Relu, 3x3/2 MaxPool, 4 stages x 2 BasicBlocks with widths
    ``width * (1, 2, 4, 8)`` (1x1 Conv-BN downsample where the shape changes), GAP,
    Flatten, Gemm.  ``width=64`` is the real ResNet-18 (11.7 M parameters, 20 BN);
    ``resnet18_like(hw=32, width=8, num_classes=10)`` is a tiny one for unit tests.
    Convs have no bias (BN follows), as in torchvision.
    """
    b = _Builder(seed, opset)
    x = b.input("input", [batch, 3, hw, hw])
    y = b.conv(x, 3, width, 7, "conv1", stride=2, pad=3, bias=False)
    y = b.bn(y, width, "bn1")
    y = b.relu(y, "relu")
    y = b.node("MaxPool", [y], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage in range(4):
        cout = width * (2 ** stage)
        for blk in range(2):
            stride = 2 if (stage > 0 and blk == 0) else 1
            y = _basic_block(b, y, cin, cout, stride, f"layer{stage + 1}.{blk}")
            cin = cout
    y = b.gap_flatten_gemm(y, cin, num_classes)
    return b.model(y, "resnet18_like")


def _inverted_residual(b: _Builder, x: str, cin: int, cout: int, stride: int, expand: int,
                       name: str) -> str:
    hidden = cin * expand
    y = x
    if expand != 1:
        y = b.conv_bn_act(y, cin, hidden, 1, f"{name}.expand", act="relu6")
    y = b.conv_bn_act(y, hidden, hidden, 3, f"{name}.dw", act="relu6", stride=stride, groups=hidden)
    y = b.conv(y, hidden, cout, 1, f"{name}.project.conv", bias=False)
    y = b.bn(y, cout, f"{name}.project.bn", gamma=(0.2, 0.8))
    if stride == 1 and cin == cout:
        y = b.add(y, x, f"{name}.add")
    return y


def _concat_block(b: _Builder, x: str, c: int, name: str) -> str:
    """Two half-width branches (1x1, and dw3x3+1x1) concatenated, plus a residual Add."""
    half = c // 2
    p = b.conv_bn_act(x, c, half, 1, f"{name}.branch1", act="relu6")
    q = b.conv_bn_act(x, c, c, 3, f"{name}.branch2.dw", act="relu6", groups=c)
    q = b.conv_bn_act(q, c, c - half, 1, f"{name}.branch2.pw", act="relu6")
    y = b.node("Concat", [p, q], f"{name}.concat", axis=1)
    y = b.conv(y, c, c, 1, f"{name}.fuse.conv", bias=False)
    y = b.bn(y, c, f"{name}.fuse.bn", gamma=(0.2, 0.8))
    return b.add(y, x, f"{name}.add")


def mobilenet_like(hw: int = 224, num_classes: int = 1000, width: int = 32, seed: int = 0,
                   batch: Dim = 1, opset: int = 13) -> onnx.ModelProto:
    """A MobileNetV2-like net: the second synthetic benchmark network.

    Stem Conv3x3/2-BN-ReLU6 with ``width`` channels, then inverted-residual blocks
    (1x1 expand-BN-ReLU6 [ReLU6 is Clip(0, 6)], depthwise 3x3-BN-ReLU6, 1x1
    project-BN, residual Add when the shape allows) with MobileNetV2's
    (expand, channels, repeats, stride) table scaled by ``width / 32``, a
    concat block (two branches joined by Concat, then a residual Add) after the
    96-channel stage, a 1x1 Conv-BN-ReLU6 head, GAP, Flatten and Gemm.
    ``width=32, hw=224``: 129 nodes, about 3.0 M parameters; ``mobilenet_like(hw=32,
    width=8, num_classes=10)`` is tiny (same 129 nodes).
    """
    def ch(c: int) -> int:
        return max(4, int(round(c * width / 32.0)))

    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2),
             (6, 96, 2, 1), (6, 160, 2, 2), (6, 320, 1, 1)]
    b = _Builder(seed, opset)
    x = b.input("input", [batch, 3, hw, hw])
    c0 = ch(32)
    y = b.conv_bn_act(x, 3, c0, 3, "stem", act="relu6", stride=2)
    cin = c0
    for si, (t, c, n, s) in enumerate(table):
        cout = ch(c)
        for i in range(n):
            y = _inverted_residual(b, y, cin, cout, s if i == 0 else 1, t, f"features.{si}.{i}")
            cin = cout
        if c == 96:
            y = _concat_block(b, y, cin, f"features.{si}.concat")
    head = ch(1280) if width >= 32 else ch(640)
    y = b.conv_bn_act(y, cin, head, 1, "head", act="relu6")
    y = b.gap_flatten_gemm(y, head, num_classes, name="classifier")
    return b.model(y, "mobilenet_like")


def residual_chain(num_nodes: int = 20000, channels: int = 8, hw: int = 8, seed: int = 0,
                   batch: Dim = 1, opset: int = 13) -> onnx.ModelProto:
    """A very long chain of tiny residual units with exactly ``num_nodes`` nodes.

    For import/export/pass speed benchmarks, not compute: tensors are
    ``[batch, channels, hw, hw]`` and convs are 1x1.  Layout: a stem Conv, then units
    ``Conv-BN-Relu-Conv-BN-Add(residual)-Relu`` (7 nodes, 2 BN each, so fold-bn has
    ``~2/7`` of the nodes to work on), then a truncated unit to hit the exact count.
    Residual-branch BN gammas are small so values stay finite over thousands of units.
    """
    if num_nodes < 1:
        raise ValueError("num_nodes must be >= 1")
    b = _Builder(seed, opset)
    c = channels
    x = b.input("input", [batch, c, hw, hw])
    y = b.conv(x, c, c, 1, "stem", bias=True)
    remaining = num_nodes - 1
    i = 0
    while remaining >= 7:
        name = f"unit{i}"
        r = y
        y = b.conv(y, c, c, 1, f"{name}.conv1", bias=False)
        y = b.bn(y, c, f"{name}.bn1")
        y = b.relu(y, f"{name}.relu1")
        y = b.conv(y, c, c, 1, f"{name}.conv2", bias=False)
        y = b.bn(y, c, f"{name}.bn2", gamma=(0.005, 0.02))
        y = b.add(y, r, f"{name}.add")
        y = b.relu(y, f"{name}.relu2")
        remaining -= 7
        i += 1
    tail = [
        lambda t: b.conv(t, c, c, 1, "tail.conv1", bias=False),
        lambda t: b.bn(t, c, "tail.bn1"),
        lambda t: b.relu(t, "tail.relu1"),
        lambda t: b.conv(t, c, c, 1, "tail.conv2", bias=False),
        lambda t: b.bn(t, c, "tail.bn2"),
        lambda t: b.relu(t, "tail.relu2"),
    ]
    for k in range(remaining):
        y = tail[k](y)
    return b.model(y, "residual_chain")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def weights_to_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with every initializer turned into a Constant node.

    Mimics Paddle2ONNX exports (e.g. the PP-OCR models), which hold all weights in
    Constant nodes and have no initializers at all.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts = []
    for t in g.initializer:
        consts.append(helper.make_node("Constant", [], [t.name], name=f"{t.name}.const", value=t))
    input_names = {t.name for t in g.initializer}
    kept_inputs = [i for i in g.input if i.name not in input_names]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    del g.input[:]
    g.input.extend(kept_inputs)
    onnx.checker.check_model(out, full_check=True)
    return out


def with_external_data(model: onnx.ModelProto, dir: Union[str, os.PathLike],
                       filename: str = "model.onnx", size_threshold: int = 1024) -> str:
    """Save ``model`` to ``dir/filename`` with every tensor > ``size_threshold`` bytes
    in one external file ``dir/filename.data``; return the model path (a str).

    The caller's ``model`` is not modified.
    """
    os.makedirs(dir, exist_ok=True)
    path = os.path.join(os.fspath(dir), filename)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(copy, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=filename + ".data", size_threshold=size_threshold)
    return path


#: Every builder with small arguments, for "all builders pass the checker and run"
#: style tests: ``name -> zero-argument callable returning a ModelProto``.
BUILDERS = {
    "conv_bn_relu": lambda: conv_bn_relu(),
    "conv_bn_relu_nobias": lambda: conv_bn_relu(bias=False),
    "conv_bn_relu_depthwise": lambda: conv_bn_relu(cin=8, cout=8, depthwise=True),
    "conv_bn_relu_grouped": lambda: conv_bn_relu(cin=8, cout=16, groups=4),
    "convtranspose_bn": lambda: convtranspose_bn(),
    "convtranspose_bn_grouped": lambda: convtranspose_bn(cin=8, cout=8, groups=2),
    "gemm_bn": lambda: gemm_bn(),
    "gemm_bn_notrans": lambda: gemm_bn(trans_b=False, alpha=0.5, beta=2.0),
    "matmul_bn": lambda: matmul_bn(),
    "shared_weight_conv_bn": lambda: shared_weight_conv_bn(),
    "standalone_bn": lambda: standalone_bn(),
    **{f"conv_bias_add_{a.lower()}": (lambda a=a: conv_bias_add_act(a)) for a in ACTIVATIONS},
    "fused_group_with_middle_output": lambda: fused_group_with_middle_output(),
    "identity_dropout_constant": lambda: identity_dropout_constant(),
    "opset11_model": lambda: opset11_model(),
    "opset11_model_constants": lambda: opset11_model(weights_as_constants=True),
    "opset10_model": lambda: opset11_model(opset=10),
    "residual_concat_net": lambda: residual_concat_net(),
    "resnet18_like_tiny": lambda: resnet18_like(hw=32, width=8, num_classes=10),
    "mobilenet_like_tiny": lambda: mobilenet_like(hw=32, width=8, num_classes=10),
    "residual_chain_small": lambda: residual_chain(200),
}


# --------------------------------------------------------------------------------------
# Sequence and detection heads (the target matrix: ops beyond convolutions)
# --------------------------------------------------------------------------------------


def cnn_lstm(height: int = 32, width: int = 96, hidden: int = 48, num_classes: int = 37,
             seed: int = 0, batch: Dim = "N", opset: int = 13) -> onnx.ModelProto:
    """A CRNN-style captcha/text recognizer: conv stack -> columns as a sequence ->
    bidirectional LSTM -> per-step MatMul + Add -> Softmax. Output [T, N, classes]."""
    b = _Builder(seed, opset)
    x = b.input("input", [batch, 1, height, width])
    y = b.conv_bn_act(x, 1, 16, 3, "c1", stride=2)
    y = b.conv_bn_act(y, 16, 32, 3, "c2", stride=2)
    y = b.conv_bn_act(y, 32, 32, 3, "c3")
    h, t = height // 4, width // 4
    feat = 32 * h
    # [N, C, H, W] -> [W, N, C, H] -> [T, N, C*H]
    y = b.node("Transpose", [y], "to_seq", perm=[3, 0, 1, 2])
    y = b.node("Reshape", [y, b.init("seq_shape", np.array([t, -1, feat], np.int64))], "flatten_seq")
    scale = 1.0 / np.sqrt(hidden)
    w = (b.rng.uniform(-scale, scale, (2, 4 * hidden, feat))).astype(np.float32)
    r = (b.rng.uniform(-scale, scale, (2, 4 * hidden, hidden))).astype(np.float32)
    bb = (b.rng.uniform(-scale, scale, (2, 8 * hidden))).astype(np.float32)
    y = b.node("LSTM", [y, b.init("lstm.W", w), b.init("lstm.R", r), b.init("lstm.B", bb)], "lstm",
               hidden_size=hidden, direction="bidirectional")
    # Y [T, 2, N, H] -> [T, N, 2, H] -> [T, N, 2H]
    y = b.node("Transpose", [y], "lstm_out", perm=[0, 2, 1, 3])
    y = b.node("Reshape", [y, b.init("out_shape", np.array([t, -1, 2 * hidden], np.int64))], "merge_dirs")
    wfc = b.he_weight((2 * hidden, num_classes), 2 * hidden, 1, spread=0.1)
    y = b.node("MatMul", [y, b.init("fc.weight", wfc)], "fc")
    y = b.node("Add", [y, b.init("fc.bias", b.bias(num_classes))], "fc_bias")
    y = b.node("Softmax", [y], "softmax", axis=-1)
    return b.model(y, "cnn_lstm")


def _silu(b: _Builder, x: str, name: str) -> str:
    return b.node("Mul", [x, b.node("Sigmoid", [x], f"{name}.sigmoid")], f"{name}.mul")


def yolox_like(hw: int = 64, width: int = 16, num_classes: int = 4, seed: int = 0,
               batch: Dim = "N", opset: int = 13) -> onnx.ModelProto:
    """A YOLOX-style detector: SiLU conv backbone, two strides, decoupled heads (box
    regression, objectness and class scores with Sigmoid), outputs concatenated per level
    and across levels: [N, anchors, 5 + classes]."""
    b = _Builder(seed, opset)
    x = b.input("images", [batch, 3, hw, hw])

    def cba(t, cin, cout, k, name, stride=1):
        t = b.bn(b.conv(t, cin, cout, k, f"{name}.conv", stride=stride, bias=False), cout, f"{name}.bn")
        return _silu(b, t, name)

    y = cba(x, 3, width, 3, "stem", stride=2)
    y = cba(y, width, 2 * width, 3, "dark2", stride=2)
    p3 = cba(y, 2 * width, 2 * width, 3, "dark3", stride=2)     # stride 8
    p4 = cba(p3, 2 * width, 4 * width, 3, "dark4", stride=2)    # stride 16
    levels = []
    for i, (feat, c) in enumerate(((p3, 2 * width), (p4, 4 * width))):
        stem = cba(feat, c, width, 1, f"head{i}.stem")
        cls = cba(stem, width, width, 3, f"head{i}.cls_conv")
        reg = cba(stem, width, width, 3, f"head{i}.reg_conv")
        cls = b.node("Sigmoid", [b.conv(cls, width, num_classes, 1, f"head{i}.cls_pred")], f"head{i}.cls_sig")
        box = b.conv(reg, width, 4, 1, f"head{i}.reg_pred")
        obj = b.node("Sigmoid", [b.conv(reg, width, 1, 1, f"head{i}.obj_pred")], f"head{i}.obj_sig")
        out = b.node("Concat", [box, obj, cls], f"head{i}.cat", axis=1)
        out = b.node("Reshape", [out, b.init(f"head{i}.shape", np.array([0, 5 + num_classes, -1], np.int64))],
                     f"head{i}.flat")
        levels.append(out)
    y = b.node("Concat", levels, "levels", axis=2)
    y = b.node("Transpose", [y], "to_anchors", perm=[0, 2, 1])
    return b.model(y, "yolox_like")
