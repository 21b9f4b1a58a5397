"""Constant operands of elementwise ops: `x * relu6(x + 3) / 6` (hard-swish as exported
by Paddle and older PyTorch) must not leave float islands in an x86 build.

canonicalize turns division by a constant into multiplication by its reciprocal, and
place-qdq gives the constant operand of an Add/Mul kernel its own integer initializer and
DequantizeLinear, so ONNX Runtime fuses QLinearAdd/QLinearMul instead of running the op in
float between a DequantizeLinear and a QuantizeLinear.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_same_outputs, random_feeds
from qcompiler.driver.build import build

SHAPE = [1, 8, 12, 12]


def hardswish_net(divisor=6.0, divisor_dtype=np.float32) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32), "w2"),
             numpy_helper.from_array(np.float32(3.0), "three"),
             numpy_helper.from_array(np.float32(0.0), "zero"),
             numpy_helper.from_array(np.float32(6.0), "six"),
             numpy_helper.from_array(np.asarray(divisor, dtype=divisor_dtype), "divisor")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "three"], ["a"], name="add3"),
             helper.make_node("Clip", ["a", "zero", "six"], ["r6"], name="relu6"),
             helper.make_node("Mul", ["c1", "r6"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "divisor"], ["hs"], name="div6"),
             helper.make_node("Conv", ["hs", "w2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "hardswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _batches(n=8):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(n)]


def _ops(model):
    return Counter(n.op_type for n in model.graph.node)


def test_canonicalize_turns_division_by_a_constant_into_a_multiplication():
    m = hardswish_net()
    res = build(m, pipeline=["canonicalize"])
    assert _ops(res.model)["Div"] == 0
    assert res.report["passes"]["canonicalize"]["div_by_constant_to_mul"] == 1
    mul = next(n for n in res.model.graph.node if n.name == "div6")
    assert mul.op_type == "Mul"
    recip = next(numpy_helper.to_array(i) for i in res.model.graph.initializer if i.name == mul.input[1])
    assert recip == np.float32(1.0 / 6.0)
    for seed in (0, 1):
        assert_same_outputs(m, res.model, random_feeds(m, seed=seed))


@pytest.mark.parametrize("divisor", [0.0, np.inf])
def test_canonicalize_keeps_division_by_zero_or_infinity(divisor):
    res = build(hardswish_net(divisor=divisor), pipeline=["canonicalize"])
    assert _ops(res.model)["Div"] == 1
    assert res.report["passes"]["canonicalize"]["div_by_constant_to_mul"] == 0


def _fused_ops(model) -> Counter:
    """The ops ONNX Runtime runs after its graph optimisations (QDQ fusion included)."""
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return _ops(onnx.load(so.optimized_model_filepath))


def test_x86_build_leaves_no_float_elementwise_ops():
    res = build(hardswish_net(), target="x86", calib=lambda: iter(_batches()), options={"evaluate": False})
    assert res.report["passes"]["place-qdq"]["constant_operands"] == 2  # the 3 and the 1/6
    for n in res.model.graph.node:
        if n.op_type in ("Add", "Mul"):
            producers = {o: p.op_type for p in res.model.graph.node for o in p.output}
            assert all(producers.get(i) == "DequantizeLinear" for i in n.input), n.name
    fused = _fused_ops(res.model)
    # x * relu6(x + 3): QLinearAdd + QLinearMul; the / 6 became the Mul's output scale (fold-requant)
    assert res.report["passes"]["fold-requant"]["scalar_muls_folded"] == 1
    assert fused["QLinearAdd"] == 1 and fused["QLinearMul"] == 1, fused
    for op in ("Add", "Mul", "Div", "DequantizeLinear"):
        assert fused[op] <= (1 if op == "DequantizeLinear" else 0), fused  # only the output's DQ
    # and the quantized model stays close to FP32
    x = _batches(1)[0]
    ref = ort.InferenceSession(hardswish_net().SerializeToString()).run(None, x)[0]
    y = ort.InferenceSession(res.model.SerializeToString()).run(None, x)[0]
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2))
    assert sqnr > 25, sqnr


def test_constant_operands_lower_to_integer_kernels_on_arm64():
    from qcompiler.lowering.program import load_program
    from qcompiler.lowering.verify import verify_program

    with tempfile.TemporaryDirectory() as d:
        res = build(hardswish_net(), target="arm64", calib=lambda: iter(_batches()),
                    options={"evaluate": False, "emit": "program"})
        prog = os.path.join(d, "m.qprog")
        qdq = os.path.join(d, "m.onnx")
        onnx.save(res.model, prog)
        res_qdq = build(hardswish_net(), target="arm64", calib=lambda: iter(_batches()), options={"evaluate": False})
        onnx.save(res_qdq.model, qdq)
        prog_model = onnx.load(prog)
        float_ops = [n.op_type for n in prog_model.graph.node if n.domain == "" and n.op_type in ("Add", "Mul", "Div")]
        assert not float_ops, float_ops  # integer kernels (Add/Mul, or a Lut for x -> relu6(x + 3)), no float islands
        assert Counter(n.op_type for n in prog_model.graph.node)["Mul"] >= 1
        report = verify_program(load_program(prog), qdq, _batches(4))
        assert report.within_one_share >= 0.999, report.to_json()
