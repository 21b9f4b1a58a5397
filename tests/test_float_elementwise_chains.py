"""float-elementwise-chains: a region of elementwise INT8 kernels that rounds a value five
times in a row (a spelled-out HardSwish and a learnable affine, as in PP-OCRv4) runs in
float on x86/arm64; shallow regions (residual Add -> Relu) stay INT8; the target rule
parses as an integer and says what is wrong otherwise."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))

from conftest import ort_session  # noqa: E402
from qcompiler.passes.float_elementwise_chains import elementwise_regions, region_depths  # noqa: E402
from qcompiler.driver.build import build  # noqa: E402
from qcompiler.errors import QCompilerError  # noqa: E402
from qcompiler.ir import load_ir  # noqa: E402
from qcompiler.target import load_target  # noqa: E402
from qcompiler.target import parse_target  # noqa: E402

C, HW = 8, 12


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def hardswish_affine_net(blocks=1, seed=0, pad2=False):
    """`blocks` x (Conv -> x * clip(x + 3, 0, 6) / 6 -> * a + b), a Conv, plus a skip Conv of
    the input, then the residual Add -> Relu -> Conv."""
    rng = np.random.default_rng(seed)
    inits = [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0), _const("a", 0.7), _const("b", 0.3),
             _const("w2", rng.standard_normal((C, C) + ((3, 3) if pad2 else (1, 1))) * 0.4),
             _const("b2", rng.standard_normal(C) * 0.1),
             _const("w3", rng.standard_normal((C, C, 1, 1)) * 0.4),
             _const("ws", rng.standard_normal((C, 3, 1, 1)) * 0.4)]
    nodes, x, cin = [], "x", 3
    for i in range(blocks):
        p = "" if i == 0 else f"{i}_"
        inits += [_const(f"{p}w1", rng.standard_normal((C, cin, 3, 3)) * (0.4 if i == 0 else 0.25)),
                  _const(f"{p}b1", rng.standard_normal(C))]
        nodes += [
            helper.make_node("Conv", [x, f"{p}w1", f"{p}b1"], [f"{p}y"], name=f"{p}conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Add", [f"{p}y", "three"], [f"{p}y3"], name=f"{p}hs_add"),
            helper.make_node("Clip", [f"{p}y3", "zero", "six"], [f"{p}yc"], name=f"{p}hs_clip"),
            helper.make_node("Mul", [f"{p}y", f"{p}yc"], [f"{p}ym"], name=f"{p}hs_mul"),
            helper.make_node("Div", [f"{p}ym", "six"], [f"{p}hs"], name=f"{p}hs_div"),
            helper.make_node("Mul", [f"{p}hs", "a"], [f"{p}ha"], name=f"{p}aff_mul"),
            helper.make_node("Add", [f"{p}ha", "b"], [f"{p}hb"], name=f"{p}aff_add"),
        ]
        x, cin = f"{p}hb", C
    nodes += [
        helper.make_node("Conv", [x, "w2", "b2"], ["z"], name="conv2", pads=[1, 1, 1, 1] if pad2 else [0, 0, 0, 0]),
        helper.make_node("Conv", ["x", "ws"], ["s"], name="conv_skip"),
        helper.make_node("Add", ["z", "s"], ["r"], name="res_add"),
        helper.make_node("Relu", ["r"], ["rr"], name="res_relu"),
        helper.make_node("Conv", ["rr", "w3"], ["out"], name="conv3"),
    ]
    g = helper.make_graph(nodes, "hs_affine",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, HW, HW])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, C, HW, HW])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(m)
    return m


def _batches(n=24, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3, HW, HW)).astype(np.float32)} for _ in range(n // 2)]


def _sqnr(model, ref_model, batches):
    q, f = ort_session(model), ort_session(ref_model)
    a = np.concatenate([f.run(None, b)[0] for b in batches])
    e = np.concatenate([q.run(None, b)[0] for b in batches]) - a
    return 10 * np.log10((a ** 2).sum() / (e ** 2).sum())


def test_depths_of_the_regions():
    m = hardswish_affine_net()
    ir = load_ir(m)
    target = load_target("x86")
    regions = elementwise_regions(ir)
    names = [sorted(n.name for n in r) for r in regions]
    assert names == [sorted(["hs_add", "hs_clip", "hs_mul", "hs_div", "aff_mul", "aff_add"]),
                     ["res_add", "res_relu"]]
    # canonicalize has not run: Div is no x86 kernel, so the chain rounds at add_act (Add(+3)
    # -> Clip), mul, mul(* a), add_act(+ b); the residual Add -> Relu is one add_act
    assert region_depths(ir, target, regions) == [4, 1]
    # after canonicalize the Div by 6 is a Mul, one more rounding: 5, x86's limit
    canon = load_ir(build(m, pipeline=["canonicalize"], options={"evaluate": False}).model)
    assert region_depths(canon, target, elementwise_regions(canon)) == [5, 1]


def test_deep_region_runs_float_and_is_more_accurate():
    m = hardswish_affine_net()
    calib, held = _batches(24, 1), _batches(16, 2)
    deep = build(m, target="x86", calib=lambda: iter(calib), options={"evaluate": False})  # x86: 5
    off = build(m, target="x86", calib=lambda: iter(calib),
                options={"evaluate": False, "float_elementwise_depth": 0})
    rep = deep.report["passes"]["float-elementwise-chains"]
    assert rep["float_regions"] == 1 and rep["float_nodes"] == 6, rep
    assert rep["constants_folded"] >= 3, rep  # / 6 and * a merge, move behind + b, into conv2
    quantized = {n.input[0] for n in deep.model.graph.node if n.op_type == "QuantizeLinear"}
    # inside the chain nothing is rounded; it starts at conv1's output and, with / 6, * a
    # and + b folded into the 1x1 conv2, ends at x * clip(x + 3, 0, 6)
    assert not quantized & {"y3", "yc"}, quantized
    assert {"y", "ym"} <= quantized
    assert not {"Div"} & {n.op_type for n in deep.model.graph.node}
    assert "rr" in quantized and "r" not in quantized  # the residual Add -> Relu: one INT8 kernel
    off_q = {n.input[0] for n in off.model.graph.node if n.op_type == "QuantizeLinear"}
    assert {"ym", "ha"} <= off_q  # without the rule the chain rounds inside
    # on random weights the gain is small (PP-OCRv4 rec: 11 -> 14 dB, docs/accuracy.md);
    # three blocks in a row, deterministic data, min/max ranges (so the range search's own
    # tuning does not move it): 0.31 dB
    m3 = hardswish_affine_net(blocks=3)
    mm = {"evaluate": False, "calib_method": "minmax"}
    deep3 = build(m3, target="x86", calib=lambda: iter(calib), options=mm)
    off3 = build(m3, target="x86", calib=lambda: iter(calib), options={**mm, "float_elementwise_depth": 0})
    assert _sqnr(deep3.model, m3, held) > _sqnr(off3.model, m3, held) + 0.15


@pytest.mark.parametrize("pad2", [False, True])
def test_folding_the_float_regions_constants_keeps_the_function(pad2):
    m = hardswish_affine_net(blocks=2, pad2=pad2)
    r = build(m, target="x86", pipeline=["canonicalize", "fold-bn", "float-elementwise-chains"],
              options={"evaluate": False})
    ops = [n.op_type for n in r.model.graph.node]
    # per block: Add(+3), Clip, Mul(x, clip), then + d where the next conv pads; the constant
    # Muls are in the convs' weights
    assert ops.count("Mul") == 2 and "Div" not in ops, ops
    assert ops.count("Add") == 2 + 1 + (1 if pad2 else 0) + 1, ops  # +3 twice, + d before conv1 (3x3), pad2's, residual
    held = _batches(8, 3)
    want = np.concatenate([ort_session(m).run(None, b)[0] for b in held])
    got = np.concatenate([ort_session(r.model).run(None, b)[0] for b in held])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_shipped_targets_depth_is_what_the_pass_uses():
    m = hardswish_affine_net()
    for target, depth in (("x86", 5), ("arm64", 5), ("cuda", 0)):
        assert load_target(target).placement.float_elementwise_depth == depth
    r = build(m, target="x86", calib=lambda: iter(_batches(16)),
              options={"evaluate": False, "float_elementwise_depth": 6})
    rep = r.report["passes"]["float-elementwise-chains"]
    assert rep["depth_limit"] == 6 and rep["float_regions"] == 0, rep  # the option overrides


def test_target_rule_is_an_integer():
    base = 'target t "x" {\n activation uint8 asymmetric per_tensor\n weight int8 symmetric per_tensor\n' \
           ' pattern add : Add(a, b)\n pipeline canonicalize, float-elementwise-chains, insert-observers, ' \
           'calibrate, place-qdq\n placement { float_elementwise_depth %s }\n}\n'
    assert parse_target(base % "3").placement.float_elementwise_depth == 3
    with pytest.raises(QCompilerError, match="float_elementwise_depth takes an integer >= 0, got 'many'"):
        parse_target(base % "many")
    with pytest.raises(QCompilerError, match="float_elementwise_depth takes an integer >= 0, got '-1'"):
        parse_target(base % "-1")
