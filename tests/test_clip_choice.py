"""calibrate chooses the mse clip weight per model by the output error of the fake-quantized
float model (qcompiler.quant.clip_choice)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fixtures import models
from qcompiler.driver.build import build
from qcompiler.ir.io import model_to_ir
from qcompiler.quant import clip_choice
from qcompiler.quant.qparams import compute_qparams
from qcompiler.quant.scheme import QuantScheme

U8 = QuantScheme(dtype="uint8", symmetric=False)


def _net():
    """x -> Relu -> Mul(2) -> Softmax: one hidden tensor, an output behind a squash."""
    w = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["m"]),
         helper.make_node("Softmax", ["m"], ["y"], axis=-1)],
        "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _fq(x, lo, hi):
    qp = compute_qparams(lo, hi, U8)
    s, z = float(qp.scale), int(qp.zero_point)
    return ((np.clip(np.rint(x / s) + z, 0, 255) - z) * s).astype(np.float32)


def test_fake_quant_model_quantizes_every_named_tensor_and_leaves_the_ir_alone():
    ir = model_to_ir(_net())
    before = [(n.op, [t.name for t in n.inputs]) for n in ir.graph.nodes]
    model, fetch = clip_choice._fake_quant_model(ir, ["x", "r", "m"], U8, clip_choice.taps(ir))
    assert [(n.op, [t.name for t in n.inputs]) for n in ir.graph.nodes] == before
    assert clip_choice.taps(ir) == ["m"]  # the logits of the Softmax output
    ranges = {"x": (-2.0, 3.0), "r": (0.0, 2.5), "m": (0.0, 4.0)}
    qps = {n: compute_qparams(*r, U8) for n, r in ranges.items()}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-3, 4, (2, 6)).astype(np.float32)
    feeds = {"x": x, "qc_fq_scales": np.array([float(qps[n].scale) for n in ranges], np.float32),
             "qc_fq_zero_points": np.array([int(qps[n].zero_point) for n in ranges], np.uint8)}
    m, y = sess.run([fetch[0], "y"], feeds)
    want_m = _fq(2.0 * _fq(np.maximum(_fq(x, *ranges["x"]), 0), *ranges["r"]), *ranges["m"])
    np.testing.assert_allclose(m, want_m, rtol=0, atol=1e-6)
    e = np.exp(want_m - want_m.max(-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_choose_ranks_a_range_that_clips_the_data_below_one_that_fits_it():
    ir = model_to_ir(_net())
    rng = np.random.default_rng(1)
    batches = [{"x": rng.uniform(-1, 3, (2, 6)).astype(np.float32)} for _ in range(4)]
    ref = {"m": [2.0 * np.maximum(b["x"], 0) for b in batches]}
    fits = {"x": (-1.0, 3.0), "r": (0.0, 3.0), "m": (0.0, 6.0)}
    clips = {"x": (-1.0, 1.0), "r": (0.0, 1.0), "m": (0.0, 2.0)}
    errors = clip_choice.choose(ir, {4.0: clips, 1.0: fits}, U8, batches, ref)
    assert errors[1.0] < 0.01 * errors[4.0]
    assert errors[1.0] > 0  # rounding still costs something


def _cal(n=10, seed=3):
    xs = np.random.default_rng(seed).standard_normal((n, 1, 3, 32, 32)).astype(np.float32)
    return lambda: ({"input": x} for x in xs)


def test_the_build_reports_the_comparison_and_keeps_its_choice():
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    r = build(m, target="x86", calib=_cal(), options={"evaluate": False})
    rep = r.report["passes"]["calibrate"]["mse_clip_weight"]
    assert rep["chosen"] in (1.0, 4.0)
    noise = rep["output_noise_ratio"]
    assert set(noise) == {"4", "1"} and all(v > 0 for v in noise.values())
    assert rep["batches"] == 10  # all of them: fewer than clip_choice.BATCHES
    # the default is kept unless the plain error is clearly better
    assert (rep["chosen"] == 1.0) == (noise["1"] < (1 - clip_choice.MARGIN) * noise["4"])
    fixed = build(m, target="x86", calib=_cal(), options={"evaluate": False, "mse_clip_weight": rep["chosen"]})
    assert "mse_clip_weight" not in fixed.report["passes"]["calibrate"]  # a given weight is not compared
    assert fixed.model.SerializeToString() == r.model.SerializeToString()


def test_a_given_weight_is_used_as_is():
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    one, four = (build(m, target="x86", calib=_cal(), options={"evaluate": False, "mse_clip_weight": w}).model
                 for w in (1.0, 4.0))
    assert one.SerializeToString() != four.SerializeToString()


def test_symmetric_targets_do_not_compare():
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    r = build(m, target="cuda", calib=_cal(4), options={"evaluate": False})
    rep = r.report["passes"]["calibrate"]["mse_clip_weight"]
    assert rep["chosen"] == 1.0 and "zero point" in rep["why_not_compared"]


def test_a_bad_weight_is_a_one_line_error():
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    with pytest.raises(Exception, match="clip_weight must be a finite number >= 1"):
        build(m, target="x86", calib=_cal(2), options={"evaluate": False, "mse_clip_weight": 0.5})


def test_a_huge_graph_keeps_the_default_without_comparing(monkeypatch):
    monkeypatch.setattr(clip_choice, "MAX_NODES", 10)
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    r = build(m, target="x86", calib=_cal(4), options={"evaluate": False})
    rep = r.report["passes"]["calibrate"]["mse_clip_weight"]
    assert rep["chosen"] == 4.0 and "nodes" in rep["why_not_compared"]
