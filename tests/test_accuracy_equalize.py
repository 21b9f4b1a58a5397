"""Cross-layer equalization keeps FP32 outputs (vs ONNX Runtime); data-free INT8 with
equalization recovers a channel-sabotaged net; bias correction; data-free ranges."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.analysis.evaluate import Evaluator
from qcompiler.pipeline.edits import adjust_pipeline
from fixtures.synthetic import cle_net, gaussian_batches, reestimate_bn, sabotage_channels
from qcompiler.driver.build import build
from qcompiler.target import load_target

from conftest import ort_run, ort_session

FP32 = ["canonicalize", "record-bn-stats", "fold-bn", "fuse-conv-bias-act", "equalize"]


def _run(model, feeds):
    return ort_run(model, feeds, optimized=True)


def _net(depthwise=True, sabotage=None):
    m = cle_net(depthwise=depthwise)
    data = gaussian_batches(m, 6)
    m = reestimate_bn(m, data)
    if sabotage:
        m = sabotage_channels(m, sabotage)
    return m, data


def _gemm_net():
    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((16, 12)) * np.exp(rng.normal(0, 1.5, (16, 1)))).astype(np.float32)
    w2 = rng.standard_normal((5, 16)).astype(np.float32)
    w3 = rng.standard_normal((5, 7)).astype(np.float32)  # MatMul weight {K, N}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.1, name="act"),
             helper.make_node("Gemm", ["a", "w2"], ["h2"], transB=1, name="fc2"),
             helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
             helper.make_node("MatMul", ["a2", "w3"], ["y"], name="mm")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3")]
    g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 7])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("depthwise", [True, False])
def test_equalize_keeps_fp32_outputs(depthwise):
    m, data = _net(depthwise)
    r = build(m, pipeline=FP32, options={"absorb_bias": False})
    rep = r.report["passes"]["equalize"]
    assert rep["pairs"] == (7 if depthwise else 5) and rep["converged"]
    assert rep["worst_channel_range_ratio"]["after"] < rep["worst_channel_range_ratio"]["before"]
    for feeds in data[:2]:
        a, b = _run(m, feeds)[0], _run(r.model, feeds)[0]
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_equalize_equalizes_ranges_and_undoes_sabotage():
    m, data = _net(True, sabotage="block0.expand.conv")
    r = build(m, pipeline=FP32)
    rep = r.report["passes"]["equalize"]
    assert rep["worst_channel_range_ratio"]["before"] > 100
    assert rep["worst_channel_range_ratio"]["after"] < 5
    a, b = _run(m, data[0])[0], _run(r.model, data[0])[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_equalize_gemm_leakyrelu_matmul_and_skips_clip():
    m = _gemm_net()
    x = {"x": np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)}
    r = build(m, pipeline=FP32)
    assert r.report["passes"]["equalize"]["pairs"] == 2
    np.testing.assert_allclose(_run(r.model, x)[0], _run(m, x)[0], rtol=1e-4, atol=1e-4)
    from fixtures.models import mobilenet_like

    mb = mobilenet_like(hw=32, width=8, num_classes=10)
    r = build(mb, pipeline=FP32)
    skipped = r.report["passes"]["equalize"]["skipped"]
    assert any("Clip" in why for why in skipped.values())
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    a = _run(mb, x)[0]
    np.testing.assert_allclose(_run(r.model, x)[0], a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_high_bias_absorption_is_close_and_exact_when_nothing_qualifies():
    m, data = _net(True)
    from qcompiler.analysis.report import sqnr_db

    r = build(m, pipeline=FP32, options={"absorb_bias": True, "absorb_sigmas": 3.0})
    assert r.report["passes"]["equalize"]["absorbed_channels"] > 0
    a, b = _run(m, data[0])[0], _run(r.model, data[0])[0]
    assert sqnr_db(a, b) > 25  # approximate: relu(x - c) + c differs only where x < c
    r = build(m, pipeline=FP32, options={"absorb_bias": True, "absorb_sigmas": 50.0})
    assert r.report["passes"]["equalize"]["absorbed_channels"] == 0


def _int8(model, opts, calib=None, target="x86"):
    t = load_target(target)
    names = adjust_pipeline([p for p in t.pipeline if p != "lower-layout"], opts)
    return build(model, target=t, pipeline=names, calib=calib, options=dict(opts, evaluate=False))


def test_data_free_equalization_recovers_sabotaged_net():
    m, data = _net(True, sabotage="block0.expand.conv")
    ev = Evaluator(m, gaussian_batches(m, 3, seed=1))
    stats = {"input_stats": {"*": {"mean": 0.0, "std": 1.0, "range": [-4.5, 4.5]}}}
    plain = _int8(m, dict(stats, data_free=True, equalize=False, bias_correction=False))
    assert "calibrate-data-free" in plain.report["pipeline"] and "equalize" not in plain.report["pipeline"]
    eq = _int8(m, dict(stats, data_free=True))
    assert {"record-bn-stats", "equalize", "bias-correction"} <= set(eq.report["pipeline"])
    s_plain = ev.error(plain.model)["sqnr_db"]
    s_eq = ev.error(eq.model)["sqnr_db"]
    print(f"data-free INT8 on the sabotaged net: {s_plain:.2f} dB plain, {s_eq:.2f} dB with equalization")
    assert s_eq - s_plain >= 10.0


def test_bias_correction_with_data_reduces_weight_error():
    m, data = _net(True)
    ev = Evaluator(m, gaussian_batches(m, 3, seed=1))
    base = _int8(m, {}, calib=lambda: iter(data))
    bc = _int8(m, {"bias_correction": True}, calib=lambda: iter(data))
    rep = bc.report["passes"]["bias-correction"]
    assert rep["corrected"] == 8 and rep["source"] == "calibration"
    assert ev.error(bc.model)["sqnr_db"] > ev.error(base.model)["sqnr_db"] - 0.5


def test_data_free_ranges_follow_bn_statistics():
    from qcompiler.calib.bn_moments import data_free_stats

    m, data = _net(True)
    r = build(m, pipeline=["canonicalize", "record-bn-stats", "fold-bn"])
    stats, fallback = data_free_stats(r.ir, k=6.0)
    assert not fallback
    s = stats["block0.expand.relu.out"]
    assert s.source == "bn" and np.all(s.lo >= 0)
    # the measured relu output means are close to the BN-derived ones
    sess = ort_session(m, optimized=True)
    out = onnx.ModelProto()
    out.CopyFrom(m)
    out.graph.output.append(helper.make_tensor_value_info("block0.expand.relu.out", TensorProto.FLOAT, None))
    v = ort_run(out, data[0], ["block0.expand.relu.out"], optimized=True)[0]
    measured = v.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(s.mean, measured, atol=0.15 * np.abs(measured).max())
    del sess
