"""Pattern matchers on small graphs built with onnx.helper and imported with graphsurgeon."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.target import load_target, parse_target
from qcompiler.target.patterns import (
    Failure,
    Match,
    compile_pattern,
    match_all,
    node_variables,
)

RNG = np.random.default_rng(0)


def _graph(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return gs.import_onnx(model)


def _vi(name, shape=None):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_graph(ic=8, oc=8, k=3, group=1, const_w=True, bias=False, tail="Relu",
               conv_out_is_graph_output=False, second_consumer=False):
    """x -> Conv -> [tail] -> y, with knobs for the cases the matcher must see."""
    inputs = [_vi("x", [1, ic, 8, 8])]
    inits = []
    w = RNG.standard_normal((oc, ic // group, k, k)).astype(np.float32)
    if const_w:
        inits.append(numpy_helper.from_array(w, "W"))
    else:
        inputs.append(_vi("W", list(w.shape)))
    conv_inputs = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(np.zeros(oc, np.float32), "B"))
        conv_inputs.append("B")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv0", group=group,
                              pads=[k // 2] * 4)]
    outputs = []
    if tail:
        nodes.append(helper.make_node(tail, ["c"], ["y"], name="act0"))
        outputs.append(_vi("y"))
    if conv_out_is_graph_output or not tail:
        outputs.append(_vi("c"))
    if second_consumer:
        nodes.append(helper.make_node("MaxPool", ["c"], ["p"], name="pool0", kernel_shape=[2, 2]))
        outputs.append(_vi("p"))
    return _graph(nodes, inputs, outputs, inits)


def node(g, name):
    return next(n for n in g.nodes if n.name == name)


SIMPLE = """
target t "matcher tests" {
  activation int8 symmetric per_tensor
  weight int8 symmetric per_channel(axis=0)
  pattern conv_act : Conv(x, w:const, b?:const) -> (Relu | Clip)?  benefit 10
  pattern conv_relu_pool : Conv(x, w:const) -> Relu -> MaxPool       benefit 5
  pattern mm_add : MatMul(a, b:const) -> Add(_, c:const)?            benefit 8
  pattern add : Add(a, b)                                            benefit 3
  pattern square : Mul(s, s)                                         benefit 3
  pattern cat : Concat(xs*)                                          benefit 3
  passthrough Reshape
  float Softmax
  pipeline canonicalize
}
"""


@pytest.fixture(scope="module")
def simple():
    return parse_target(SIMPLE, "simple.qtarget")


def test_conv_relu_matches(simple):
    g = conv_graph(bias=True)
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert isinstance(m, Match) and m
    assert [n.name for n in m.nodes] == ["conv0", "act0"]
    assert m.pattern == "conv_act"
    assert m.bindings["x"].name == "x" and m.bindings["w"].name == "W"
    assert m.bindings["b"].name == "B"
    assert m.output.name == "y"


def test_conv_clip_and_no_bias(simple):
    g = conv_graph(tail="Clip")
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert [n.op for n in m.nodes] == ["Conv", "Clip"]
    assert "b" not in m.bindings


def test_conv_alone_matches_when_no_activation(simple):
    g = conv_graph(tail=None)
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert [n.name for n in m.nodes] == ["conv0"]


def test_non_constant_weight_fails_with_reason(simple):
    g = conv_graph(const_w=False)
    r = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert isinstance(r, Failure) and not r
    assert "weight" in r.reason and "is not a constant" in r.reason
    matches, reasons = match_all(g, simple)
    assert "conv0" in reasons and "not a constant" in reasons["conv0"]
    assert all(m.anchor.name != "conv0" for m in matches)


def test_graph_output_breaks_the_chain(simple):
    g = conv_graph(conv_out_is_graph_output=True)
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert [n.name for n in m.nodes] == ["conv0"]
    # a required step after it fails with the reason
    r = compile_pattern(simple.pattern("conv_relu_pool")).match(node(g, "conv0"), g)
    assert not r and "graph output" in r.reason


def test_second_consumer_breaks_the_chain(simple):
    g = conv_graph(second_consumer=True)
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert [n.name for n in m.nodes] == ["conv0"]
    r = compile_pattern(simple.pattern("conv_relu_pool")).match(node(g, "conv0"), g)
    assert not r and "also feeds another node" in r.reason
    matches, reasons = match_all(g, simple)
    assert [[n.name for n in m.nodes] for m in matches] == [["conv0"]]
    assert "act0" in reasons  # Relu alone is legal nowhere in this target


def test_relu_output_with_second_consumer_stops_before_pool(simple):
    # x -> Conv -> Relu -> MaxPool, and Relu's output also goes to the graph outputs
    w = numpy_helper.from_array(RNG.standard_normal((4, 4, 1, 1)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv0"),
             helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool0", kernel_shape=[2, 2])]
    g = _graph(nodes, [_vi("x", [1, 4, 4, 4])], [_vi("p"), _vi("r")], [w])
    r = compile_pattern(simple.pattern("conv_relu_pool")).match(node(g, "conv0"), g)
    assert not r and "Relu output" in r.reason and "graph output" in r.reason
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert [n.name for n in m.nodes] == ["conv0", "relu0"]


def test_wrong_anchor_op(simple):
    g = conv_graph()
    r = compile_pattern(simple.pattern("conv_act")).match(node(g, "act0"), g)
    assert not r and "Relu is not Conv" in r.reason


def test_arm64_ic_constraint_reports_the_numbers():
    arm = load_target("arm64")
    g = conv_graph(ic=6, oc=8)
    r = compile_pattern(arm.pattern("conv_act")).match(node(g, "conv0"), g)
    assert not r
    assert r.reason == "input channels 6 are not a multiple of 4"
    g = conv_graph(ic=8, oc=6)
    r = compile_pattern(arm.pattern("conv_act")).match(node(g, "conv0"), g)
    assert r.reason == "output channels 6 are not a multiple of 4"
    # the generic arm64 conv pattern still takes it, so the node is INT8
    matches, reasons = match_all(g, arm)
    assert [m.pattern for m in matches] == ["conv_any_act"]
    assert reasons == {}


def test_arm64_prefers_nchw44_pattern_and_depthwise():
    arm = load_target("arm64")
    g = conv_graph(ic=8, oc=8)
    assert [m.pattern for m in match_all(g, arm)[0]] == ["conv_act"]
    g = conv_graph(ic=3, oc=16, tail="Clip")
    assert [m.pattern for m in match_all(g, arm)[0]] == ["conv_first_act"]
    g = conv_graph(ic=8, oc=8, group=8)
    assert [m.pattern for m in match_all(g, arm)[0]] == ["dwconv_act"]


def test_arm64_reports_illegal_op():
    arm = load_target("arm64")
    g = conv_graph(tail="HardSigmoid")
    matches, reasons = match_all(g, arm)
    assert reasons["act0"] == "HardSigmoid is not legal on arm64"
    g = conv_graph(tail="Softmax")
    _, reasons = match_all(g, arm)
    assert "stays float" in reasons["act0"]


def test_constraint_variables():
    g = conv_graph(ic=8, oc=16, k=5, group=2)
    v = node_variables(node(g, "conv0"))
    assert v == {"ic": 8, "oc": 16, "group": 2, "kernel": (5, 5), "stride": (1, 1),
                 "dilation": (1, 1)}


def test_kernel_constraint_reason():
    t = parse_target(SIMPLE.replace("(Relu | Clip)?  benefit 10",
                                    "(Relu | Clip)? where kernel in [1, 3] benefit 10"))
    g = conv_graph(k=5)
    r = compile_pattern(t.pattern("conv_act")).match(node(g, "conv0"), g)
    assert r.reason == "kernel 5x5 is not in [1, 3]"
    t = parse_target(SIMPLE.replace("(Relu | Clip)?  benefit 10",
                                    "(Relu | Clip)? where group == 1 benefit 10"))
    r = compile_pattern(t.pattern("conv_act")).match(node(conv_graph(group=2), "conv0"))
    assert r.reason == "needs group == 1, but group=2"


def _matmul_graph(swap=False, const_c=True):
    b = numpy_helper.from_array(RNG.standard_normal((4, 3)).astype(np.float32), "B")
    inits = [b]
    inputs = [_vi("a", [2, 4])]
    if const_c:
        inits.append(numpy_helper.from_array(np.ones(3, np.float32), "C"))
    else:
        inputs.append(_vi("C", [3]))
    add_in = ["C", "m"] if swap else ["m", "C"]
    nodes = [helper.make_node("MatMul", ["a", "B"], ["m"], name="mm0"),
             helper.make_node("Add", add_in, ["y"], name="add0")]
    return _graph(nodes, inputs, [_vi("y")], inits)


@pytest.mark.parametrize("swap", [False, True])
def test_chained_commutative_step(simple, swap):
    g = _matmul_graph(swap=swap)
    m = compile_pattern(simple.pattern("mm_add")).match(node(g, "mm0"), g)
    assert [n.name for n in m.nodes] == ["mm0", "add0"]
    assert m.bindings["c"].name == "C" and "_" not in m.bindings
    v = node_variables(node(g, "mm0"))
    assert (v["ic"], v["oc"]) == (4, 3)


def test_optional_step_skipped_when_its_operand_fails(simple):
    g = _matmul_graph(const_c=False)
    m = compile_pattern(simple.pattern("mm_add")).match(node(g, "mm0"), g)
    assert [n.name for n in m.nodes] == ["mm0"]
    matches, reasons = match_all(g, simple)
    assert sorted(m.pattern for m in matches) == ["add", "mm_add"]
    assert reasons == {}


def test_repeated_operand_name_means_same_tensor(simple):
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"], name="sq"),
             helper.make_node("Mul", ["x", "y"], ["z"], name="mul")]
    g = _graph(nodes, [_vi("x", [2])], [_vi("z")])
    assert compile_pattern(simple.pattern("square")).match(node(g, "sq"), g)
    r = compile_pattern(simple.pattern("square")).match(node(g, "mul"), g)
    assert not r and "same tensor" in r.reason


def test_variadic_operand(simple):
    nodes = [helper.make_node("Concat", ["a", "b", "c"], ["y"], name="cat0", axis=1)]
    g = _graph(nodes, [_vi("a", [1, 2]), _vi("b", [1, 2]), _vi("c", [1, 2])], [_vi("y")])
    m = compile_pattern(simple.pattern("cat")).match(node(g, "cat0"), g)
    assert [t.name for t in m.bindings["xs"]] == ["a", "b", "c"]


def test_match_all_greedy_by_benefit_no_node_twice(simple):
    # Conv -> Relu -> MaxPool: conv_act (benefit 10) beats conv_relu_pool (5)
    w = numpy_helper.from_array(RNG.standard_normal((4, 4, 1, 1)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv0"),
             helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool0", kernel_shape=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["q"], name="reshape0"),
             helper.make_node("Softmax", ["q"], ["y"], name="softmax0")]
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    g = _graph(nodes, [_vi("x", [1, 4, 4, 4])], [_vi("y")], [w, shape])
    matches, reasons = match_all(g, simple)
    assert [(m.pattern, [n.name for n in m.nodes]) for m in matches] == [
        ("conv_act", ["conv0", "relu0"])]
    seen = [n.name for m in matches for n in m.nodes]
    assert len(seen) == len(set(seen))
    assert "reshape0" not in reasons  # passthrough is not a failure
    assert reasons["softmax0"] == "Softmax stays float on t (listed as float)"
    assert reasons["pool0"] == "MaxPool is legal on t only fused after another op, and it was not"


def test_overlap_rematches_shorter(simple):
    # with conv_relu_pool preferred, Relu is taken and conv_act falls back to the Conv alone
    t = parse_target(SIMPLE.replace("MaxPool       benefit 5", "MaxPool       benefit 20")
                     .replace("(Relu | Clip)?  benefit 10", "(Relu | Clip)?  benefit 10\n"
                              "  pattern relu_pool : Relu(x) -> MaxPool  benefit 30"))
    w = numpy_helper.from_array(RNG.standard_normal((4, 4, 1, 1)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv0"),
             helper.make_node("Relu", ["c"], ["r"], name="relu0"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool0", kernel_shape=[2, 2])]
    g = _graph(nodes, [_vi("x", [1, 4, 4, 4])], [_vi("p")], [w])
    matches, reasons = match_all(g, t)
    got = [(m.pattern, [n.name for n in m.nodes]) for m in matches]
    assert got == [("conv_act", ["conv0"]), ("relu_pool", ["relu0", "pool0"])]


def test_match_all_accepts_model_proto_and_ir_like(simple):
    g = conv_graph()

    class IRLike:
        graph = g

    a = match_all(IRLike(), simple)
    b = match_all(gs.export_onnx(g), simple)
    assert [m.pattern for m in a[0]] == [m.pattern for m in b[0]] == ["conv_act"]


def test_cuda_residual_conv_add():
    cuda = load_target("cuda")
    w = numpy_helper.from_array(RNG.standard_normal((32, 32, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["s"], name="add0"),
             helper.make_node("Relu", ["s"], ["y"], name="relu0")]
    g = _graph(nodes, [_vi("x", [1, 32, 8, 8])], [_vi("y")], [w])
    matches, _ = match_all(g, cuda)
    assert [(m.pattern, len(m.nodes)) for m in matches] == [("conv_add_act", 3)]
    assert matches[0].bindings["skip"].name == "x"


# ------------------------------------------------------------------ layouts


def _layout(target, ic=8, oc=16, group=1):
    from qcompiler.lowering.conv_layout import decide_conv

    d = decide_conv("conv0", ic, oc, group, (3, 3), (1, 1), (1, 1), load_target(target))
    return d.layout, d.input_layout, d.ic_padded, d.oc_padded


def test_arm64_layouts():
    assert _layout("arm64", 8, 16) == ("NCHW44", "NCHW44", 8, 16)
    assert _layout("arm64", 3, 16) == ("NCHW44", "NCHW", 3, 16)  # first layer reads NCHW
    assert _layout("arm64", 6, 10) == ("NCHW44", "NCHW44", 8, 12)  # padded
    assert _layout("arm64", 6, 6, 6) == ("NCHW44", "NCHW44", 8, 8)  # depthwise, group padded too


def test_arm64_dot_layouts():
    assert _layout("arm64-dot", 8, 8)[0] == "NCHW44_DOT"
    assert _layout("arm64-dot", 8, 8, 8)[0] == "NCHW44"  # depthwise has no dot kernel


def test_cuda_layouts():
    assert _layout("cuda", 32, 64)[0] == "NC32HW32"
    assert _layout("cuda", 8, 12)[0] == "NC4HW4"
    assert _layout("cuda", 3, 12)[:3] == ("NC4HW4", "NC4HW4", 4)


def test_x86_layout_is_nchw():
    assert _layout("x86", 32, 64)[0] == "NCHW"


def test_dequantized_constant_weight_counts_as_constant(simple):
    wq = numpy_helper.from_array(np.ones((8, 8, 3, 3), np.int8), "Wq")
    sc = numpy_helper.from_array(np.array(0.1, np.float32), "ws")
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "ws"], ["W"], name="dq_w"),
             helper.make_node("Conv", ["x", "W"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="act0")]
    g = _graph(nodes, [_vi("x", [1, 8, 8, 8])], [_vi("y")], [wq, sc])
    m = compile_pattern(simple.pattern("conv_act")).match(node(g, "conv0"), g)
    assert [n.name for n in m.nodes] == ["conv0", "act0"]
    assert node_variables(node(g, "conv0"))["ic"] == 8
    matches, reasons = match_all(g, simple)
    assert "dq_w" not in reasons  # Q/DQ nodes are never listed as failures
