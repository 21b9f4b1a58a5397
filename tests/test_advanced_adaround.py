"""AdaRound: the NumPy optimiser, conv rows, and int4 builds that beat nearest rounding."""

import numpy as np
import onnx
import pytest

from qcompiler.rounding.adaround import AdaRoundConfig, adaround_codes, fake_quant_model, layer_view
from qcompiler.driver.build import build
from qcompiler.quant.qparams import QParams
from qcompiler.analysis.report import sqnr_db
from fixtures.models import residual_concat_net

from conftest import ort_run, ort_session

PIPE = ["canonicalize", "fold-bn", "fuse-conv-bias-act", "insert-observers", "calibrate", "unify-concat-scales",
        "adaround", "place-qdq", "fold-requant"]


def test_adaround_codes_reconstruct_better_than_nearest():
    rng = np.random.default_rng(0)
    g, o, d, r = 1, 16, 48, 512
    w = rng.normal(0, 0.1, (g, o, d)).astype(np.float32)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = (np.maximum(rng.normal(size=(g, r, d)), 0) @ mix).astype(np.float32)
    s = np.abs(w).max(axis=2, keepdims=True) / 7
    res = adaround_codes(w, s, 0, -7, 7, x, AdaRoundConfig(iters=300))
    assert res.improved and res.rec_adaround < 0.8 * res.rec_nearest
    floor = np.floor(w / s)
    assert np.all((res.codes == floor) | (res.codes == floor + 1) | (res.codes == -7) | (res.codes == 7))
    assert res.codes.min() >= -7 and res.codes.max() <= 7
    # with the FP32 inputs given apart from the quantized ones, the target is W x_fp32
    xq = x + rng.normal(0, 0.05, x.shape).astype(np.float32)
    res2 = adaround_codes(w, s, 0, -7, 7, xq, AdaRoundConfig(iters=300), x_fp32=x)
    assert res2.improved
    # a spent deadline stops at once; the rounding still comes back
    res3 = adaround_codes(w, s, 0, -7, 7, x, AdaRoundConfig(iters=300), deadline=0.0)
    assert res3.iters == 1 and res3.codes.shape == w.shape


@pytest.mark.parametrize("group,stride,dil,pads,auto", [(1, 1, 1, (1, 1, 1, 1), "NOTSET"), (2, 2, 1, (0, 1, 1, 0), "NOTSET"),
                                                        (4, 1, 2, (2, 2, 2, 2), "NOTSET"), (1, 2, 1, (), "SAME_UPPER")])
def test_conv_rows_reproduce_the_conv(group, stride, dil, pads, auto):
    """Sampled im2col rows times the [G, O, D] weight are the conv's outputs at those places."""
    import onnx_graphsurgeon as gs

    rng = np.random.default_rng(1)
    c, oc = 4, 8
    w = rng.normal(size=(oc, c // group, 3, 3)).astype(np.float32)
    x = rng.normal(size=(2, c, 7, 6)).astype(np.float32)
    attrs = {"group": group, "strides": [stride, stride], "dilations": [dil, dil], "kernel_shape": [3, 3]}
    if pads:
        attrs["pads"] = list(pads)
    if auto != "NOTSET":
        attrs["auto_pad"] = auto
    node = gs.Node("Conv", attrs=attrs)
    view, _ = layer_view(node, w)
    rows = view.rows(x, 10_000, np.random.default_rng(0))  # all positions, in order
    onnx_node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    g = onnx.helper.make_graph([onnx_node], "g", [onnx.helper.make_tensor_value_info("x", 1, list(x.shape))],
                               [onnx.helper.make_tensor_value_info("y", 1, None)],
                               [onnx.numpy_helper.from_array(w, "w")])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 13)])
    m.ir_version = 8
    y = ort_run(m, {"x": x}, optimized=True)[0]
    god = view.to_god(w)  # [G, O/G, D]
    got = np.matmul(rows, god.transpose(0, 2, 1))  # [G, R, O/G]
    want = y.transpose(0, 2, 3, 1).reshape(-1, group, oc // group).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(view.from_god(god), w)


def test_fake_quant_model_matches_qdq_semantics():
    from qcompiler.quant.qparams import fake_quant

    x = onnx.helper.make_tensor_value_info("x", 1, [2, 3])
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    m = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [onnx.helper.make_tensor_value_info("y", 1, None)]),
                               opset_imports=[onnx.helper.make_opsetid("", 13)])
    m.ir_version = 8
    qp = QParams(0.1, 0, None, "int8")
    fq = fake_quant_model(m, {"x": qp}, {})
    v = np.array([[0.04, -0.26, 30.0], [1.0, 0.15, -0.05]], np.float32)
    out = ort_run(fq, {"x": v}, optimized=True)[0]
    np.testing.assert_allclose(out, np.maximum(fake_quant(v, qp), 0))


@pytest.fixture(scope="module")
def net_and_data():
    net = residual_concat_net()
    name = net.graph.input[0].name
    shape = [d.dim_value or 1 for d in net.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    calib = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]
    held = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(6)]
    return net, calib, held


def _run(model, batches):
    s = ort_session(model)
    return np.concatenate([s.run(None, b)[0] for b in batches])


def test_int4_adaround_beats_nearest_on_held_out_data(net_and_data):
    net, calib, held = net_and_data
    ref = _run(net, held)
    base = {"weight_dtype": "int4", "evaluate": False}
    nearest = build(net, target="arm64", pipeline=[p for p in PIPE if p != "adaround"], calib=lambda: iter(calib),
                    options=base)
    ada = build(net, target="arm64", pipeline=PIPE, calib=lambda: iter(calib),
                options=dict(base, adaround=True, adaround_iters=200, adaround_rows=1024))
    s_near, s_ada = sqnr_db(ref, _run(nearest.model, held)), sqnr_db(ref, _run(ada.model, held))
    assert s_ada > s_near + 2.0, (s_near, s_ada)
    rep = ada.report["passes"]["adaround"]
    assert ada.report["adaround"]["layers"] == 12 and ada.report["adaround"]["improved"] >= 8
    assert rep["not_reached"] == [] and rep["inputs"] == "quantized"
    assert all(v["error_adaround"] <= v["error_nearest"] or v["kept"] == "nearest" for v in rep["per_layer"].values())
    # the rounding that place-qdq wrote is the learned one
    by = {k: v["by"] for k, v in ada.ir.ann.notes["weight_codes"].items()}
    assert list(by.values()).count("adaround") == ada.report["adaround"]["improved"]


def test_time_budget_and_switch(net_and_data):
    net, calib, held = net_and_data
    base = {"weight_dtype": "int4", "evaluate": False}
    nearest = build(net, target="arm64", pipeline=[p for p in PIPE if p != "adaround"], calib=lambda: iter(calib),
                    options=base)
    spent = build(net, target="arm64", pipeline=PIPE, calib=lambda: iter(calib),
                  options=dict(base, adaround=True, adaround_seconds=1e-6))
    assert len(spent.report["adaround"]["not_reached"]) == 12
    np.testing.assert_array_equal(_run(spent.model, held), _run(nearest.model, held))
    off = build(net, target="arm64", pipeline=PIPE, calib=lambda: iter(calib), options=dict(base, adaround=False))
    assert "adaround" not in off.report
    np.testing.assert_array_equal(_run(off.model, held), _run(nearest.model, held))
