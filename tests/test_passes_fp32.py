"""FP32 passes against ONNX Runtime: canonicalize, fold-bn, fuse-conv-bias-act.

Every test compares the compiled model with the original in ORT on random normal inputs
(max error <= 1e-4 of the output's max magnitude) and asserts the structural change the
pass exists for, so that a pass that does nothing fails too.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close, assert_same_outputs, op_count, ort_outputs, random_feeds
from qcompiler.driver.build import FP32_PIPELINE, build
from fixtures import models


def compile_(model, pipeline=FP32_PIPELINE):
    res = build(model, pipeline=list(pipeline))
    onnx.checker.check_model(res.model, full_check=True)
    return res


def check_equal(original, result, seeds=(0, 1), dims=None):
    for seed in seeds:
        assert_same_outputs(original, result.model, random_feeds(original, seed=seed, dims=dims))


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def regions(res):
    return sorted(res.ir.ann.regions.values(), key=lambda r: r.name)


# ----------------------------------------------------------------------------- canonicalize
def test_canonicalize_upgrades_opset11():
    m = models.opset11_model()
    res = compile_(m, ["canonicalize"])
    opset = {i.domain: i.version for i in res.model.opset_import}[""]
    assert opset >= 13
    assert res.report["passes"]["canonicalize"]["opset"] == [11, opset]
    check_equal(m, res)


def test_canonicalize_opset11_weights_in_constant_nodes():
    m = models.opset11_model(weights_as_constants=True)
    assert op_count(m, "Constant") > 0
    res = compile_(m, ["canonicalize"])
    assert op_count(res.model, "Constant") == 0
    assert res.report["passes"]["canonicalize"]["constant_nodes_to_initializers"] > 0
    check_equal(m, res)


def test_canonicalize_removes_identity_dropout_constant_and_dead_branch():
    m = models.identity_dropout_constant()
    res = compile_(m, ["canonicalize"])
    ops = [n.op_type for n in res.model.graph.node]
    for op in ("Identity", "Dropout", "Constant", "ReduceMean", "Sigmoid"):
        assert op not in ops, f"{op} left: {ops}"
    assert ops.count("Mul") == 0  # the dead branch's Mul
    assert [o.name for o in res.model.graph.output] == ["output"]
    check_equal(m, res)


def _foldable_model() -> onnx.ModelProto:
    """y = Reshape(x + (c1 * c2), Shape(x)): a constant Mul and a static Shape to fold."""
    c1 = numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8, 1, 1), "c1")
    c2 = numpy_helper.from_array(np.full((1, 8, 1, 1), 3.0, np.float32), "c2")
    nodes = [
        helper.make_node("Mul", ["c1", "c2"], ["c"], name="const_mul"),
        helper.make_node("Add", ["x", "c"], ["s"], name="add"),
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Reshape", ["s", "shp"], ["y"], name="reshape"),
    ]
    g = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], [c1, c2])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_canonicalize_folds_constants_and_static_shapes():
    m = _foldable_model()
    res = compile_(m, ["canonicalize"])
    ops = [n.op_type for n in res.model.graph.node]
    assert "Mul" not in ops and "Shape" not in ops, ops
    assert res.report["passes"]["canonicalize"]["constants_folded"] >= 2
    check_equal(m, res)


def test_canonicalize_skips_folding_when_nothing_is_constant():
    m = models.residual_chain(50)
    res = compile_(m, ["canonicalize"])
    assert res.report["passes"]["canonicalize"]["constants_folded"] == 0
    assert len(res.model.graph.node) == 50
    check_equal(m, res, seeds=(0,))


def _fold_with(extra_node, extra_init):
    """x * (c1 + c2), plus one more node on constants that ONNX Runtime cannot evaluate."""
    c1 = numpy_helper.from_array(np.arange(4, dtype=np.float32), "c1")
    c2 = numpy_helper.from_array(np.ones(4, np.float32), "c2")
    nodes = [helper.make_node("Add", ["c1", "c2"], ["a"], name="add"),
             helper.make_node("Mul", ["x", "a"], ["y"], name="mul"), extra_node]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [c1, c2] + extra_init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("my.ops", 1)],
                             ir_version=8)


def test_canonicalize_folds_around_a_custom_op_on_constants():
    m = _fold_with(helper.make_node("Scale2", ["c1"], ["z"], domain="my.ops", name="custom"), [])
    res = build(m, pipeline=["canonicalize"])
    assert [n.op_type for n in res.model.graph.node] == ["Mul", "Scale2"]
    assert res.report["passes"]["canonicalize"]["constants_folded"] == 1


def test_canonicalize_skips_folding_that_onnxruntime_cannot_evaluate(caplog):
    idx = numpy_helper.from_array(np.array([10], np.int64), "idx")  # out of range: Gather fails at run time
    m = _fold_with(helper.make_node("Gather", ["c1", "idx"], ["z"], name="bad_gather"), [idx])
    res = build(m, pipeline=["canonicalize"])  # a warning, not a failed pass
    assert sorted(n.op_type for n in res.model.graph.node) == ["Add", "Gather", "Mul"]
    assert "constant folding skipped" in caplog.text


def test_canonicalize_keeps_identity_between_input_and_output():
    """An Identity from the graph input to the graph output must stay: the output needs a producer."""
    nodes = [helper.make_node("Identity", ["x"], ["y"], name="id")]
    g = helper.make_graph(nodes, "id", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    res = compile_(m, ["canonicalize"])
    assert [o.name for o in res.model.graph.output] == ["y"]
    check_equal(m, res, seeds=(0,))


# ----------------------------------------------------------------------------- fold-bn
FOLD = ["canonicalize", "fold-bn"]


@pytest.mark.parametrize("kwargs", [
    dict(bias=True), dict(bias=False), dict(cin=8, cout=8, depthwise=True),
    dict(cin=8, cout=16, groups=4), dict(cin=4, cout=6, kernel=1, stride=2),
], ids=["bias", "nobias", "depthwise", "grouped", "1x1s2"])
def test_fold_bn_into_conv(kwargs):
    m = models.conv_bn_relu(**kwargs)
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    assert op_count(res.model, "Mul") == 0 and op_count(res.model, "Add") == 0  # folded, not Mul+Add
    conv = next(n for n in res.model.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3 and conv.input[2]  # a bias exists even when there was none
    assert res.report["passes"]["fold-bn"]["folded"] == 1
    check_equal(m, res)


@pytest.mark.parametrize("kwargs", [dict(), dict(cin=8, cout=8, groups=2), dict(cin=8, cout=12, groups=4, bias=False),
                                    dict(stride=1, pad=1, output_padding=0)],
                         ids=["group1", "group2", "group4-nobias", "stride1"])
def test_fold_bn_into_convtranspose(kwargs):
    m = models.convtranspose_bn(**kwargs)
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    assert op_count(res.model, "Mul") == 0
    assert res.report["passes"]["fold-bn"]["folded"] == 1
    check_equal(m, res)


@pytest.mark.parametrize("kwargs", [dict(trans_b=True), dict(trans_b=False),
                                    dict(trans_b=False, alpha=0.5, beta=2.0), dict(bias=False)],
                         ids=["transB1", "transB0", "alpha-beta", "nobias"])
def test_fold_bn_into_gemm(kwargs):
    m = models.gemm_bn(**kwargs)
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    assert op_count(res.model, "Mul") == 0
    assert res.report["passes"]["fold-bn"]["folded"] == 1
    check_equal(m, res)


def test_fold_bn_into_matmul_with_constant_weight():
    m = models.matmul_bn(bias=False)
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    assert op_count(res.model, "Mul") == 0
    assert op_count(res.model, "MatMul") == 1 and op_count(res.model, "Add") == 1  # the folded shift
    assert res.report["passes"]["fold-bn"]["folded"] == 1
    check_equal(m, res)


def test_fold_bn_after_matmul_bias_add_still_exact():
    m = models.matmul_bn(bias=True)  # MatMul -> Add -> BN: BN's producer is the Add
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    check_equal(m, res)


def _conv_mul_add(scale, shift=None, op="Conv", const_first=False):
    """Conv/ConvTranspose(bias) -> Mul(constant scale) [-> Add(constant shift)] -> Relu."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3) if op == "Conv" else (4, 6, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b"),
             numpy_helper.from_array(np.asarray(scale, np.float32), "s")]
    mul_in = ["s", "y"] if const_first else ["y", "s"]
    nodes = [helper.make_node(op, ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Mul", mul_in, ["z"])]
    last = "z"
    if shift is not None:
        inits.append(numpy_helper.from_array(np.asarray(shift, np.float32), "c"))
        nodes.append(helper.make_node("Add", ["z", "c"], ["a"]))
        last = "a"
    nodes.append(helper.make_node("Relu", [last], ["out"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("scale,shift,op,const_first", [
    (0.37, None, "Conv", False), (np.array([1.5], np.float32), 0.25, "Conv", True),
    (np.linspace(0.5, 2, 6).reshape(6, 1, 1), np.linspace(-1, 1, 6).reshape(1, 6, 1, 1), "Conv", False),
    (-0.8, 0.1, "ConvTranspose", False)], ids=["scalar", "scalar-then-add", "per-channel", "convtranspose"])
def test_constant_scale_after_a_conv_folds_into_it(scale, shift, op, const_first):
    """A learnable affine block (PP-LCNetV3: Conv -> Mul(s) -> Add(c)) becomes one conv, so
    no requantization sits between the conv and its activation."""
    m = _conv_mul_add(scale, shift, op, const_first)
    res = compile_(m)
    assert op_count(res.model, "Mul") == 0 and op_count(res.model, "Add") == 0
    assert res.report["passes"]["fold-bn"]["scales_folded"] == 1
    check_equal(m, res)


@pytest.mark.parametrize("scale", [np.ones((1, 1, 8, 1), np.float32), np.linspace(1, 2, 8).astype(np.float32)],
                         ids=["per-row", "per-column"])
def test_scale_that_is_not_per_output_channel_stays(scale):
    m = _conv_mul_add(scale * 1.5)
    res = compile_(m)
    assert op_count(res.model, "Mul") == 1 and res.report["passes"]["fold-bn"]["scales_folded"] == 0
    check_equal(m, res)


def test_fold_bn_shared_weight_is_cloned():
    m = models.shared_weight_conv_bn()
    w0 = initializer(m, "shared.weight")
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    convs = {n.name: n for n in res.model.graph.node if n.op_type == "Conv"}
    # conv_b still reads the original, unchanged weight; conv_a reads a new one
    np.testing.assert_array_equal(initializer(res.model, convs["conv_b"].input[1]), w0)
    assert convs["conv_a"].input[1] != convs["conv_b"].input[1]
    feeds = random_feeds(m)
    ref, got = ort_outputs(m, feeds), ort_outputs(res.model, feeds)
    np.testing.assert_array_equal(got["out_b"], ref["out_b"])  # untouched path: bit-exact
    assert_close(ref["out_a"], got["out_a"])


def test_standalone_bn_becomes_mul_add():
    m = models.standalone_bn()
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    assert op_count(res.model, "Mul") == 2
    assert op_count(res.model, "Add") == 3  # the residual Add plus one per BN
    assert res.report["passes"]["fold-bn"]["to_mul_add"] == 2
    check_equal(m, res)


def _conv_bn_with_conv_output() -> onnx.ModelProto:
    """Conv -> BN -> Relu where the Conv's output is also a graph output."""
    rng = np.random.default_rng(3)
    c = 6
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), "var")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv_out"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["conv_out", "gamma", "beta", "mean", "var"], ["bn_out"],
                              name="bn"),
             helper.make_node("Relu", ["bn_out"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "conv_out", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("conv_out", TensorProto.FLOAT, [1, c, 8, 8]),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_bn_whose_conv_output_is_a_graph_output_is_not_folded():
    m = _conv_bn_with_conv_output()
    res = compile_(m, FOLD)
    conv = next(n for n in res.model.graph.node if n.op_type == "Conv")
    np.testing.assert_array_equal(initializer(res.model, conv.input[1]), initializer(m, "w"))
    np.testing.assert_array_equal(initializer(res.model, conv.input[2]), initializer(m, "b"))
    assert res.report["passes"]["fold-bn"]["folded"] == 0
    feeds = random_feeds(m)
    ref, got = ort_outputs(m, feeds), ort_outputs(res.model, feeds)
    np.testing.assert_array_equal(got["conv_out"], ref["conv_out"])
    assert_close(ref["y"], got["y"])


def _conv_bn_bn() -> onnx.ModelProto:
    """Conv -> BN -> BN -> output (both BNs fold into the conv)."""
    rng = np.random.default_rng(5)
    c = 4
    inits = [numpy_helper.from_array(rng.standard_normal((c, 2, 3, 3)).astype(np.float32) * 0.3, "w")]
    for k in ("1", "2"):
        inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "gamma" + k),
                  numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "beta" + k),
                  numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "mean" + k),
                  numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), "var" + k)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "gamma1", "beta1", "mean1", "var1"], ["b1"], name="bn1"),
             helper.make_node("BatchNormalization", ["b1", "gamma2", "beta2", "mean2", "var2"], ["y"], name="bn2")]
    g = helper.make_graph(nodes, "bnbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_two_bns_in_a_row_both_fold_into_the_conv():
    m = _conv_bn_bn()
    res = compile_(m, FOLD)
    assert [n.op_type for n in res.model.graph.node] == ["Conv"]
    assert res.report["passes"]["fold-bn"]["folded"] == 2
    assert [o.name for o in res.model.graph.output] == ["y"]
    check_equal(m, res)


def test_training_mode_bn_is_kept_with_a_reason():
    m = models.conv_bn_relu()
    bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    res = build(m, pipeline=FOLD)
    assert op_count(res.model, "BatchNormalization") == 1
    assert res.report["passes"]["fold-bn"]["kept"] == [bn.name]
    assert "training" in res.ir.ann.float_reasons[bn.name]


def test_fold_bn_with_dynamic_batch():
    m = models.conv_bn_relu(batch="N")
    res = compile_(m, FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    check_equal(m, res, dims={"N": 3})


# ----------------------------------------------------------------------------- fuse-conv-bias-act
FUSE = ["canonicalize", "fuse-conv-bias-act"]
KIND = {"Relu": "relu", "Clip": "clip", "LeakyRelu": "leakyrelu", "HardSwish": "hardswish",
        "HardSigmoidMul": "hardsigmoid*x", "SigmoidMul": "silu"}


@pytest.mark.parametrize("act", models.ACTIVATIONS)
def test_fuse_conv_bias_act(act):
    m = models.conv_bias_add_act(act)
    res = compile_(m, FUSE)
    assert op_count(res.model, "Add") == 0, "the bias Add was not folded into the conv"
    conv = next(n for n in res.model.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3 and conv.input[2]
    rs = regions(res)
    assert len(rs) == 1
    assert rs[0].kind == f"conv+bias+{KIND[act]}"
    assert rs[0].nodes[0] == conv.name
    assert len(rs[0].nodes) == (3 if act.endswith("Mul") else 2)
    live = {n.name for n in res.model.graph.node}
    assert set(rs[0].nodes) <= live
    rep = res.report["passes"]["fuse-conv-bias-act"]
    assert rep["bias_adds_folded"] == 1 and rep["regions"] == 1
    check_equal(m, res)


def test_fused_group_stops_at_a_graph_output():
    m = models.fused_group_with_middle_output()
    res = compile_(m, FUSE)
    by_first = {r.nodes[0]: r for r in regions(res)}
    conv1, conv2 = [n.name for n in res.model.graph.node if n.op_type == "Conv"]
    assert by_first[conv1].nodes == [conv1], "the region swallowed the Relu behind a graph output"
    assert by_first[conv2].nodes == [conv2]
    assert [o.name for o in res.model.graph.output] == ["conv_out", "output"]
    feeds = random_feeds(m)
    ref, got = ort_outputs(m, feeds), ort_outputs(res.model, feeds)
    np.testing.assert_array_equal(got["conv_out"], ref["conv_out"])
    assert_close(ref["output"], got["output"])


def test_bias_add_not_folded_when_conv_output_has_two_readers():
    """Conv -> Add(bias) where the conv output also feeds a Relu: folding would change the Relu."""
    m = models.conv_bias_add_act("Relu")
    g = m.graph
    conv = next(n for n in g.node if n.op_type == "Conv")
    g.node.append(helper.make_node("Sigmoid", [conv.output[0]], ["side"], name="side"))
    g.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    res = compile_(m, FUSE)
    assert op_count(res.model, "Add") == 1
    assert res.report["passes"]["fuse-conv-bias-act"]["bias_adds_folded"] == 0
    check_equal(m, res)


def _matmul_bias_head(computed_shape: bool, rank3: bool = False):
    """x [N, C, 1, 1] -> Reshape -> MatMul(W [C, K]) -> Add(b [K]), the classifier head of a
    Paddle export; with computed_shape the Reshape's shape is Shape -> Slice -> Concat, which
    leaves ONNX shape inference without the output rank."""
    rng = np.random.default_rng(4)
    c, k = 6, 3
    inits = [numpy_helper.from_array(rng.standard_normal((c, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([1, c] if rank3 else [c], np.int64), "rest")]
    nodes = []
    if computed_shape:
        nodes += [helper.make_node("Shape", ["x"], ["xs"]),
                  helper.make_node("Slice", ["xs", "zero", "one"], ["n"]),
                  helper.make_node("Concat", ["n", "rest"], ["shape"], axis=0)]
    else:
        inits.append(numpy_helper.from_array(np.array([-1] + ([1, c] if rank3 else [c]), np.int64), "shape"))
    nodes += [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
              helper.make_node("MatMul", ["flat", "w"], ["mm"]),
              helper.make_node("Add", ["mm", "b"], ["y"])]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, 1, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, k] if rank3 else ["n", k])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("computed_shape", [False, True])
def test_matmul_bias_add_becomes_gemm(computed_shape):
    m = _matmul_bias_head(computed_shape)
    res = compile_(m, FUSE)
    assert op_count(res.model, "Gemm") == 1 and op_count(res.model, "MatMul") == 0
    assert op_count(res.model, "Add") == 0
    assert res.report["passes"]["fuse-conv-bias-act"]["matmul_add_to_gemm"] == 1
    check_equal(m, res, dims={"n": 2})


def test_rank3_matmul_bias_add_stays():
    m = _matmul_bias_head(computed_shape=True, rank3=True)
    res = compile_(m, FUSE)
    assert op_count(res.model, "Gemm") == 0 and op_count(res.model, "Add") == 1
    check_equal(m, res, dims={"n": 2})


def test_full_fp32_pipeline_on_networks():
    for m, bns in ((models.residual_concat_net(), 11), (models.resnet18_like(hw=32, width=8, num_classes=10), 20),
                   (models.mobilenet_like(hw=32, width=8, num_classes=10), None)):
        assert bns is None or op_count(m, "BatchNormalization") == bns
        res = compile_(m)
        assert op_count(res.model, "BatchNormalization") == 0
        n_conv = op_count(res.model, "Conv")
        assert len(res.ir.ann.regions) == n_conv  # every conv heads a region
        check_equal(m, res, seeds=(0,))


def test_regions_survive_export_reimport_names():
    """Region members are node names that exist in the exported model, in dataflow order."""
    m = models.residual_concat_net()
    res = compile_(m)
    order = {n.name: i for i, n in enumerate(res.model.graph.node)}
    for r in res.ir.ann.regions.values():
        idx = [order[n] for n in r.nodes]
        assert idx == sorted(idx)


# ----------------------------------------------------------------------------- property test (cheap)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transpose=st.booleans(), groups=st.sampled_from([1, 2, 4]), cin_per=st.integers(1, 3),
       cout_per=st.integers(1, 3), kernel=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]),
       bias=st.booleans(), seed=st.integers(0, 1000))
def test_fold_bn_property(transpose, groups, cin_per, cout_per, kernel, stride, bias, seed):
    cin, cout = groups * cin_per, groups * cout_per
    if transpose:
        m = models.convtranspose_bn(cin=cin, cout=cout, hw=5, kernel=kernel, stride=stride, pad=0,
                                    output_padding=stride - 1, groups=groups, bias=bias, relu=False, seed=seed)
    else:
        m = models.conv_bn_relu(cin=cin, cout=cout, hw=7, bias=bias, groups=groups, kernel=kernel,
                                stride=stride, seed=seed)
    res = build(m, pipeline=FOLD)
    assert op_count(res.model, "BatchNormalization") == 0
    assert op_count(res.model, "Mul") == 0
    assert_same_outputs(m, res.model, random_feeds(m, seed=seed))
