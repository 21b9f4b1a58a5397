"""Lowering end to end: small QDQ models (made with ONNX Runtime's quantize_static) lowered
for every target layout and run by the integer interpreter, against ONNX Runtime.

The builders here are shared by the other test_lowering_* files.
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.lowering.interpreter import run_program
from qcompiler.lowering.lower import lower_to_program
from qcompiler.target import load_target, parse_target
from qcompiler.lowering.verify import verify_program

HW = 16


# ----------------------------------------------------------------------------- builders

class Net:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, base, arr):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, group=1, act="relu", bias=True, pad=None):
        fan_in = cin // group * k * k
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        w *= np.exp(self.rng.normal(0, 0.3, size=(cout, 1, 1, 1)))
        ins = [x, self.const("w", w.astype(np.float32))]
        if bias:
            ins.append(self.const("b", (self.rng.standard_normal(cout) * 0.1).astype(np.float32)))
        p = k // 2 if pad is None else pad
        y = self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p], group=group)
        if act == "relu":
            y = self.op("Relu", [y])
        elif act == "relu6":
            y = self.op("Clip", [y, self.const("lo", np.float32(0)), self.const("hi", np.float32(6))])
        return y

    def model(self, x_shape, y, opset=13):
        g = helper.make_graph(self.nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, None])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def mixed_net(seed=0):
    """IC=3 -> OC=6 first layer, IC=6 (padded), depthwise + ReLU6, SE (GAP, conv, Sigmoid,
    Mul), residual Add, Concat of 6 + 8 channels, MaxPool, nearest Resize, AveragePool,
    32-channel convs, a grouped conv, GAP, Flatten, Gemm."""
    b = Net(seed)
    x = "input"
    c1 = b.conv(x, 3, 6, 3)
    c2 = b.conv(c1, 6, 8, 3, stride=2)
    dw = b.conv(c2, 8, 8, 3, group=8, act="relu6")
    s = b.op("GlobalAveragePool", [dw])
    s = b.conv(s, 8, 8, 1, act=None)
    s = b.op("Sigmoid", [s])
    se = b.op("Mul", [dw, s])
    pw = b.conv(se, 8, 8, 1, act=None)
    r = b.op("Relu", [b.op("Add", [pw, c2])])
    a = b.conv(r, 8, 6, 1)
    mp = b.op("MaxPool", [r], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    cat = b.op("Concat", [a, mp], axis=1)
    up = b.op("Resize", [cat, "", b.const("scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    dn = b.op("AveragePool", [up], kernel_shape=[2, 2], strides=[2, 2])
    c3 = b.conv(dn, 14, 32, 3)
    c4 = b.conv(c3, 32, 32, 1)
    g = b.conv(c4, 32, 16, 3, group=2)
    f = b.op("Flatten", [b.op("GlobalAveragePool", [g])], axis=1)
    w = (b.rng.standard_normal((5, 16)) * 0.3).astype(np.float32)
    y = b.op("Gemm", [f, b.const("fcw", w), b.const("fcb", np.zeros(5, np.float32))], transB=1)
    return b.model([1, 3, HW, HW], y)


def small_net(seed=0):
    """A shallow net: first layer IC=3 -> OC=6, depthwise (padded to 8), residual Add,
    Concat, pooling, Gemm."""
    b = Net(seed)
    c1 = b.conv("input", 3, 6, 3)
    dw = b.conv(c1, 6, 6, 3, group=6, act="relu6")
    r = b.op("Relu", [b.op("Add", [dw, c1])])
    c2 = b.conv(r, 6, 8, 3, stride=2)
    cat = b.op("Concat", [c2, b.op("MaxPool", [c2], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])],
               axis=1)
    f = b.op("Flatten", [b.op("GlobalAveragePool", [cat])], axis=1)
    w = (b.rng.standard_normal((4, 16)) * 0.3).astype(np.float32)
    y = b.op("Gemm", [f, b.const("fcw", w), b.const("fcb", np.zeros(4, np.float32))], transB=1)
    return b.model([1, 3, HW, HW], y)


def inputs(n, seed=1, shape=(1, 3, HW, HW)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def quantize(model, u8=False, calib=None):
    """QDQ model from ONNX Runtime's quantize_static: s8 symmetric activations (u8
    asymmetric with u8=True), s8 symmetric per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    data = calib if calib is not None else inputs(8, seed=100)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": x} for x in data)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "fp32.onnx"), os.path.join(d, "qdq.onnx")
        onnx.save(model, src)
        quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8 if u8 else QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        extra_options={"ActivationSymmetric": not u8, "WeightSymmetric": True})
        return onnx.load(dst)


@functools.lru_cache(maxsize=None)
def qdq(name, u8=False):
    return quantize({"mixed": mixed_net, "small": small_net}[name](), u8=u8)


def single_rounding(name):
    """A shipped target with its fixed-point requant rounded once (ties up) instead of
    gemmlowp's double rounding: same layouts and Q31 multipliers."""
    import dataclasses

    t = load_target(name)
    if t.requant.style == "fixed_point":
        t = dataclasses.replace(t, name=f"{name}-single", rounding="single_rounding")
    return t


def variant(name, parent, body):
    """A test target: a shipped one with a few statements changed, in the target language."""
    return parse_target(f'target {name} extends {parent} "test variant" {{\n{body}\n}}')


NHWC = variant("nhwc-test", "x86", "layout Conv NHWC")
NCHW_FIXED = variant("nchw-test", "arm64", "rounding single_rounding\ndrop layout Conv")
LAYOUT_TARGETS = [single_rounding("arm64"), single_rounding("arm64-dot"), "cuda", "x86", NHWC, NCHW_FIXED]
LAYOUT_IDS = ["NCHW44", "NCHW44_DOT", "NC4HW4+NC32HW32", "NCHW-float-scale", "NHWC", "NCHW-fixed"]


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("target", LAYOUT_TARGETS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("net", ["small", "mixed"])
def test_program_matches_onnxruntime_in_every_layout(net, target):
    q = qdq(net)
    prog = lower_to_program(q, target)
    rep = verify_program(prog, q, inputs(10))
    assert rep.within_one_share >= 0.999, rep.format()
    assert rep.task == "argmax" and rep.task_rate == 1.0, rep.format()


@pytest.mark.parametrize("target", ["arm64", "arm64-dot"])
def test_shipped_fixed_point_targets(target):
    """The shipped arm64 targets requantize with Q31 multipliers and one rounding of
    acc * M: the program then equals ONNX Runtime running the QDQ model."""
    q = qdq("mixed")
    prog = lower_to_program(q, target)
    assert (prog.rounding, prog.requant) == ("single_rounding", "fixed_point")
    rep = verify_program(prog, q, inputs(6), layerwise=True)
    assert len(rep.layers) >= 20
    assert all(t.max_steps <= 1 for t in rep.layers), rep.format()
    assert rep.within_one_share >= 0.999 and rep.task_rate == 1.0, rep.format()


def test_double_rounding_stays_within_one_step_per_layer():
    """gemmlowp-style double rounding (rounding doubling high multiply, then a rounding
    divide by a power of two) differs from ONNX Runtime's single rounding on a small share
    of each layer's elements, never by more than one step given the same inputs."""
    q = qdq("mixed")
    profile = variant("double", "arm64", "rounding half_away_from_zero\ndrop layout Conv")
    prog = lower_to_program(q, profile)
    rep = verify_program(prog, q, inputs(6), layerwise=True)
    assert all(t.max_steps <= 1 for t in rep.layers), rep.format()
    exact = sum(t.exact for t in rep.layers) / sum(t.elements for t in rep.layers)
    assert exact >= 0.99, rep.format()
    assert rep.within_one_share >= 0.9 and rep.task_rate == 1.0, rep.format()


def test_layouts_agree_bit_for_bit():
    """The same requantization in any layout gives the same integers: packing, blocking and
    padding change nothing."""
    q = qdq("mixed")
    xs = inputs(2)
    base = variant("plain", "arm64", "rounding single_rounding\ndrop layout Conv")
    ref = [run_program(lower_to_program(q, base), {"input": x}) for x in xs]
    nhwc_fixed = variant("nhwc-fixed", "arm64", "rounding single_rounding\nlayout Conv NHWC")
    for layout_target in ["arm64", "arm64-dot", nhwc_fixed]:
        prog = lower_to_program(q, layout_target)
        assert any(n.attrs.get("layout") not in (None, "NCHW") for n in prog.nodes)
        for x, r in zip(xs, ref):
            got = run_program(prog, {"input": x}, poison_padding=True)
            for k in r:
                np.testing.assert_array_equal(got[k], r[k])


def test_cuda_blocked_layouts_used():
    prog = lower_to_program(qdq("mixed"), "cuda")
    layouts = prog.plan["conv_layouts"]
    assert layouts.get("NC32HW32", 0) >= 1 and layouts.get("NC4HW4", 0) >= 1
    kinds = {n.attrs["kind"] for n in prog.nodes if n.op == "Conv"}
    assert {"dense", "depthwise", "group"} <= kinds


def test_uint8_activations_fold_zero_points():
    """Asymmetric u8 activations (x86 style): zero points folded into the int32 bias,
    spatial padding with the zero point, in NCHW and NHWC."""
    q = qdq("small", u8=True)
    for target in ["x86", NHWC, NCHW_FIXED, "arm64"]:
        prog = lower_to_program(q, target)
        convs = [n for n in prog.nodes if n.op == "Conv"]
        assert any(n.attrs["x_zero_point"] != 0 for n in convs)
        rep = verify_program(prog, q, inputs(8), layerwise=True)
        assert all(t.max_steps <= 1 for t in rep.layers), rep.format()
        assert rep.task_rate == 1.0, rep.format()
        if target != "arm64":
            assert rep.within_one_share >= 0.999, rep.format()


def test_padding_never_leaks():
    q = qdq("small")
    prog = lower_to_program(q, "arm64")
    padded = [t for t in prog.tensors.values() if t.layout == "NCHW44" and t.channels and t.channels % 4]
    assert padded, "the small net has 6-channel tensors in NCHW44"
    x = inputs(1)[0]
    a = run_program(prog, {"input": x})
    b = run_program(prog, {"input": x}, poison_padding=True)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
