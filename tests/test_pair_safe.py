"""pair_safe weights (the x86-avx2 target): no two weights that an AVX2 u8s8 kernel adds into
one saturating int16 may have codes summing to more than 128, so 255 * 128 always fits.

The pairs are adjacent entries of the reduction as ONNX Runtime's MLAS packs it: Conv over
(FH, FW, IC/group), Gemm/MatMul over K. ONNX Runtime's fused kernels then agree with the
Q/DQ model run as written on any CPU (without VNNI, the `x86` target's full-range pairs
can saturate).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.driver.build import build
from qcompiler.errors import TargetError
from qcompiler.quant.plan import pair_sum_max
from qcompiler.target.loader import load_target


from conftest import ort_session

def _net(ic: int) -> onnx.ModelProto:
    """Conv(ic -> 8, 3x3) -> Relu -> Flatten -> Gemm(transB=1) -> MatMul, with adjacent
    large weights everywhere (the worst case for int16 pair sums)."""
    rng = np.random.default_rng(0)
    w1 = rng.uniform(-0.2, 0.2, (8, ic, 3, 3)).astype(np.float32)
    w1[:, :, 1, 1] = 1.0  # a pair of maxima at one position (even ic) or across positions (odd)
    w1[:, -1, 0, 0] = 1.0
    w2 = rng.uniform(-0.2, 0.2, (16, 8 * 6 * 6)).astype(np.float32)
    w2[:, 0:2] = -1.0
    w3 = rng.uniform(-0.2, 0.2, (16, 10)).astype(np.float32)
    w3[4:6, :] = 1.0
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2"], ["g"], name="gemm", transB=1),
             helper.make_node("MatMul", ["g", "w3"], ["y"], name="matmul")]
    g = helper.make_graph(nodes, "pairs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ic, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _batches(ic, n=6):
    rng = np.random.default_rng(1)
    return [{"x": rng.uniform(0, 1, (1, ic, 8, 8)).astype(np.float32)} for _ in range(n)]


def _weight_codes(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            dq = producer[n.input[1]]
            out[n.name] = (inits[dq.input[0]].astype(np.int64), {a.name: helper.get_attribute_value(a)
                                                                 for a in n.attribute})
    return out


@pytest.mark.parametrize("ic", [3, 4])
def test_x86_avx2_weight_pairs_fit_int16(ic):
    res = build(_net(ic), target="x86-avx2", calib=lambda: iter(_batches(ic)), options={"evaluate": False})
    codes = _weight_codes(res.model)
    assert set(codes) == {"conv", "gemm", "matmul"}
    for name, (q, attrs) in codes.items():
        op = {"conv": "Conv", "gemm": "Gemm", "matmul": "MatMul"}[name]
        assert pair_sum_max(op, attrs, q, None) <= 128, name
        assert np.abs(q).max() >= 64, name  # the range is not simply halved
    # the plain x86 target keeps full-range codes, whose pairs reach 254
    full = _weight_codes(build(_net(ic), target="x86", calib=lambda: iter(_batches(ic)),
                               options={"evaluate": False}).model)
    assert pair_sum_max("Conv", full["conv"][1], full["conv"][0], None) > 128


def test_pairs_follow_the_kernel_reduction_order():
    w = np.zeros((2, 3, 2, 2))
    w[0, 2, 0, 0] = w[0, 0, 0, 1] = 1.0  # ic=2 at position 0 and ic=0 at position 1: adjacent in (FH, FW, IC)
    w[1, 0, 0, 0] = w[1, 0, 0, 1] = 1.0  # ic=0 at positions 0 and 1: not adjacent
    assert list(pair_sum_max("Conv", {}, w, 0)) == [2.0, 1.0]
    dw = np.ones((4, 1, 3, 3))
    assert pair_sum_max("Conv", {"group": 4}, dw, 0) is None  # depthwise: no pairs
    gemm = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # transB=1: {N, K}
    assert list(pair_sum_max("Gemm", {"transB": 1}, gemm, 0)) == [2.0, 1.0]
    assert list(pair_sum_max("MatMul", {}, gemm.T, 1)) == [2.0, 1.0]  # {K, N}, channels on N


def test_fused_kernels_match_the_qdq_model_as_written():
    ic = 3
    res = build(_net(ic), target="x86-avx2", calib=lambda: iter(_batches(ic)), options={"evaluate": False})
    outs = []
    for optimized in (True, False):
        s = ort_session(res.model, optimized)
        outs.append(np.concatenate([s.run(None, b)[0] for b in _batches(ic, 4)]))
    fused, written = outs
    assert np.max(np.abs(fused - written)) <= 0.05 * np.max(np.abs(written))


def test_pair_safe_is_for_weights_only(tmp_path):
    f = tmp_path / "t.qtarget"
    f.write_text('target t extends x86 "x" {\n  activation uint8 asymmetric per_tensor pair_safe\n}\n')
    with pytest.raises(TargetError, match="pair_safe applies to weights only"):
        load_target(str(f))


def test_host_hint_only_without_vnni():
    from qcompiler.target.host import avx2_without_vnni

    assert avx2_without_vnni({"avx2", "fma"})
    assert not avx2_without_vnni({"avx2", "avx512_vnni"})
    assert not avx2_without_vnni({"avx2", "avx_vnni"})
    assert not avx2_without_vnni(set())  # not x86, or no AVX2: MLAS uses other kernels
