"""The exported model shares one initializer per distinct small constant (scales, zero
points): same outputs in ONNX Runtime with and without its fused kernels, the same fused
kernels, and the same model when qcompiler imports it back; the build report's FP32
reference runs unoptimized and gives the SQNR an optimized one gives."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.analysis import report as rpt
from qcompiler.driver.build import build
from qcompiler.formats.shared_constants import share_small_constants
from qcompiler.ir import ir_to_model
from qcompiler.ir.io import model_size
from qcompiler.pipeline.modes import prepare_build
from qcompiler.target import load_target

from conftest import ort_session
from fixtures.models import residual_chain


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def built():
    data = _batches(10)
    return build(residual_chain(200), target="x86", calib=lambda: iter(data))


def _small_values(model, max_bytes=4096):
    """name -> the initializer's value key, for the initializers sharing may merge."""
    out = {}
    for t in model.graph.initializer:
        if t.ByteSize() <= max_bytes:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.ClearField("name")
            out[t.name] = c.SerializeToString(deterministic=True)
    return out


def _outputs(model, batches, optimized):
    s = ort_session(model, optimized=optimized)
    return [s.run(None, b)[0] for b in batches]


def test_build_exports_one_initializer_per_distinct_small_value(built):
    shared, unshared = built.model, ir_to_model(built.ir)
    onnx.checker.check_model(shared)
    values = _small_values(shared)
    assert len(set(values.values())) == len(values)  # no two small initializers hold the same value
    dropped = len(unshared.graph.initializer) - len(shared.graph.initializer)
    assert dropped == built.report["export"]["shared_constants"] > 0
    # zero points: one initializer per distinct value, not one per pair, weight and bias
    def zero_points(model):
        return {n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}

    assert len(zero_points(shared)) == len({values[n] for n in zero_points(shared)})
    assert len(zero_points(unshared)) > 3 * len(zero_points(shared))
    # nothing but input names changed
    assert [(n.op_type, n.output) for n in shared.graph.node] == [(n.op_type, n.output) for n in unshared.graph.node]
    assert built.report["size"]["after"] == model_size(shared) < model_size(unshared)


@pytest.mark.parametrize("optimized", [False, True])
def test_shared_model_gives_identical_outputs(built, optimized):
    held = _batches(3, seed=5)
    for a, b in zip(_outputs(built.model, held, optimized), _outputs(ir_to_model(built.ir), held, optimized)):
        np.testing.assert_array_equal(a, b)


def _fused_ops(model, tmp_path, name):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / name)
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / name)).graph.node]
    return {op: ops.count(op) for op in set(ops)}


def test_onnxruntime_fuses_the_same_integer_kernels(built, tmp_path):
    shared = _fused_ops(built.model, tmp_path, "shared.onnx")
    unshared = _fused_ops(ir_to_model(built.ir), tmp_path, "unshared.onnx")
    assert shared == unshared
    assert shared.get("QLinearConv", 0) >= 40 and "Conv" not in shared


def test_shared_model_imports_back_to_the_same_quantization(built):
    held = _batches(3, seed=7)
    results = []
    for model in (built.model, ir_to_model(built.ir)):
        names, opts = prepare_build(model, load_target("x86").pipeline, {"mode": "import"})
        r = build(model, target="x86", pipeline=names, options=opts)
        assert r.report["import"]["form"] == "qdq" and r.report["import"]["warnings"] == []
        results.append(r)
    a, b = results
    assert a.report["import"]["kernels"] == b.report["import"]["kernels"] > 40
    for x, y in zip(_outputs(a.model, held, False), _outputs(b.model, held, False)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(_outputs(a.model, held, False), _outputs(built.model, held, False)):
        np.testing.assert_array_equal(x, y)


def _toy(if_reads: str = "c"):
    """y = x*a + x*b + x*c + (If: x*c) + x*big1 + x*big2 + x*g, with a == b == c, big1 == big2
    (large) and g also a graph input."""
    one = lambda name, v=2.0: numpy_helper.from_array(np.array([v], np.float32), name)  # noqa: E731
    big = np.arange(2048, dtype=np.float32)
    inits = [one("a"), one("b"), one("c"), one("d", 3.0), numpy_helper.from_array(big, "big1"),
             numpy_helper.from_array(big.copy(), "big2"), one("g")]
    then = helper.make_graph([helper.make_node("Mul", ["x", if_reads], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2048])])
    other = helper.make_graph([helper.make_node("Mul", ["x", "d"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2048])])
    n = helper.make_node
    nodes = [n("Mul", ["x", "a"], ["ya"]), n("Mul", ["x", "b"], ["yb"]), n("Mul", ["x", "c"], ["yc"]),
             n("Mul", ["x", "big1"], ["y1"]), n("Mul", ["x", "big2"], ["y2"]), n("Mul", ["x", "g"], ["yg"]),
             n("If", ["flag"], ["yi"], then_branch=then, else_branch=other),
             n("Sum", ["ya", "yb", "yc", "y1", "y2", "yg", "yi"], ["y"])]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048]),
                                         helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
                                         helper.make_tensor_value_info("g", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2048])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_sharing_keeps_inputs_subgraph_reads_and_large_tensors():
    m = _toy()
    before = onnx.ModelProto()
    before.CopyFrom(m)
    assert share_small_constants(m, max_bytes=64) == 1  # b -> a; c is read in the If body
    onnx.checker.check_model(m)
    assert [t.name for t in m.graph.initializer] == ["a", "c", "d", "big1", "big2", "g"]
    assert [n.input[1] for n in m.graph.node[:6]] == ["a", "a", "c", "big1", "big2", "g"]
    feeds = {"x": np.linspace(-1, 1, 2048, dtype=np.float32), "flag": np.array(True),
             "g": np.array([5.0], np.float32)}
    np.testing.assert_array_equal(ort_session(m).run(None, feeds)[0], ort_session(before).run(None, feeds)[0])
    assert share_small_constants(m, max_bytes=64) == 0  # nothing left to share
    m2 = _toy(if_reads="d")
    assert share_small_constants(m2, max_bytes=1 << 20) == 3  # b, c -> a; big2 -> big1 under a larger limit


def test_report_reference_runs_the_fp32_model_unoptimized(built):
    """output_error's FP32 reference is the model as written; an optimized reference rounds
    differently, which moves the SQNR by far less than its printed precision."""
    fp32, held = residual_chain(200), _batches(3, seed=9)
    acc = rpt.output_error(fp32, built.model, held)
    out = acc["outputs"][next(iter(acc["outputs"]))]

    def by_hand(reference_optimized):
        ref = np.concatenate([r.reshape(-1) for r in _outputs(fp32, held, reference_optimized)])
        q = np.concatenate([r.reshape(-1) for r in _outputs(built.model, held, True)])
        return rpt.sqnr_db(ref, q)

    assert out["sqnr_db"] == round(by_hand(False), 3)
    assert abs(by_hand(True) - by_hand(False)) < 1e-3


def test_output_error_builds_the_reference_session_unoptimized(built, monkeypatch):
    made = []
    real = rpt.session

    def spy(model, threads=0, reference=False):
        made.append((model, reference))
        return real(model, threads, reference)

    monkeypatch.setattr(rpt, "session", spy)
    fp32 = residual_chain(200)
    rpt.output_error(fp32, built.model, _batches(1, seed=11))
    assert [(m is fp32, ref) for m, ref in made] == [(True, True), (False, False)]  # INT8: fused kernels
