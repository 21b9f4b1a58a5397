"""QuantScheme, compute_qparams, quantize/dequantize (checked against ONNX Runtime)."""

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper

from qcompiler.quant.qparams import (
    MIN_SCALE,
    QParams,
    compute_qparams,
    dequantize,
    fake_quant,
    quantize,
)
from qcompiler.quant.scheme import DTYPES, QuantScheme


from conftest import ort_session
SETTINGS = settings(deadline=None, max_examples=300)

# ---- schemes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, qmin, qmax, bits",
    [
        (dict(dtype="int8"), -128, 127, 8),
        (dict(dtype="int8", narrow=True), -127, 127, 8),
        (dict(dtype="int8", reduce_range=True), -64, 63, 7),
        (dict(dtype="int8", reduce_range=True, narrow=True), -63, 63, 7),
        (dict(dtype="uint8"), 0, 255, 8),
        (dict(dtype="uint8", narrow=True), 1, 255, 8),
        (dict(dtype="uint8", reduce_range=True), 0, 127, 7),
        (dict(dtype="int16"), -32768, 32767, 16),
        (dict(dtype="int4"), -8, 7, 4),
        (dict(dtype="uint4"), 0, 15, 4),
        (dict(dtype="int32"), -(2**31), 2**31 - 1, 32),
    ],
)
def test_scheme_grid(kw, qmin, qmax, bits):
    s = QuantScheme(**kw)
    assert (s.qmin, s.qmax, s.bits) == (qmin, qmax, bits)
    assert np.iinfo(s.np_dtype).min <= qmin and qmax <= np.iinfo(s.np_dtype).max


def test_scheme_types_and_validation():
    assert QuantScheme("int8").onnx_dtype == TensorProto.INT8
    assert QuantScheme("uint8").onnx_dtype == TensorProto.UINT8
    assert QuantScheme("int16").onnx_dtype == TensorProto.INT16
    assert QuantScheme("int4").onnx_dtype == TensorProto.INT4
    assert QuantScheme("uint4").onnx_dtype == TensorProto.UINT4
    assert QuantScheme("int32").onnx_dtype == TensorProto.INT32
    assert QuantScheme("int4").np_dtype == np.int8
    assert QuantScheme("uint8", symmetric=True).symmetric_zero_point == 128
    assert QuantScheme("uint4", symmetric=True).symmetric_zero_point == 8
    assert QuantScheme("uint8", reduce_range=True).symmetric_zero_point == 64
    with pytest.raises(ValueError, match="int8"):
        QuantScheme("int7")
    with pytest.raises(ValueError):
        QuantScheme("int8", axis="0")
    s = QuantScheme("int8", axis=0)
    with pytest.raises(Exception):
        s.axis = 1  # frozen
    assert s.with_axis(None).axis is None
    assert hash(s) == hash(QuantScheme("int8", True, 0))
    assert "per_channel(axis=0)" in str(s)


# ---- compute_qparams -----------------------------------------------------------------


def test_symmetric_qparams():
    qp = compute_qparams(-2.0, 1.0, QuantScheme("int8"))
    assert qp.scale == np.float32(2.0 / 127) and qp.zero_point == 0
    assert qp.zero_point.dtype == np.int8 and qp.scale.dtype == np.float32
    qp = compute_qparams(0.5, 3.0, QuantScheme("uint8", symmetric=True))
    assert qp.scale == np.float32(3.0 / 127) and qp.zero_point == 128
    qp = compute_qparams(-1.0, 1.0, QuantScheme("int8", reduce_range=True))
    assert qp.scale == np.float32(1.0 / 63)


def test_affine_qparams_include_zero():
    qp = compute_qparams(0.5, 3.0, QuantScheme("uint8", symmetric=False))
    assert qp.zero_point == 0 and qp.scale == np.float32(3.0 / 255)
    qp = compute_qparams(-3.0, -0.5, QuantScheme("uint8", symmetric=False))
    assert qp.zero_point == 255
    qp = compute_qparams(-1.0, 3.0, QuantScheme("uint8", symmetric=False))
    assert qp.zero_point == 64
    qp = compute_qparams(-1.0, 3.0, QuantScheme("int8", symmetric=False))
    assert qp.zero_point == -64
    # zero is exactly representable
    for lo, hi in [(-1.0, 3.0), (-0.3, 0.7), (-5.5, 0.01)]:
        qp = compute_qparams(lo, hi, QuantScheme("uint8", symmetric=False))
        assert fake_quant(np.float32(0), qp) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_range_gets_min_scale(dtype, symmetric):
    s = QuantScheme(dtype, symmetric=symmetric)
    for lo, hi in [(0.0, 0.0), (-0.0, 0.0), (0.0, 1e-30), (-1e-38, 0.0)]:
        qp = compute_qparams(lo, hi, s)
        assert qp.scale == np.float32(MIN_SCALE)
        assert np.isfinite(qp.scale) and qp.scale > 0
        assert fake_quant(np.zeros(3, np.float32), qp).tolist() == [0, 0, 0]


def test_per_channel_qparams():
    s = QuantScheme("int8", axis=0)
    qp = compute_qparams(np.array([-1.0, 0.0, -4.0]), np.array([0.5, 0.0, 2.0]), s)
    assert qp.scale.shape == (3,) and qp.zero_point.shape == (3,) and qp.axis == 0
    np.testing.assert_array_equal(qp.scale, np.float32([1 / 127, MIN_SCALE, 4 / 127]))
    assert qp.num_channels == 3 and qp.per_channel


def test_compute_qparams_errors():
    s = QuantScheme("int8")
    with pytest.raises(ValueError):
        compute_qparams(float("nan"), 1.0, s)
    with pytest.raises(ValueError):
        compute_qparams(0.0, float("inf"), s)
    with pytest.raises(ValueError):
        compute_qparams(2.0, 1.0, s)
    with pytest.raises(ValueError):
        compute_qparams(np.zeros(3), np.ones(3), s)  # per-tensor scheme, per-channel range
    with pytest.raises(ValueError):
        compute_qparams(0.0, 1.0, QuantScheme("int8", axis=0))
    with pytest.raises(ValueError):
        compute_qparams(-1e300, 1e300, s)


def test_qparams_value_semantics():
    a = QParams(np.float32(0.1), np.int8(3), None, "int8")
    b = QParams(np.array([0.1]), 3, None, "int8")
    assert a == b and hash(a) == hash(b)
    assert a != QParams(0.1, 4, None, "int8")
    assert not a.scale.flags.writeable
    with pytest.raises(ValueError):
        QParams(0.0, 0, None, "int8")
    with pytest.raises(ValueError):
        QParams(float("nan"), 0, None, "int8")
    with pytest.raises(ValueError):
        QParams(0.1, 300, None, "uint8")
    with pytest.raises(ValueError):
        QParams(0.1, 8, None, "int4")
    with pytest.raises(ValueError):
        QParams([0.1, 0.2], 0, None, "int8")
    c = QParams([0.1, 0.2], 0, 1, "uint8")
    assert c.zero_point.shape == (2,) and c.zero_point.dtype == np.uint8
    assert "axis=1" in repr(c) and "0.1" in repr(a)


schemes = st.builds(
    QuantScheme,
    dtype=st.sampled_from(["int8", "uint8", "int16", "int4", "uint4"]),
    symmetric=st.booleans(),
    axis=st.none(),
    narrow=st.booleans(),
    reduce_range=st.booleans(),
)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False)


@SETTINGS
@given(schemes, finite, finite, st.integers(0, 2**32 - 1))
def test_fake_quant_error_within_half_step(scheme, a, b, seed):
    lo, hi = min(a, b), max(a, b)
    qp = compute_qparams(lo, hi, scheme)
    assert np.isfinite(qp.scale) and qp.scale >= MIN_SCALE
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    x = np.random.default_rng(seed).uniform(lo0, hi0, 200)
    x = np.concatenate([x, [lo0, hi0, 0.0]]).astype(np.float32)
    q = quantize(x, qp, qmin=scheme.qmin, qmax=scheme.qmax)
    assert q.min() >= scheme.qmin and q.max() <= scheme.qmax
    err = np.abs(dequantize(q, qp).astype(np.float64) - x.astype(np.float64))
    step = float(qp.scale)
    assert np.all(err <= 0.5 * step * (1 + 1e-4) + 1e-6 * np.abs(x) + 1e-30)
    if scheme.symmetric:
        # symmetric grids reach both range ends without leaving the scheme's grid
        q_free = quantize(x, qp)
        np.testing.assert_array_equal(q_free, q)


def test_rounding_modes():
    qp = QParams(0.5, 0, None, "int8")
    x = np.array([0.25, -0.25, 0.75, -0.75, 1.25, -1.25, 0.2, -0.3], np.float32)
    assert quantize(x, qp).tolist() == [0, 0, 2, -2, 2, -2, 0, -1]
    assert quantize(x, qp, "half_away_from_zero").tolist() == [1, -1, 2, -2, 3, -3, 0, -1]
    with pytest.raises(ValueError):
        quantize(x, qp, "up")
    # values just below a tie do not round up through float error
    below = np.nextafter(np.float32(0.25), np.float32(0))
    assert quantize(np.array([below, -below]), qp, "half_away_from_zero").tolist() == [0, 0]


def test_quantize_saturates_and_handles_nonfinite():
    qp = QParams(0.1, 10, None, "uint8")
    x = np.array([-100.0, 100.0, np.inf, -np.inf, np.nan], np.float32)
    assert quantize(x, qp).tolist() == [0, 255, 255, 0, 10]
    qp4 = QParams(1.0, 0, None, "int4")
    assert quantize(np.array([-20, 20, 3.4], np.float32), qp4).tolist() == [-8, 7, 3]
    assert quantize(np.array([-20.0]), qp4, qmin=-7).tolist() == [-7]


def test_int32_quantize_is_precise():
    qp = QParams(1e-4, 0, None, "int32")
    x = np.array([123456.789], np.float64)
    assert quantize(x, qp).tolist() == [round(123456.789 / np.float64(np.float32(1e-4)))]
    assert quantize(x, qp).dtype == np.int32


def test_per_channel_quantize_shape_checks():
    qp = QParams([0.1, 0.2, 0.3], [0, 0, 0], 1, "int8")
    x = np.ones((2, 3, 4), np.float32)
    q = quantize(x, qp)
    assert q.shape == x.shape and q[:, 2].max() == 3
    qn = QParams([0.1, 0.2, 0.3], [0, 0, 0], -2, "int8")
    np.testing.assert_array_equal(quantize(x, qn), q)
    with pytest.raises(ValueError, match="channels"):
        quantize(np.ones((2, 4)), qp)
    with pytest.raises(ValueError, match="axis"):
        quantize(np.ones(3), qp)
    with pytest.raises(ValueError):
        dequantize(np.ones((2, 3)), qp)  # float codes


# ---- agreement with ONNX Runtime -----------------------------------------------------


def _qdq_model(qp: QParams, shape, opset: int, mode: str):
    """QuantizeLinear ("q"), DequantizeLinear ("dq") or Q->DQ ("qdq") with qp."""
    axis_attr = {} if qp.axis is None else {"axis": qp.axis}
    zp_dims = list(qp.zero_point.shape)
    zp_vals = qp.zero_point.astype(np.int64).ravel().tolist()
    inits = [
        helper.make_tensor("scale", TensorProto.FLOAT, list(qp.scale.shape), qp.scale.ravel().tolist()),
        helper.make_tensor("zp", qp.onnx_dtype, zp_dims, zp_vals),
    ]
    nodes = []
    if mode in ("q", "qdq"):
        nodes.append(helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], **axis_attr))
        x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    else:
        x_in = helper.make_tensor_value_info("x", qp.onnx_dtype, list(shape))
    if mode == "dq":
        nodes.append(helper.make_node("DequantizeLinear", ["x", "scale", "zp"], ["y"], **axis_attr))
    if mode == "qdq":
        nodes.append(helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], **axis_attr))
    out_name, out_type = ("q", qp.onnx_dtype) if mode == "q" else ("y", TensorProto.FLOAT)
    out = helper.make_tensor_value_info(out_name, out_type, list(shape))
    graph = helper.make_graph(nodes, "g", [x_in], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    onnx.checker.check_model(model)
    return ort_session(model, optimized=True)


def _test_input(shape, qp, rng):
    """Random values inside and outside the range, plus exact ties."""
    x = rng.normal(0, 1, size=shape).astype(np.float32) * 3
    flat = x.reshape(-1)
    n = flat.size // 4
    # exact ties k + 0.5 steps (power-of-two-free scales still produce near-ties)
    if qp.axis is None:
        flat[:n] = (np.round(flat[:n] / qp.scale) + 0.5) * qp.scale
    return x


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("pow2_scale", [True, False])
def test_per_tensor_matches_onnxruntime(dtype, symmetric, pow2_scale):
    rng = np.random.default_rng(0)
    if pow2_scale:
        qp = QParams(0.0625, 0 if dtype == "int8" else 128, None, dtype)  # exact ties
    else:
        qp = compute_qparams(-3.1, 7.3, QuantScheme(dtype, symmetric=symmetric))
    shape = (4, 8, 16)
    x = _test_input(shape, qp, rng)
    sess_q = _qdq_model(qp, shape, 13, "q")
    want = sess_q.run(None, {"x": x})[0]
    got = quantize(x, qp)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    sess_dq = _qdq_model(qp, shape, 13, "dq")
    np.testing.assert_array_equal(dequantize(got, qp), sess_dq.run(None, {"x": want})[0])
    sess_qdq = _qdq_model(qp, shape, 13, "qdq")
    np.testing.assert_array_equal(fake_quant(x, qp), sess_qdq.run(None, {"x": x})[0])


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("axis", [0, 1, 3])
def test_per_channel_matches_onnxruntime(dtype, axis):
    rng = np.random.default_rng(axis)
    shape = (3, 5, 4, 6)
    x = rng.normal(0, 2, size=shape).astype(np.float32)
    c = shape[axis]
    other = tuple(i for i in range(4) if i != axis)
    lo, hi = x.min(axis=other) * 0.8, x.max(axis=other) * 0.8  # some saturation
    scheme = QuantScheme(dtype, symmetric=(dtype == "int8"), axis=axis)
    qp = compute_qparams(lo, hi, scheme)
    assert qp.scale.shape == (c,)
    want = _qdq_model(qp, shape, 13, "q").run(None, {"x": x})[0]
    got = quantize(x, qp)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        dequantize(got, qp), _qdq_model(qp, shape, 13, "dq").run(None, {"x": want})[0]
    )


@pytest.mark.parametrize("dtype", ["int16", "int4", "uint4"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_wide_and_narrow_types_match_onnxruntime_opset21(dtype, per_channel):
    rng = np.random.default_rng(7)
    shape = (2, 3, 8)
    x = rng.normal(0, 1, size=shape).astype(np.float32)
    scheme = QuantScheme(dtype, symmetric=False, axis=1 if per_channel else None)
    if per_channel:
        qp = compute_qparams(x.min(axis=(0, 2)), x.max(axis=(0, 2)), scheme)
    else:
        qp = compute_qparams(-1.5, 2.0, scheme)
    try:
        sess = _qdq_model(qp, shape, 21, "qdq")
    except Exception as e:  # pragma: no cover - older onnxruntime builds
        pytest.skip(f"onnxruntime cannot run opset-21 {dtype} Q/DQ: {e}")
    np.testing.assert_array_equal(fake_quant(x, qp), sess.run(None, {"x": x})[0])
