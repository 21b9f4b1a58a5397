"""The IR layer: mutation gateway, annotations, union-find, verifier, toposort, printer, I/O."""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_close, ort_outputs, random_feeds
from qcompiler.errors import ModelError, VerifyError
from qcompiler.ir import (IR, FusedRegion, UnionFind, format_ir, ir_to_model, load_ir, model_to_ir,
                          node_lines)
from qcompiler.ir.toposort import live_nodes, toposort_nodes
from qcompiler.quant.qparams import QParams
from fixtures import models


# ----------------------------------------------------------------------------- small builders
def two_consumer_model(output_mid: bool = False) -> onnx.ModelProto:
    """x -> Abs(abs) -> t -> Relu(relu) -> a ; t -> Sigmoid(sig) -> b.  (t also an output if asked)"""
    nodes = [
        helper.make_node("Abs", ["x"], ["t"], name="abs"),
        helper.make_node("Relu", ["t"], ["a"], name="relu"),
        helper.make_node("Sigmoid", ["t"], ["b"], name="sig"),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")]
    if output_mid:
        outs.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3]))
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])], outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def chain_model(ops=("Relu", "Neg", "Abs")) -> onnx.ModelProto:
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        out = "y" if i == len(ops) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev], [out], name=f"n{i}"))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def qdq_model(scale=0.1, zp=None) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> y with a given scale / zero point."""
    s = numpy_helper.from_array(np.asarray(scale, np.float32), "s")
    inits = [s]
    q_in = ["x", "s"]
    if zp is not None:
        inits.append(numpy_helper.from_array(np.asarray(zp, np.uint8), "zp"))
        q_in.append("zp")
    nodes = [helper.make_node("QuantizeLinear", q_in, ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq"] + q_in[1:], ["y"], name="dq")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def feeds23(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)}


def finish(ir: IR) -> IR:
    """What the pass manager does after a pass."""
    ir.cleanup()
    ir.toposort()
    ir.verify()
    return ir


# ----------------------------------------------------------------------------- gateway
def test_insert_on_edge_only_for_chosen_consumers():
    ir = model_to_ir(two_consumer_model())
    t = ir.tensors()["t"]
    relu, sig = ir.node("relu"), ir.node("sig")

    def build(src):
        return ir.add_node("Neg", [src], name="neg", out_dtype=src.dtype, out_shape=src.shape).outputs[0]

    new = ir.insert_on_edge(t, build, consumers=[relu])
    assert relu.inputs[0] is new
    assert sig.inputs[0] is t
    neg = ir.node("neg")
    assert neg.inputs[0] is t  # the inserted node reads the original tensor
    finish(ir)
    out = ort_outputs(ir_to_model(ir), feeds23())
    x = feeds23()["x"]
    np.testing.assert_allclose(out["a"], np.maximum(-np.abs(x), 0), rtol=1e-6)
    np.testing.assert_allclose(out["b"], 1 / (1 + np.exp(-np.abs(x))), rtol=1e-6)


def test_insert_on_edge_all_consumers_by_default():
    ir = model_to_ir(two_consumer_model())
    t = ir.tensors()["t"]
    new = ir.insert_on_edge(t, lambda src: ir.add_node("Neg", [src], name="neg").outputs[0])
    assert ir.node("relu").inputs[0] is new and ir.node("sig").inputs[0] is new
    assert [n.name for n in t.outputs] == ["neg"]
    finish(ir)


def test_insert_on_edge_graph_output_keeps_public_name():
    ir = model_to_ir(two_consumer_model(output_mid=True))
    t = ir.tensors()["t"]
    ir.insert_on_edge(t, lambda src: ir.add_node("Neg", [src], name="neg", out_dtype=src.dtype,
                                                  out_shape=src.shape).outputs[0],
                      consumers=[ir.node("relu")], include_graph_output=True)
    finish(ir)
    names = [o.name for o in ir.graph.outputs]
    assert names == ["a", "b", "t"]
    out = ort_outputs(ir_to_model(ir), feeds23())
    x = feeds23()["x"]
    np.testing.assert_allclose(out["t"], -np.abs(x), rtol=1e-6)  # the output now comes after Neg
    np.testing.assert_allclose(out["b"], 1 / (1 + np.exp(-np.abs(x))), rtol=1e-6)  # sig untouched


def test_replace_uses_with_exclude_is_the_qdq_insertion_case():
    ir = model_to_ir(two_consumer_model())
    t = ir.tensors()["t"]
    scale = ir.constant("t_scale", np.array(0.05, np.float32))
    zp = ir.constant("t_zp", np.array(0, np.int8))
    q = ir.add_node("QuantizeLinear", [t, scale, zp], name="t_q", out_dtype=np.int8, out_shape=t.shape)
    dq = ir.add_node("DequantizeLinear", [q.outputs[0], scale, zp], name="t_dq", out_dtype=np.float32,
                     out_shape=t.shape)
    ir.replace_uses(t, dq.outputs[0], exclude=[q])
    assert q.inputs[0] is t
    assert ir.node("relu").inputs[0] is dq.outputs[0]
    assert ir.node("sig").inputs[0] is dq.outputs[0]
    finish(ir)
    out = ort_outputs(ir_to_model(ir), feeds23())
    x = np.abs(feeds23()["x"])
    deq = np.clip(np.round(x / 0.05), -128, 127) * 0.05
    np.testing.assert_allclose(out["a"], deq, rtol=1e-6, atol=1e-7)


def test_replace_uses_keeps_graph_output_name():
    ir = model_to_ir(chain_model())
    y = ir.tensors()["y"]
    post = ir.add_node("Sigmoid", [y], name="post", out_dtype=y.dtype, out_shape=y.shape)
    ir.replace_uses(y, post.outputs[0], exclude=[post])
    assert [o.name for o in ir.graph.outputs] == ["y"]
    assert ir.graph.outputs[0] is post.outputs[0]
    assert y.name != "y" and y.name in ir.tensors()  # the old tensor got a fresh internal name
    finish(ir)
    out = ort_outputs(ir_to_model(ir), feeds23())
    x = feeds23()["x"]
    np.testing.assert_allclose(out["y"], 1 / (1 + np.exp(-np.abs(-np.maximum(x, 0)))), rtol=1e-6)


def test_replace_uses_moves_annotations_with_public_name():
    """The public output name keeps its qparams; the pre-tensor is the renamed old one."""
    ir = model_to_ir(chain_model())
    y = ir.tensors()["y"]
    qp = QParams(np.float32(0.5), np.int8(0), None, "int8")
    ir.ann.qparams["y"] = qp
    post = ir.add_node("Relu", [y], name="post", out_dtype=y.dtype, out_shape=y.shape)
    ir.replace_uses(y, post.outputs[0], exclude=[post])
    # rename_tensor moved y's annotation to its new internal name; the public name is free again
    assert ir.ann.qparams.get(y.name) is qp
    assert "y" not in ir.ann.qparams


def test_rename_tensor_carries_qparams_qspec_and_groups():
    ir = model_to_ir(two_consumer_model())
    t = ir.tensors()["t"]
    qp = QParams(np.float32(0.1), np.int8(0), None, "int8")
    ir.ann.qparams["t"] = qp
    ir.ann.qspec["t"] = "spec-of-t"
    ir.ann.groups.union("t", "a")
    ir.ann.groups.union("a", "b")
    ir.rename_tensor(t, "t_renamed")
    assert t.name == "t_renamed"
    assert ir.ann.qparams == {"t_renamed": qp}
    assert ir.ann.qspec == {"t_renamed": "spec-of-t"}
    assert ir.ann.groups.same("t_renamed", "b")
    assert ir.ann.groups.members("a") == ["a", "b", "t_renamed"]
    assert "t" not in ir.ann.groups.members("a")
    # the fresh-name table knows the new name and has freed the old one
    assert ir.fresh_name("t_renamed") != "t_renamed"
    assert ir.fresh_name("t") == "t"


def test_rename_node_carries_regions_reasons_layout():
    ir = model_to_ir(two_consumer_model())
    relu = ir.node("relu")
    ir.ann.regions["r0"] = FusedRegion("r0", "abs+relu", ["abs", "relu"])
    ir.ann.float_reasons["relu"] = "not legal"
    ir.ann.layout["relu"] = "NCHW44"
    ir.rename_node(relu, "relu2")
    assert ir.ann.regions["r0"].nodes == ["abs", "relu2"]
    assert ir.ann.region_of("relu2").name == "r0"
    assert ir.ann.float_reasons == {"relu2": "not legal"}
    assert ir.ann.layout == {"relu2": "NCHW44"}
    assert "@region=r0" in node_lines(ir)["relu2"]


def test_remove_node_refuses_while_outputs_are_used():
    ir = model_to_ir(chain_model())
    n0 = ir.node("n0")
    with pytest.raises(ValueError, match="still used"):
        ir.remove_node(n0)
    assert n0 in ir.graph.nodes and len(n0.outputs) == 1  # nothing was detached


def test_remove_node_forgets_annotations():
    ir = model_to_ir(chain_model())
    n2 = ir.node("n2")
    n1 = ir.node("n1")
    ir.ann.regions["r"] = FusedRegion("r", "x", ["n1", "n2"])
    ir.ann.float_reasons["n2"] = "why"
    ir.replace_uses(n2.outputs[0], n1.outputs[0])
    ir.remove_node(n2)
    assert ir.ann.regions["r"].nodes == ["n1"]
    assert "n2" not in ir.ann.float_reasons
    finish(ir)
    assert [n.name for n in ir.graph.nodes] == ["n0", "n1"]
    assert [o.name for o in ir.graph.outputs] == ["y"]


def test_bypass_identity_in_the_middle_and_at_the_output():
    ir = model_to_ir(chain_model(("Relu", "Identity", "Neg", "Identity")))
    ref = ort_outputs(chain_model(("Relu", "Identity", "Neg", "Identity")), feeds23())
    ir.bypass(ir.node("n1"))
    ir.bypass(ir.node("n3"))  # produces the graph output: Neg's output takes the name 'y'
    finish(ir)
    assert [n.op for n in ir.graph.nodes] == ["Relu", "Neg"]
    assert [o.name for o in ir.graph.outputs] == ["y"]
    assert ir.node("n2").outputs[0].name == "y"
    np.testing.assert_array_equal(ort_outputs(ir_to_model(ir), feeds23())["y"], ref["y"])


def test_fresh_names_never_collide_with_tensors_or_nodes():
    ir = model_to_ir(chain_model())
    seen = set(ir.tensors()) | {n.name for n in ir.graph.nodes}
    for base in ("x", "n0", "t0", "y", "new", "new"):
        name = ir.fresh_name(base)
        assert name not in seen
        seen.add(name)


# ----------------------------------------------------------------------------- union-find
def test_union_find_basics():
    uf = UnionFind()
    for x in "abcdef":
        uf.add(x)
    assert not uf.same("a", "b")
    uf.union("a", "b")
    uf.union("c", "d")
    uf.union("b", "d")
    assert uf.same("a", "c") and uf.find("a") == uf.find("d")
    assert uf.members("c") == ["a", "b", "c", "d"]
    assert uf.members("e") == ["e"]
    assert uf.groups() == [["a", "b", "c", "d"]]
    assert uf.union("a", "c") == uf.find("a")  # idempotent


def test_union_find_rename_and_discard():
    uf = UnionFind()
    uf.union("a", "b")
    uf.union("b", "c")
    uf.rename("b", "B")
    assert uf.members("a") == ["B", "a", "c"]
    assert uf.members("b") == ["b"]  # the old name is a fresh singleton now
    uf.discard("b")
    uf.discard("a")
    assert uf.members("c") == ["B", "c"]
    assert uf.same("B", "c")
    uf.rename("zzz", "y")  # unknown: no-op
    uf.discard("zzz")
    assert uf.groups() == [["B", "c"]]


def test_union_find_long_chain_is_not_recursive():
    uf = UnionFind()
    n = 50_000
    for i in range(n - 1):
        uf.union(i, i + 1)
    assert uf.same(0, n - 1)
    assert len(uf.groups()[0]) == n


# ----------------------------------------------------------------------------- verifier
def good_ir() -> IR:
    return finish(model_to_ir(chain_model(("Relu", "Neg", "Abs", "Sigmoid"))))


def test_verifier_accepts_a_good_graph():
    good_ir().verify()


def test_verifier_catches_a_cycle():
    ir = good_ir()
    n0, n2 = ir.node("n0"), ir.node("n2")
    n0.inputs.append(n2.outputs[0])  # n0 now also reads a tensor downstream of itself
    with pytest.raises(VerifyError, match="cycle"):
        ir.verify()


def test_verifier_catches_two_producers():
    ir = good_ir()
    t1 = ir.node("n1").outputs[0]
    extra = gs.Node("Relu", name="extra", inputs=[ir.graph.inputs[0]], outputs=[])
    extra.outputs.append(t1)  # gs lets a tensor get a second producer
    ir.graph.nodes.append(extra)
    with pytest.raises(VerifyError, match="producers"):
        ir.verify()


def test_verifier_catches_duplicate_node_names():
    ir = good_ir()
    ir.node("n1").name = "n0"
    with pytest.raises(VerifyError, match="two nodes are named 'n0'"):
        ir.verify()


def test_verifier_catches_unnamed_node():
    ir = good_ir()
    ir.node("n1").name = ""
    with pytest.raises(VerifyError, match="no name"):
        ir.verify()


def test_verifier_catches_dangling_input():
    ir = good_ir()
    ir.node("n2").inputs[0] = gs.Variable("nowhere", dtype=np.float32, shape=[2, 3])
    with pytest.raises(VerifyError, match="reads 'nowhere', which nothing produces"):
        ir.verify()


def test_verifier_catches_dead_graph_output():
    ir = good_ir()
    ir.graph.outputs.append(gs.Variable("ghost", dtype=np.float32, shape=[2, 3]))
    with pytest.raises(VerifyError, match="graph output 'ghost' is not produced"):
        ir.verify()


def test_verifier_catches_two_tensors_with_one_name():
    ir = good_ir()
    ir.node("n1").outputs[0].name = "t0"  # n2 reads a different tensor also named t0
    with pytest.raises(VerifyError, match="t0"):
        ir.verify()


@pytest.mark.parametrize("scale, zp, match", [
    (0.0, None, "not positive and finite"),
    (-0.5, None, "not positive and finite"),
    (float("nan"), None, "not positive and finite"),
    (float("inf"), None, "not positive and finite"),
    (0.1, [0, 0], "zero point shape"),
])
def test_verifier_catches_bad_qdq(scale, zp, match):
    ir = model_to_ir(qdq_model(scale, zp))
    with pytest.raises(VerifyError, match=match):
        ir.verify()


def test_verifier_catches_per_channel_scale_count_mismatch():
    ir = model_to_ir(qdq_model(0.1))
    q = ir.node("q")
    q.inputs[1] = gs.Constant("s3", np.array([0.1, 0.2, 0.3], np.float32))
    q.attrs["axis"] = 1  # x is [1, 4]: 3 scales for 4 channels
    with pytest.raises(VerifyError, match="3 scales for axis 1 of size 4"):
        ir.verify()


def test_verifier_accepts_good_qdq():
    finish(model_to_ir(qdq_model(0.1, 128)))


def test_verify_errors_are_one_line():
    ir = good_ir()
    ir.graph.outputs.append(gs.Variable("ghost", dtype=np.float32))
    with pytest.raises(VerifyError) as e:
        ir.verify()
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- toposort
def test_toposort_is_stable_on_sorted_input():
    ir = model_to_ir(models.residual_concat_net())
    before = [n.name for n in ir.graph.nodes]
    ir.toposort()
    assert [n.name for n in ir.graph.nodes] == before


def test_toposort_sorts_a_shuffled_graph():
    ir = model_to_ir(models.residual_concat_net())
    random.Random(0).shuffle(ir.graph.nodes)
    ir.toposort()
    pos = {id(n): i for i, n in enumerate(ir.graph.nodes)}
    for n in ir.graph.nodes:
        for t in n.inputs:
            for p in t.inputs:
                assert pos[id(p)] < pos[id(n)], f"{p.name} after its consumer {n.name}"
    ir.verify()
    # sorting the sorted result again changes nothing
    again = [n.name for n in ir.graph.nodes]
    ir.toposort()
    assert [n.name for n in ir.graph.nodes] == again


def _gs_chain(n: int) -> gs.Graph:
    x = gs.Variable("x", dtype=np.float32, shape=[1])
    nodes, prev = [], x
    for i in range(n):
        out = gs.Variable(f"t{i}", dtype=np.float32, shape=[1])
        nodes.append(gs.Node("Relu", name=f"n{i}", inputs=[prev], outputs=[out]))
        prev = out
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[prev], opset=13)


def test_toposort_20k_chain_is_fast_and_iterative():
    g = _gs_chain(20_000)
    g.nodes.reverse()  # worst case for a DFS: every node waits on the whole chain above it
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # a recursive sort would blow up
    try:
        t0 = time.perf_counter()
        order = toposort_nodes(g)
        dt = time.perf_counter() - t0
    finally:
        sys.setrecursionlimit(limit)
    assert [n.name for n in order] == [f"n{i}" for i in range(20_000)]
    assert dt < 5.0, f"sorting a 20k chain took {dt:.2f} s"  # ~0.3 s; a quadratic sort takes minutes
    assert len(live_nodes(g)) == 20_000


# ----------------------------------------------------------------------------- printer
def test_printer_is_stable_and_one_line_per_node():
    m = models.residual_concat_net()
    a = format_ir(model_to_ir(m))
    b = format_ir(model_to_ir(m))
    assert a == b
    ir = model_to_ir(m)
    lines = a.splitlines()
    node_rows = [line for line in lines if " = " in line and not line.startswith(("input ", "output "))]
    assert len(node_rows) == len(ir.graph.nodes)
    assert lines[0].startswith("graph ") and f"nodes={len(ir.graph.nodes)}" in lines[0]
    # export + re-import prints the same
    assert format_ir(model_to_ir(ir_to_model(ir))) == a


def test_printer_shows_shapes_attrs_qparams_regions_groups():
    ir = finish(model_to_ir(models.conv_bn_relu()))
    conv = next(n for n in ir.graph.nodes if n.op == "Conv")
    y = conv.outputs[0]
    ir.ann.qparams[y.name] = QParams(np.float32(0.0213), np.uint8(12), None, "uint8")
    w = conv.inputs[1]
    ir.ann.qparams[w.name] = QParams(np.linspace(0.01, 0.02, 8, dtype=np.float32),
                                     np.zeros(8, np.int8), 0, "int8")
    ir.ann.regions["r0"] = FusedRegion("r0", "conv", [conv.name])
    ir.ann.groups.union(y.name, "input")
    text = format_ir(ir)
    line = node_lines(ir)[conv.name]
    assert line.startswith(f"{conv.name} = Conv(input:f32[1,3,16,16], {w.name}:f32[8,3,3,3]=const")
    assert "pads=[1,1,1,1]" in line
    assert "@region=r0" in line
    assert f"[{y.name}: uint8 s=0.0213 zp=12]" in line
    assert "scale-group 0:" in text and y.name in text.splitlines()[-1]
    assert format_ir(ir) == text


def test_printer_marks_qparams_only_changes_in_diff():
    from qcompiler.ir.diff import diff_node_lines

    ir = finish(model_to_ir(models.conv_bn_relu()))
    before = node_lines(ir)
    relu = next(n for n in ir.graph.nodes if n.op == "Relu")
    ir.ann.qparams[relu.outputs[0].name] = QParams(np.float32(0.1), np.uint8(0), None, "uint8")
    d = diff_node_lines(before, node_lines(ir))
    assert len(d["qparams"]) == 1 and not d["changed"] and not d["added"] and not d["removed"]


# ----------------------------------------------------------------------------- export / import
@pytest.mark.parametrize("name", ["conv_bn_relu", "gemm_bn", "residual_concat_net",
                                  "identity_dropout_constant", "opset11_model_constants"])
def test_export_passes_full_check(name):
    ir = finish(model_to_ir(models.BUILDERS[name]()))
    model = ir_to_model(ir)
    onnx.checker.check_model(model, full_check=True)


def test_export_roundtrip_keeps_metadata_and_outputs():
    m = models.conv_bn_relu()
    m.doc_string = "doc"
    onnx.helper.set_model_props(m, {"labels": "a,b"})
    ir = model_to_ir(m)
    out = ir_to_model(ir)
    assert out.doc_string == "doc"
    assert {p.key: p.value for p in out.metadata_props} == {"labels": "a,b"}
    assert out.producer_name == m.producer_name
    feeds = random_feeds(m)
    np.testing.assert_array_equal(ort_outputs(m, feeds)["output"], ort_outputs(out, feeds)["output"])


def test_load_with_external_data(tmp_path):
    m = models.conv_bn_relu(cin=8, cout=16)
    path = models.with_external_data(m, tmp_path / "ext", size_threshold=64)
    raw = onnx.load(path, load_external_data=False)
    assert any(init.data_location == TensorProto.EXTERNAL for init in raw.graph.initializer)
    ir = load_ir(path)
    consts = {t.name: np.asarray(t.values) for t in ir.tensors().values() if ir.is_const(t)}
    for init in m.graph.initializer:
        np.testing.assert_array_equal(consts[init.name], numpy_helper.to_array(init))
    feeds = random_feeds(m)
    np.testing.assert_array_equal(ort_outputs(m, feeds)["output"], ort_outputs(ir_to_model(ir), feeds)["output"])


def test_save_model_writes_external_data_when_asked(tmp_path):
    from qcompiler.ir.io import save_model

    m = models.conv_bn_relu(cin=8, cout=16)
    before = m.SerializeToString()
    out = save_model(m, tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").exists()
    assert m.SerializeToString() == before  # the caller's model is not modified
    ir = load_ir(out)
    feeds = random_feeds(m)
    assert_close(ort_outputs(m, feeds)["output"], ort_outputs(ir_to_model(ir), feeds)["output"], 0.0)
    assert not list(tmp_path.glob(".*tmp"))  # no temporaries left behind


def _one_line_model_error(path, match):
    with pytest.raises(ModelError, match=match) as e:
        load_ir(path)
    text = str(e.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_read_error_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    _one_line_model_error(p, "is empty")


def test_read_error_truncated_protobuf(tmp_path):
    data = models.conv_bn_relu().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    _one_line_model_error(p, "not a readable ONNX model|holds no ONNX graph")


def test_read_error_text_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\nat all\n")
    _one_line_model_error(p, "not a readable ONNX model|holds no ONNX graph")


def test_read_error_missing_external_data(tmp_path):
    path = models.with_external_data(models.conv_bn_relu(cin=8, cout=16), tmp_path, size_threshold=64)
    (tmp_path / "model.onnx.data").unlink()
    text = _one_line_model_error(path, "external data file 'model.onnx.data'")
    assert "missing" in text


def test_read_error_missing_file_and_folder(tmp_path):
    _one_line_model_error(tmp_path / "nope.onnx", "does not exist")
    _one_line_model_error(tmp_path, "is a folder")


def test_read_error_dangling_input_and_old_opset():
    m = chain_model()
    m.graph.node[1].input[0] = "missing"
    with pytest.raises(ModelError, match="reads 'missing'"):
        model_to_ir(m)
    m = chain_model()
    m.opset_import[0].version = 5
    with pytest.raises(ModelError, match="opset 5"):
        model_to_ir(m)


def test_unnamed_and_duplicate_node_names_are_made_unique():
    m = chain_model(("Relu", "Neg", "Abs"))
    m.graph.node[0].name = ""
    m.graph.node[2].name = "n1"
    ir = model_to_ir(m)
    names = [n.name for n in ir.graph.nodes]
    assert len(set(names)) == 3 and all(names)
    ir.verify()


def test_printer_shows_scalar_constants_plainly():
    m = models.conv_bias_add_act("Clip")  # Clip(min=0, max=6) as scalar initializers
    ir = model_to_ir(m)
    clip = next(n for n in ir.graph.nodes if n.op == "Clip")
    line = node_lines(ir)[clip.name]
    assert "=0.0" in line and "=6.0" in line, line
    assert "np." not in format_ir(ir)
