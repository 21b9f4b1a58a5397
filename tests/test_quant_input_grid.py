"""A graph input on a lattice (normalised 8-bit pixels) gets a grid that does not coincide with
it; inputs without such a lattice keep their calibrated range."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompiler.quant.input_grid as ig
from qcompiler.driver.build import build
from qcompiler.quant.qparams import compute_qparams, fake_quant
from qcompiler.quant.scheme import QuantScheme


from conftest import ort_session
U8 = QuantScheme("uint8", symmetric=False)
S8 = QuantScheme("int8", symmetric=True)


def _pixels(n=20000, seed=0, mean=0.5, std=0.5):
    k = np.random.default_rng(seed).integers(0, 256, n)
    return ((k / 255.0 - mean) / std).astype(np.float32)


def _mse(v, lo, hi, scheme):
    return float(np.mean((v.astype(np.float64) - fake_quant(v, compute_qparams(lo, hi, scheme))) ** 2))


def test_lattice_input_moves_off_the_grid():
    v = _pixels()
    (lo, hi), steps = ig.widened_range(v, v.min(), v.max(), U8)
    assert steps >= 1 and lo <= v.min() and hi >= v.max()
    # min/max puts every value half a step from a code (error s^2/4); a grid that cuts the
    # lattice elsewhere errs by about s^2/12
    assert _mse(v, lo, hi, U8) < 0.4 * _mse(v, v.min(), v.max(), U8)


@pytest.mark.parametrize("data", ["aligned", "gaussian", "imagenet"])
def test_inputs_without_a_coinciding_lattice_keep_their_range(data):
    rng = np.random.default_rng(1)
    if data == "aligned":  # pixels k/255 on the grid 1/255: exact already
        v = (rng.integers(0, 256, 20000) / 255.0).astype(np.float32)
    elif data == "gaussian":
        v = rng.standard_normal(20000).astype(np.float32)
    else:  # one ImageNet channel: the lattice spacing is not the min/max step
        v = _pixels(mean=0.485, std=0.229)
        v = np.concatenate([v, _pixels(seed=2, mean=0.406, std=0.225)])
    assert ig.widened_range(v, float(v.min()), float(v.max()), U8) == ((min(float(v.min()), 0.0), float(v.max())), 0)


def test_symmetric_scheme_widens_both_sides_and_covers_the_range():
    v = (np.random.default_rng(3).integers(-127, 128, 20000) / 127.0 * 0.999).astype(np.float32)
    (lo, hi), steps = ig.widened_range(v, v.min(), v.max(), S8)
    assert lo <= v.min() and hi >= v.max()
    assert _mse(v, lo, hi, S8) <= _mse(v, v.min(), v.max(), S8)


def test_value_sample_is_bounded_and_finite():
    s = ig.ValueSample(limit=10000)
    for i in range(100):
        x = np.full((1, 3, 64, 64), float(i), np.float32)
        x[0, 0, 0, 0] = np.nan
        s.update(x)
    v = s.values()
    assert v.size <= 10000 and np.isfinite(v).all() and v.max() > 0


def _conv_net():
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _input_scale(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    return float(inits[q.input[1]]), int(inits[q.input[2]])


def test_build_widens_a_lattice_input_and_reports_it(monkeypatch):
    xs = [_pixels(3 * 16 * 16, seed=s).reshape(1, 3, 16, 16) for s in range(8)]
    opts = {"calib_method": "minmax", "evaluate": False}
    r = build(_conv_net(), target="x86", calib=lambda: ({"x": x} for x in xs), options=opts)
    assert r.report["passes"]["calibrate"]["inputs_widened"] == {"x": 1}
    scale, zp = _input_scale(r.model)
    assert scale == pytest.approx(2 / 254, rel=1e-6)
    monkeypatch.setattr(ig, "MIN_GAIN", 0.0)  # never widen
    plain = build(_conv_net(), target="x86", calib=lambda: ({"x": x} for x in xs), options=opts)
    assert "inputs_widened" not in plain.report["passes"]["calibrate"]
    assert _input_scale(plain.model)[0] == pytest.approx(2 / 255, rel=1e-6)

    ref = ort_session(_conv_net(), optimized=True)

    def err(model):
        s = ort_session(model, optimized=True)
        return sum(float(((ref.run(None, {"x": x})[0] - s.run(None, {"x": x})[0]) ** 2).sum()) for x in xs)

    assert err(r.model) < err(plain.model)
