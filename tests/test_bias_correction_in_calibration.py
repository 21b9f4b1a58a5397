"""Bias correction with calibration data: calibrate measures E[x] in its own run, the
expected shift is computed without a float64 copy of a layer, and both agree with the
direct computation (ONNX Runtime's convolution of the mean map)."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompiler.rounding.bias_correction as bc
import qcompiler.passes.bias_correction as bc_pass
import qcompiler.passes.calibrate as calibrate_pass
from qcompiler.driver.build import build
from qcompiler.ir import load_ir
from qcompiler.pipeline.registry import all_passes
from qcompiler.quant.qparams import QParams
from qcompiler.target import load_target
from fixtures.models import mobilenet_like, residual_concat_net

all_passes()


def _ort_conv_mean(attrs, eps, mu):
    x = mu[None].astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], "c",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(eps.astype(np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.log_severity_level = 4
    y = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return y[0].reshape(y.shape[1], -1).astype(np.float64).mean(axis=1)


class _Node:
    def __init__(self, op, attrs):
        self.op, self.attrs = op, attrs


def test_conv_mean_shift_matches_onnx_runtime():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(120):
        g = int(rng.choice([1, 2, 3]))
        cin_g, cout = int(rng.integers(1, 4)), g * int(rng.integers(1, 4))
        k = [int(rng.integers(1, 6)), int(rng.integers(1, 6))]
        s = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        d = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        hw = [int(rng.integers((k[i] - 1) * d[i] + 1, 12)) for i in range(2)]
        attrs = dict(kernel_shape=k, strides=s, dilations=d, group=g)
        mode = str(rng.choice(["pads", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        if mode == "pads":
            attrs["pads"] = [int(p) for p in rng.integers(0, 3, 4)]
        else:
            if mode.startswith("SAME") and max(d) > 1:
                continue  # ONNX Runtime does not run dilated SAME convolutions
            attrs["auto_pad"] = mode
        mu = rng.standard_normal((g * cin_g, *hw))
        eps = rng.standard_normal((cout, cin_g, *k))
        got = bc.conv_mean_shift(_Node("Conv", attrs), eps, mu)
        ref = _ort_conv_mean(attrs, eps, mu)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        checked += 1
    assert checked > 60


def _direct_shift(ir, node, qp, mu):
    """(W_q - W) E[x] the plain way: the whole layer at once."""
    w = np.asarray(ir.const_value(node.inputs[1]), np.float64)
    eps = bc.fake_quant(w.astype(np.float32), qp).astype(np.float64) - w
    if node.op == "Conv":
        return _ort_conv_mean({k: v for k, v in node.attrs.items() if k != "auto_pad"}, eps, mu)
    return (eps if int(node.attrs.get("transB", 0)) else eps.T) @ mu


@pytest.mark.parametrize("chunk", [1, 64, 1 << 20])
def test_weight_error_shift_is_the_same_in_chunks(chunk, monkeypatch):
    """Depthwise, grouped and plain convs and both Gemm layouts, one output block at a time
    or whole: the same shift as the direct computation."""
    monkeypatch.setattr(bc, "CHUNK_VALUES", chunk)
    rng = np.random.default_rng(1)
    n = helper.make_node
    inits = {"w_dw": rng.standard_normal((8, 1, 3, 3)), "w_grp": rng.standard_normal((8, 2, 3, 3)),
             "w_conv": rng.standard_normal((6, 8, 3, 3)), "w_gemm_t": rng.standard_normal((5, 6)),
             "w_gemm": rng.standard_normal((6, 5))}
    nodes = [n("Conv", ["x", "w_dw"], ["a"], group=8, pads=[1, 1, 1, 1], name="dw"),
             n("Conv", ["a", "w_grp"], ["b"], group=4, pads=[1, 1, 1, 1], strides=[2, 2], name="grp"),
             n("Conv", ["b", "w_conv"], ["c"], pads=[0, 1, 1, 0], name="conv"),
             n("GlobalAveragePool", ["c"], ["p"]), n("Flatten", ["p"], ["f"]),
             n("Gemm", ["f", "w_gemm_t"], ["y1"], transB=1, name="gemm_t"),
             n("Gemm", ["f", "w_gemm"], ["y2"], name="gemm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 9, 9])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y1", "y2")],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    ir = load_ir(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    means = {"dw": rng.standard_normal((8, 9, 9)), "grp": rng.standard_normal((8, 9, 9)),
             "conv": rng.standard_normal((8, 5, 5)), "gemm_t": rng.standard_normal(6), "gemm": rng.standard_normal(6)}
    for node in ir.graph.nodes:
        if node.name not in means:
            continue
        w = ir.const_value(node.inputs[1])
        axis = 0 if node.op == "Conv" or node.attrs.get("transB") else 1
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        qp = QParams(amax / 127, np.zeros(w.shape[axis], np.int8), axis=axis, dtype="int8")
        got = bc.weight_error_shift(ir, node, qp, means[node.name])
        np.testing.assert_allclose(got, _direct_shift(ir, node, qp, means[node.name]), rtol=1e-5, atol=1e-7)


def _with_bc(target):
    from qcompiler.pipeline.edits import adjust_pipeline

    return adjust_pipeline(load_target(target).pipeline, {"bias_correction": True})


def _calib(shape, n=12, seed=3):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
    return lambda: ({"input": x} for x in xs)


def _hardswish_conv_net():
    """conv -> x * clip(x + 3, 0, 6) * (1/6) -> conv: the second conv reads a tensor whose
    range and mean follow from an observed one (the Mul by 1/6 is derived, not fetched)."""
    rng = np.random.default_rng(4)
    n = helper.make_node
    c = lambda name, v: numpy_helper.from_array(np.asarray(v, np.float32), name)  # noqa: E731
    nodes = [n("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             n("Add", ["c1", "three"], ["a"]), n("Clip", ["a", "zero", "six"], ["cl"]),
             n("Mul", ["c1", "cl"], ["m"]), n("Mul", ["m", "sixth"], ["hs"]),
             n("Conv", ["hs", "w2", "b2"], ["y"], pads=[1, 1, 1, 1])]
    inits = [c("w1", rng.standard_normal((8, 3, 3, 3)) * 0.4), c("b1", rng.standard_normal(8) * 0.1),
             c("w2", rng.standard_normal((8, 8, 3, 3)) * 0.2), c("b2", np.zeros(8)),
             c("three", 3.0), c("zero", 0.0), c("six", 6.0), c("sixth", 1 / 6)]
    g = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("target", ["x86", "arm64", "cuda"])
@pytest.mark.parametrize("make_net", [lambda: mobilenet_like(hw=32, width=8), _hardswish_conv_net],
                         ids=["mobilenet", "hardswish"])
def test_calibrate_measures_the_means_bias_correction_uses(target, make_net, monkeypatch):
    """One pass over the data: bias-correction takes calibrate's E[x] (no second session;
    a derived input's mean from its source's) and corrects the biases as measuring on its
    own does."""
    net = make_net()
    pipe = _with_bc(target)
    opts = {"calib_method": "minmax", "evaluate": False}
    calls = []
    real_measure = bc_pass.measure_input_means
    monkeypatch.setattr(bc_pass, "measure_input_means", lambda *a: calls.append(1) or real_measure(*a))
    fused = build(net, target=target, pipeline=pipe, calib=_calib([1, 3, 32, 32]), options=opts)
    assert calls == [] and fused.report["passes"]["bias-correction"]["corrected"] > 0
    monkeypatch.setattr(calibrate_pass, "_means_for_bias_correction", lambda *a: ({}, {}))
    separate = build(net, target=target, pipeline=pipe, calib=_calib([1, 3, 32, 32]), options=opts)
    assert calls == [1]
    def biases(r):
        return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in r.model.graph.initializer
                if "bias_acc" in i.name}

    a, b = biases(fused), biases(separate)
    assert a.keys() == b.keys() and a
    for name in a:  # int32 biases: equal, or one step apart where a float32 sum rounded differently
        assert np.max(np.abs(a[name] - b[name])) <= 1, name


def test_bias_correction_raises_sqnr_on_a_residual_net():
    net = residual_concat_net()
    shape = [d.dim_value or 1 for d in net.graph.input[0].type.tensor_type.shape.dim]
    name = net.graph.input[0].name
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(16)]
    calib = lambda: ({name: x} for x in xs[:12])  # noqa: E731
    outs = {}
    for tag, pipe in (("with", _with_bc("x86")), ("without", list(load_target("x86").pipeline))):
        r = build(net, target="x86", pipeline=pipe, calib=calib, options={"evaluate": False})
        outs[tag] = ort.InferenceSession(r.model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(net.SerializeToString(), providers=["CPUExecutionProvider"])

    def sqnr(sess):
        err = sig = 0.0
        for x in xs[12:]:
            y, q = ref.run(None, {name: x})[0], sess.run(None, {name: x})[0]
            sig, err = sig + float((y ** 2).sum()), err + float(((y - q) ** 2).sum())
        return 10 * np.log10(sig / err)

    assert sqnr(outs["with"]) >= sqnr(outs["without"]) - 0.05


def test_bias_correction_option_adds_and_removes_the_pass():
    from qcompiler.pipeline.edits import adjust_pipeline

    pipe = list(load_target("arm64").pipeline)
    assert adjust_pipeline(pipe, {}) == pipe
    on = adjust_pipeline(pipe, {"bias_correction": True})
    assert on.count("bias-correction") == 1 and on.index("bias-correction") == on.index("calibrate") + 1
    assert adjust_pipeline(on, {"bias_correction": True}) == on
    assert adjust_pipeline(on, {"bias_correction": False}) == pipe
