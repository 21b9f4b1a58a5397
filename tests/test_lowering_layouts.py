"""Layouts: activation blocking and weight packing round trips, packed shapes, and the
integer conv kernel in every layout against a direct integer convolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcompiler.lowering.interpreter import run_program
from qcompiler.lowering.layouts import (BLOCK, LAYOUTS, from_layout, pack_weight, round_up, to_layout,
                                        unpack_weight, weight_shape)
from qcompiler.lowering.program import Kernel, Program, TensorInfo

KINDS_FOR = {
    "NCHW": ["dense", "depthwise", "group"],
    "NHWC": ["dense", "depthwise", "group"],
    "NCHW44": ["dense", "first", "depthwise", "group"],
    "NCHW44_DOT": ["dense", "first", "depthwise", "group"],
    "NC4HW4": ["dense", "depthwise", "group"],
    "NC32HW32": ["dense", "depthwise", "group"],
}
CASES = [(lay, kind) for lay in LAYOUTS for kind in KINDS_FOR[lay]]


@st.composite
def weights(draw, kind):
    fh = draw(st.integers(1, 3))
    fw = draw(st.integers(1, 3))
    if kind == "depthwise":
        g = draw(st.integers(1, 40))
        shape, groups = (g, 1, fh, fw), g
    elif kind == "group":
        groups = draw(st.integers(2, 4))
        shape, groups = (groups * draw(st.integers(1, 9)), draw(st.integers(1, 9)), fh, fw), groups
    elif kind == "first":
        shape, groups = (draw(st.integers(1, 40)), draw(st.integers(1, 3)), fh, fw), 1
    else:
        shape, groups = (draw(st.integers(1, 40)), draw(st.integers(1, 40)), fh, fw), 1
    seed = draw(st.integers(0, 2 ** 16))
    w = np.random.default_rng(seed).integers(-127, 128, size=shape).astype(np.int8)
    return w, groups


@pytest.mark.parametrize("layout,kind", CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_pack_unpack_round_trip(layout, kind, data):
    w, groups = data.draw(weights(kind))
    packed = pack_weight(w, layout, kind, groups=groups)
    assert packed.shape == weight_shape(w.shape, layout, kind, groups)
    assert packed.dtype == w.dtype
    back = unpack_weight(packed, layout, kind, w.shape, groups=groups)
    np.testing.assert_array_equal(back, w)
    # padding holds zeros only: the packed tensor carries exactly the original values
    assert np.count_nonzero(packed) == np.count_nonzero(w)
    assert int(np.abs(packed.astype(np.int64)).sum()) == int(np.abs(w.astype(np.int64)).sum())


def test_packed_shapes_are_the_documented_ones():
    w = np.zeros((8, 12, 3, 3), np.int8)
    assert pack_weight(w, "NCHW44", "dense").shape == (2, 3, 3, 3, 4, 4)
    assert pack_weight(w, "NCHW44_DOT", "dense").shape == (2, 3, 3, 3, 4, 4)
    assert pack_weight(w, "NC4HW4", "dense").shape == (8, 3, 3, 3, 4)
    assert pack_weight(w, "NC32HW32", "dense").shape == (32, 1, 3, 3, 32)
    assert pack_weight(w, "NHWC", "dense").shape == (8, 3, 3, 12)
    assert pack_weight(np.zeros((6, 3, 3, 3), np.int8), "NCHW44", "first").shape == (2, 3, 3, 3, 4)
    assert pack_weight(np.zeros((6, 1, 3, 3), np.int8), "NCHW44", "depthwise").shape == (2, 1, 1, 3, 3, 4)
    assert pack_weight(np.zeros((16, 8, 3, 3), np.int8), "NCHW44", "group", groups=2).shape == (2, 2, 2, 3, 3, 4, 4)


def test_nchw44_element_order():
    """NCHW44 dense: w[oc, ic, h, w] sits at [oc//4, ic//4, h, w, ic%4, oc%4]; the DOT
    variant swaps the last two axes."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(8, 8, 3, 3)).astype(np.int8)
    p = pack_weight(w, "NCHW44", "dense")
    d = pack_weight(w, "NCHW44_DOT", "dense")
    for oc, ic, h, x in [(5, 2, 1, 0), (7, 7, 2, 2), (0, 4, 0, 1)]:
        assert p[oc // 4, ic // 4, h, x, ic % 4, oc % 4] == w[oc, ic, h, x]
        assert d[oc // 4, ic // 4, h, x, oc % 4, ic % 4] == w[oc, ic, h, x]
    f = pack_weight(w[:, :3], "NCHW44", "first")
    assert f[5 // 4, 1, 2, 2, 5 % 4] == w[5, 2, 1, 2]
    dw = pack_weight(w[:, :1], "NCHW44", "depthwise")
    assert dw[6 // 4, 0, 0, 2, 1, 6 % 4] == w[6, 0, 2, 1]


@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=20, deadline=None)
@given(c=st.integers(1, 70), n=st.integers(1, 2), seed=st.integers(0, 1000))
def test_activation_round_trip(layout, c, n, seed):
    x = np.random.default_rng(seed).integers(-128, 128, size=(n, c, 3, 5)).astype(np.int8)
    y = to_layout(x, layout, pad_value=7)
    k = BLOCK.get(layout, 1)
    if k > 1:
        assert y.shape == (n, round_up(c, k) // k, 3, 5, k)
        pad = y.transpose(0, 1, 4, 2, 3).reshape(n, -1, 3, 5)[:, c:]
        assert np.all(pad == 7)
    np.testing.assert_array_equal(from_layout(y, layout, c), x)


# ----------------------------------------------------------------------------- conv kernel

def _direct_conv(x, w, bias, stride, pad, dil, group, zx):
    """Integer convolution written the slow, obvious way (int64), NCHW / OIHW."""
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, oc, ho, wo), np.int64)
    ocg = oc // group
    for o in range(oc):
        g = o // ocg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * icg:(g + 1) * icg, i * dil: i * dil + stride * (ho - 1) + 1: stride,
                           j * dil: j * dil + stride * (wo - 1) + 1: stride]
                out[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j].astype(np.int64))
    return out + bias.reshape(1, -1, 1, 1)


def _conv_program(w, bias, layout, kind, group, stride, pad, dil, zx, in_layout):
    oc = w.shape[0]
    k = BLOCK.get(layout, 1)
    ocp = round_up(oc, k) if k > 1 else oc
    # identity requant (multiplier 2**30, shift 1 == 1.0) with a wide clamp: outputs = acc
    prog = Program(target="t", rounding="half_away_from_zero", requant="fixed_point")
    consts = {
        "w": pack_weight(w, layout, kind, groups=group),
        "b": np.concatenate([bias, np.zeros(ocp - oc, np.int64)]).astype(np.int32),
        "m": np.full(ocp, 2 ** 30, np.int32),
        "s": np.ones(ocp, np.int32),
    }
    prog.constants = consts
    prog.tensors = {"x": TensorInfo("x", "int8", in_layout), "y": TensorInfo("y", "int32", layout)}
    prog.inputs, prog.outputs = ["x"], ["y"]
    prog.nodes = [Kernel("Conv", "conv", ["x", "w", "b", "m", "s"], ["y"], {
        "kind": kind, "layout": layout, "in_layout": in_layout, "group": group,
        "kernel_shape": list(w.shape[2:]), "strides": [stride, stride], "pads": [pad] * 4,
        "dilations": [dil, dil], "x_zero_point": zx, "y_zero_point": 0,
        "qmin": -(2 ** 31), "qmax": 2 ** 31 - 1, "dtype": "int32"})]
    return prog


CONV_CASES = [
    ("NCHW", "dense"), ("NCHW", "group"), ("NCHW", "depthwise"),
    ("NHWC", "dense"), ("NHWC", "group"), ("NHWC", "depthwise"),
    ("NCHW44", "dense"), ("NCHW44", "first"), ("NCHW44", "depthwise"), ("NCHW44", "group"),
    ("NCHW44_DOT", "dense"), ("NCHW44_DOT", "first"), ("NCHW44_DOT", "group"),
    ("NC4HW4", "dense"), ("NC4HW4", "depthwise"), ("NC4HW4", "group"),
    ("NC32HW32", "dense"),
]


@pytest.mark.parametrize("layout,kind", CONV_CASES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10 ** 6), stride=st.integers(1, 2), pad=st.integers(0, 2), dil=st.integers(1, 2),
       ksize=st.sampled_from([1, 3]), zx=st.sampled_from([0, 5]))
def test_integer_conv_is_exact_in_every_layout(layout, kind, seed, stride, pad, dil, ksize, zx):
    rng = np.random.default_rng(seed)
    k = BLOCK.get(layout, 1)
    if kind == "first":
        ic, oc, group = int(rng.integers(1, 4)), int(rng.integers(1, 10)), 1
    elif kind == "depthwise":
        ic = oc = group = int(rng.integers(1, 11))
    elif kind == "group":
        group = 2
        icg = k * int(rng.integers(1, 3)) if k > 1 else int(rng.integers(1, 4))
        ocg = k * int(rng.integers(1, 3))  # blocked grouped convs need whole blocks per group
        ic, oc = group * icg, group * ocg
    else:
        ic, oc, group = int(rng.integers(1, 40)), int(rng.integers(1, 40)), 1
    x = rng.integers(-128, 128, size=(1, ic, 7, 6)).astype(np.int8)
    w = rng.integers(-127, 128, size=(oc, ic // group, ksize, ksize)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=oc).astype(np.int64)
    want = _direct_conv(x, w, bias, stride, pad, dil, group, zx)
    # the program folds the zero point into the bias, as lowering does
    folded = bias - zx * w.reshape(oc, -1).astype(np.int64).sum(1)
    in_layout = "NCHW" if kind == "first" else layout
    prog = _conv_program(w, folded, layout, kind, group, stride, pad, dil, zx, in_layout)
    xin = to_layout(x, in_layout, pad_value=zx) if in_layout != "NCHW" else x
    y = run_program(prog, {"x": xin}, poison_padding=False)["y"]
    got = from_layout(y, layout, oc) if layout != "NCHW" else y
    np.testing.assert_array_equal(got, want)
