"""mode: dynamic — int8 weights offline, activations quantized at run time (ONNX Runtime's
DynamicQuantizeLinear + MatMulInteger form), checked against FP32 in ONNX Runtime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.pipeline.modes import prepare_build
from qcompiler.driver.build import build
from qcompiler.analysis.report import sqnr_db

from conftest import ort_session

D, S, H = 64, 16, 128


def _w(rng, name, shape, scale=None):
    return numpy_helper.from_array((rng.standard_normal(shape) * (scale or 1 / np.sqrt(shape[0]))).astype(np.float32),
                                   name)


def transformer_block(seed: int = 0) -> onnx.ModelProto:
    """Self-attention (q/k/v/o projections) + residual + MLP + mean pool + Gemm head."""
    rng = np.random.default_rng(seed)
    inits = [_w(rng, "wq", (D, D)), _w(rng, "wk", (D, D)), _w(rng, "wv", (D, D)), _w(rng, "wo", (D, D)),
             _w(rng, "w1", (D, H)), _w(rng, "b1", (H,), 0.1), _w(rng, "w2", (H, D)), _w(rng, "b2", (D,), 0.1),
             _w(rng, "wg", (10, D)), _w(rng, "bg", (10,), 0.1),
             numpy_helper.from_array(np.array(1 / np.sqrt(D), np.float32), "scale")]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q"], name="q_proj"), n("MatMul", ["x", "wk"], ["k"], name="k_proj"),
             n("MatMul", ["x", "wv"], ["v"], name="v_proj"), n("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
             n("MatMul", ["q", "kt"], ["att"], name="qk"), n("Mul", ["att", "scale"], ["atts"], name="att_scale"),
             n("Softmax", ["atts"], ["p"], axis=-1, name="softmax"), n("MatMul", ["p", "v"], ["ctx"], name="pv"),
             n("MatMul", ["ctx", "wo"], ["o"], name="o_proj"), n("Add", ["x", "o"], ["r1"], name="res1"),
             n("MatMul", ["r1", "w1"], ["h"], name="ffn1"), n("Add", ["h", "b1"], ["hb"], name="ffn1_bias"),
             n("Relu", ["hb"], ["hr"], name="relu"), n("MatMul", ["hr", "w2"], ["f"], name="ffn2"),
             n("Add", ["f", "b2"], ["fb"], name="ffn2_bias"), n("Add", ["r1", "fb"], ["r2"], name="res2"),
             n("ReduceMean", ["r2"], ["pool"], axes=[1], keepdims=0, name="pool"),
             n("Gemm", ["pool", "wg", "bg"], ["y"], transB=1, alpha=0.5, beta=2.0, name="head")]
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, S, D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _run(model, xs, optimize=True):
    s = ort_session(model, optimized=optimize)
    name = s.get_inputs()[0].name
    return [np.concatenate(o) for o in zip(*[s.run(None, {name: x}) for x in xs])]


@pytest.fixture(scope="module")
def block():
    return transformer_block()


@pytest.fixture(scope="module")
def xs():
    rng = np.random.default_rng(1)
    return [rng.standard_normal((2, S, D)).astype(np.float32) for _ in range(4)]


def test_dynamic_block_runs_in_onnxruntime_close_to_fp32(block, xs):
    names, opts = prepare_build(block, ["canonicalize", "fold-bn", "insert-observers", "calibrate", "place-qdq"],
                                {"mode": "dynamic"})
    assert names == ["canonicalize", "fold-bn", "quantize-dynamic"]
    r = build(block, pipeline=names, options=opts)  # no calibration data
    m = r.model
    onnx.checker.check_model(m, full_check=True)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("MatMulInteger") == 7  # q, k, v, o, ffn1, ffn2, head; q.k and p.v stay float
    assert ops.count("DynamicQuantizeLinear") == 5  # x once for q, k and v; ctx, r1, hr, pool
    assert "QuantizeLinear" not in ops and "MatMul" in ops
    assert r.report["dynamic"]["kernels"] == 7 and r.report["quantization"]["kernels"] == 7
    assert "float32 constant" in r.report["float_reasons"]["qk"]
    ref = _run(block, xs)[0]
    out = _run(m, xs)[0]
    assert sqnr_db(ref, out) > 22
    np.testing.assert_allclose(_run(m, xs, optimize=False)[0], out, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # the same numbers as ONNX Runtime's own dynamic quantizer
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        onnx.save(block, str(Path(d) / "m.onnx"))
        quantize_dynamic(str(Path(d) / "m.onnx"), str(Path(d) / "q.onnx"), weight_type=QuantType.QInt8,
                         per_channel=True)
        q = onnx.load(str(Path(d) / "q.onnx"))
    theirs = _run(q, xs)[0]
    # newer ONNX Runtime releases leave the Gemm head float; compare the same set of kernels
    if [n.op_type for n in q.graph.node].count("MatMulInteger") == 6:
        same = build(block, pipeline=names, options={**opts, "keep_float": ["head"]}).model
        out = _run(same, xs)[0]
    assert sqnr_db(ref, out) > sqnr_db(ref, theirs) - 1.0


def test_dynamic_per_tensor_and_keep_float(block, xs):
    r = build(block, pipeline=["canonicalize", "quantize-dynamic"],
              options={"per_channel": False, "keep_float": ["ffn*"]})
    ops = [n.op_type for n in r.model.graph.node]
    assert ops.count("MatMulInteger") == 5
    assert r.report["float_reasons"]["ffn1"] == "kept float by --keep-float"
    scales = [i for i in r.model.graph.initializer if i.name.endswith("_scale") and i.name.startswith("w")]
    assert scales and all(len(i.dims) == 0 for i in scales)
    assert sqnr_db(_run(block, xs)[0], _run(r.model, xs)[0]) > 20


def _rnn(direction="forward"):
    rng = np.random.default_rng(2)
    nd = 2 if direction == "bidirectional" else 1
    i, hd, gh = 16, 32, 8
    inits = [_w(rng, "W", (nd, 4 * hd, i), 0.15), _w(rng, "R", (nd, 4 * hd, hd), 0.15), _w(rng, "B", (nd, 8 * hd), 0.1),
             _w(rng, "Wg", (1, 3 * gh, i), 0.2), _w(rng, "Rg", (1, 3 * gh, gh), 0.2)]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=hd, direction=direction,
                              name="lstm"),
             helper.make_node("GRU", ["x", "Wg", "Rg"], ["gy"], hidden_size=gh, name="gru")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "yh", "gy")]
    g = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 3, i])], outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_becomes_dynamic_quantize_lstm(direction):
    m = _rnn(direction)
    r = build(m, pipeline=["canonicalize", "quantize-dynamic"])
    ops = [n.op_type for n in r.model.graph.node]
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops and "GRU" in ops
    assert "no integer GRU kernel" in r.report["float_reasons"]["gru"]
    x = [np.random.default_rng(3).standard_normal((10, 3, 16)).astype(np.float32)]
    ref, out = _run(m, x), _run(r.model, x)
    assert sqnr_db(ref[0], out[0]) > 20 and sqnr_db(ref[1], out[1]) > 20
    np.testing.assert_array_equal(ref[2], out[2])  # the GRU is untouched
