"""The declarative rewrite API (qcompiler.rewrite): matching, bindings, checks, explain,
the no-swallow rule, determinism, numerics against ONNX Runtime, and the plugin example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_same_outputs, ort_run, random_feeds, save
from qcompiler.cli import main
from qcompiler.errors import TargetError, UsageError
from qcompiler.ir.io import ir_to_model, model_to_ir
from qcompiler.rewrite import explain, match, rewrite
from qcompiler.target.parser import parse_pattern
from fixtures import models

ROOT = Path(__file__).resolve().parents[1]
FUSE_PLUGIN = ROOT / "examples" / "plugins" / "fuse_conv_relu.py"
CONV_ADD_ACT = "Conv(x, w:const, b?:const) -> Add(_, c:const) -> (Relu | Clip)?"


def graph(nodes, inits, outputs=("y",), shape=(1, 4, 8, 8)):
    """A float model with input x of `shape`; `inits` maps names to arrays."""
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def conv_model(tail, outputs=("y",), extra_inits=None):
    """Conv(x, W, B) -> c, then the `tail` nodes."""
    rng = np.random.default_rng(0)
    inits = {"W": rng.standard_normal((4, 4, 3, 3)), "B": rng.standard_normal(4)}
    inits.update(extra_inits or {})
    conv = helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1])
    return graph([conv, *tail], inits, outputs)


def exported(ir) -> onnx.ModelProto:
    ir.toposort()
    ir.verify()
    return ir_to_model(ir)


# ------------------------------------------------------------------ the pattern text


def test_pattern_text_errors_are_one_line_with_a_position():
    with pytest.raises(TargetError, match=r"<pattern>:1:1: unknown op 'Cnv', did you mean 'Conv'\?"):
        parse_pattern("Cnv(x) -> Relu")
    with pytest.raises(TargetError, match=r"<pattern>:1:11: expected .* got end of file"):
        parse_pattern("Conv(x) ->")
    pat = parse_pattern("Conv(x, w:const) -> Relu? where group == 1")
    assert pat.chain_text() == "Conv(x, w:const) -> Relu?" and str(pat.constraints[0]) == "group == 1"


# ------------------------------------------------------------------ matching and binding


def test_match_binds_operands_and_steps():
    ir = model_to_ir(models.conv_bias_add_act("Relu"))
    conv = next(n for n in ir.nodes if n.op == "Conv")
    m = match(ir, CONV_ADD_ACT, conv)
    assert m, m
    assert m["x"] is conv.inputs[0] and m["w"] is conv.inputs[1]
    assert m["b"] is None  # optional operand, absent (the model's conv has no bias input)
    assert m["c"].name and ir.const_value(m["c"]).shape == (1, 8, 1, 1)
    assert [n.op for n in m.nodes] == ["Conv", "Add", "Relu"]
    assert m["Conv"] is conv and m["Relu"] is m.nodes[2] and m["Clip"] is None
    assert m.slots == tuple(m.nodes) and m.output is m.nodes[2].outputs[0]
    with pytest.raises(KeyError, match="'Mul' is not in pattern"):
        m["Mul"]


def test_optional_step_is_skipped_in_slots():
    ir = model_to_ir(conv_model([helper.make_node("Sigmoid", ["c"], ["y"], name="sig")]))
    m = match(ir, "Conv(x, w:const, b?:const) -> Relu? -> Sigmoid", ir.node("conv"))
    assert m and [s.op if s is not None else None for s in m.slots] == ["Conv", None, "Sigmoid"]
    assert m["Relu"] is None and m["b"] is ir.node("conv").inputs[2]


def test_check_rejects_with_its_reason_and_leaves_the_graph():
    ir = model_to_ir(models.conv_bias_add_act("Relu"))
    before = [(n.op, n.name) for n in ir.nodes]
    calls = []
    result = rewrite(ir, CONV_ADD_ACT, lambda b, m: calls.append(m), name="t",
                     check=lambda m: f"{m['Conv'].name} is not wanted")
    assert (result.matched, result.rewritten, len(result.rejected)) == (1, 0, 1)
    anchor = before[0][1]
    assert result.report() == {"matched": 1, "rewritten": 0,
                               "rejected": {anchor: f"{anchor} is not wanted"}}
    assert not calls and [(n.op, n.name) for n in ir.nodes] == before


# ------------------------------------------------------------------ explain


def test_explain_says_why_not_and_what_matched():
    ir = model_to_ir(models.conv_bn_relu())
    assert explain(ir, "Conv(x, w:const, b?:const) -> Relu", "conv") == (
        "Conv(x, w:const, b?:const) -> Relu does not match at Conv 'conv': "
        "Conv 'conv' is followed by BatchNormalization, not Relu")
    assert explain(ir, "Conv(x, w:const) -> Relu", "conv").endswith(
        "Conv 'conv' has 3 inputs, the pattern takes at most 2")  # operands list every input
    assert explain(ir, "Conv(x, w:const, b?) -> BatchNormalization -> Relu", "conv").endswith(
        "matches Conv 'conv' -> BatchNormalization 'bn' -> Relu 'relu'")
    assert explain(ir, "Conv -> BatchNormalization", "conv", check=lambda m: "no thanks").endswith(
        "but the match is rejected: no thanks")
    assert "Relu is not Conv" in explain(ir, "Conv", "relu")
    with pytest.raises(UsageError, match="no node named 'cnv'.*did you mean 'conv'"):
        explain(ir, "Conv", "cnv")


# ------------------------------------------------------------------ what a match may swallow


def test_match_never_swallows_a_graph_output_or_a_shared_tensor():
    relu = helper.make_node("Relu", ["c"], ["y"], name="relu")
    as_output = model_to_ir(conv_model([relu], outputs=("y", "c")))
    why = explain(as_output, "Conv -> Relu", "conv")
    assert "output 'c' is a graph output, so it cannot be fused" in why
    shared = model_to_ir(conv_model([relu, helper.make_node("Sigmoid", ["c"], ["z"], name="sig")],
                                    outputs=("y", "z")))
    assert "also feeds another node" in explain(shared, "Conv -> Relu", "conv")
    for ir in (as_output, shared):
        result = rewrite(ir, "Conv -> Relu", lambda b, m: pytest.fail("must not be called"))
        assert result.matched == 0 and ir.node("relu").inputs[0].name == "c"


def test_final_output_may_be_a_graph_output_and_keeps_its_name():
    ir = model_to_ir(conv_model([helper.make_node("Relu", ["c"], ["y"], name="relu")]))
    model = ir_to_model(ir)
    result = rewrite(ir, "Conv(x, w:const, b?:const) -> Relu",
                     lambda b, m: b.op("Relu", b.op("Conv", *m["Conv"].inputs, **m["Conv"].attrs)))
    assert result.rewritten == 1
    out = exported(ir)
    assert [o.name for o in out.graph.output] == ["y"]
    assert {n.name for n in out.graph.node} == {"relu_Conv", "relu_Relu"}  # the matched ones dropped
    assert_same_outputs(model, out, random_feeds(model))


def test_a_second_output_in_use_rejects_the_match():
    topk = helper.make_node("TopK", ["c", "k"], ["y", "idx"], name="topk", axis=1)
    model = conv_model([topk], outputs=("y", "idx"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "k"))
    ir = model_to_ir(model)
    result = rewrite(ir, "Conv -> TopK", lambda b, m: pytest.fail("must not be called"))
    assert result.rejected == [("conv", "TopK 'topk' has a second output in use ('idx')")]


def test_other_domains_never_match():
    ir = model_to_ir(conv_model([helper.make_node("Relu", ["c"], ["y"], name="relu",
                                                  domain="com.example")]))
    assert "is in domain 'com.example'" in explain(ir, "Conv -> Relu", "conv")


# ------------------------------------------------------------------ overlaps and determinism


def relu_chain(n=5):
    names = ["x"] + [f"r{i}" for i in range(n - 1)] + ["y"]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"relu{i}") for i in range(n)]
    return graph(nodes, {})


def test_overlapping_matches_first_wins_in_node_order():
    ir = model_to_ir(relu_chain(5))
    merged = []

    def one_relu(b, m):
        merged.append([n.name for n in m.nodes])
        return b.op("Relu", m.anchor.inputs[0])

    result = rewrite(ir, "Relu -> Relu", one_relu)
    assert merged == [["relu0", "relu1"], ["relu2", "relu3"]]  # relu4 is left: its partner is taken
    assert result.rewritten == 2 and sorted(n.name for n in ir.nodes) == \
        ["relu1_Relu", "relu3_Relu", "relu4"]
    assert_same_outputs(relu_chain(5), exported(ir), random_feeds(relu_chain(5)))


def test_rewrites_are_deterministic():
    def build():
        ir = model_to_ir(models.residual_concat_net())
        rewrite(ir, "Conv(x, w:const, b?:const) -> BatchNormalization -> Relu?",
                lambda b, m: b.op("Relu", m["x"]) if m["Relu"] is not None else None)
        return exported(ir).SerializeToString()

    assert build() == build()


# ------------------------------------------------------------------ numerics (ONNX Runtime)


def fold_scale(b, m):
    """Conv -> Mul(per-channel s) as one Conv with W * s and B * s."""
    conv, s = m["Conv"], b.const_value(m["s"]).reshape(-1)
    w, bias = b.const_value(m["w"]), b.const_value(m["b"])
    b.set_input(conv, 1, b.constant("W_scaled", w * s.reshape(-1, 1, 1, 1)))
    b.set_input(conv, 2, b.constant("B_scaled", bias * s))
    return conv.outputs[0]


def test_rewrite_computes_what_the_original_computes():
    scale = np.linspace(0.5, 2.0, 4).reshape(1, 4, 1, 1)
    model = conv_model([helper.make_node("Mul", ["S", "c"], ["y"], name="mul")],  # swapped inputs
                       extra_inits={"S": scale})
    ir = model_to_ir(model)
    result = rewrite(ir, "Conv(x, w:const, b:const) -> Mul(_, s:const)", fold_scale,
                     check=lambda m: None if ir.const_value(m["s"]).size == 4 else "not per channel")
    assert result.rewritten == 1
    out = exported(ir)
    assert [n.op_type for n in out.graph.node] == ["Conv"] and out.graph.output[0].name == "y"
    feeds = random_feeds(model)
    ref = ort_run(model, feeds)[0]
    np.testing.assert_allclose(ort_run(out, feeds)[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_repeat_folds_a_chain_of_batchnorms_into_one_conv(tmp_path, capsys):
    rng = np.random.default_rng(1)
    inits, nodes, prev = {}, [], "c"
    for k in range(2):
        for p in ("g", "b", "m", "v"):
            inits[f"{p}{k}"] = rng.random(4) + (0.5 if p in "gv" else 0.0)
        nodes.append(helper.make_node("BatchNormalization", [prev, f"g{k}", f"b{k}", f"m{k}", f"v{k}"],
                                      [f"bn{k}"], name=f"bn{k}"))
        prev = f"bn{k}"
    nodes.append(helper.make_node("Relu", [prev], ["y"], name="relu"))
    model = conv_model(nodes, extra_inits=inits)
    src, out, rep = save(model, tmp_path / "m.onnx"), tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["build", src, "-o", str(out), "--report", str(rep), "-q",
                 "--pipeline", "canonicalize,fold-bn"]) == 0, capsys.readouterr().err
    assert json.loads(rep.read_text())["passes"]["fold-bn"]["folded"] == 2
    built = onnx.load(out)
    assert [n.op_type for n in built.graph.node] == ["Conv", "Relu"]
    assert_same_outputs(model, built, random_feeds(model))


# ------------------------------------------------------------------ the plugin example


def test_fuse_conv_relu_plugin_runs_through_the_cli(tmp_path, capsys):
    model = models.resnet18_like(hw=32, width=8, num_classes=10)
    src, out, rep = save(model, tmp_path / "m.onnx"), tmp_path / "o.onnx", tmp_path / "r.json"
    code = main(["build", src, "-o", str(out), "--plugin", str(FUSE_PLUGIN), "--report", str(rep),
                 "-q", "--pipeline", "canonicalize,fold-bn,fuse-conv-relu"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(rep.read_text())["passes"]["fuse-conv-relu"]
    built = onnx.load(out)
    fused = [n for n in built.graph.node if n.op_type == "FusedConv"]
    assert report["matched"] == report["rewritten"] == len(fused) > 0
    assert all(n.domain == "com.microsoft" for n in fused)
    assert not any(n.op_type == "Conv" and built.graph.node[i + 1:i + 2]
                   and built.graph.node[i + 1].op_type == "Relu"
                   and built.graph.node[i + 1].input[0] == n.output[0]
                   for i, n in enumerate(built.graph.node))
    assert_same_outputs(model, built, random_feeds(model))


def test_readme_shows_the_plugin_files_as_they_are():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    for plugin in ("count_convs.py", "fuse_conv_relu.py"):
        text = (ROOT / "examples" / "plugins" / plugin).read_text()
        assert text in blocks, f"README's copy of examples/plugins/{plugin} is out of date"
