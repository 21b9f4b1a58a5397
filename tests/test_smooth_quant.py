"""smooth-quant: per-channel smoothing of attention models' MatMul inputs into the weights.
The float function stays the same, the inputs' outlier channels flatten, the static x86
build of the BERT-style model gets closer to FP32 than without the pass, and models without
attention are untouched."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from bert_like import bert_like, embedding_agreement, padded_batches, random_weights  # noqa: E402

from conftest import ort_session  # noqa: E402
from qcompiler.driver.build import build  # noqa: E402
from qcompiler.errors import QCompilerError  # noqa: E402
from qcompiler.ir import load_ir  # noqa: E402
from qcompiler.quant.smoothing import channel_absmax, smoothable_groups  # noqa: E402
from qcompiler.target import load_target  # noqa: E402

CALIB = padded_batches(32, seed=1)
HELD = padded_batches(48, seed=2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _embed(model):
    sess = ort_session(model)
    return np.concatenate([sess.run(None, b)[0] for b in HELD])


def _float_pipeline(model, alpha=0.75):
    return build(model, pipeline=["canonicalize", "smooth-quant"], calib=lambda: iter(CALIB),
                 options={"evaluate": False, "smooth_alpha": alpha})


def test_smoothing_keeps_the_float_function():
    m = bert_like()
    res = _float_pipeline(m)
    rep = res.report["passes"]["smooth-quant"]
    # per layer: Q/K/V share one input, then the output projection, FFN in and FFN out
    assert rep["smoothed"] == 2 * 4 and rep["matmuls"] == 2 * 6, rep
    assert rep["folded"] == 0, rep  # post-LN: every LayerNorm output also feeds a residual Add
    np.testing.assert_allclose(_embed(res.model), _embed(m), rtol=0, atol=2e-5)


def test_smoothing_flattens_the_outlier_channels():
    """max/median of the per-channel |x| of every smoothed MatMul input drops."""
    m = bert_like()
    before_ir = load_ir(m)
    before = channel_absmax(before_ir, smoothable_groups(before_ir), iter(CALIB))
    after_ir = load_ir(_float_pipeline(m).model)
    groups = smoothable_groups(after_ir)
    after = channel_absmax(after_ir, groups, iter(CALIB))

    def spread(a):
        return float(a.max() / np.median(a))

    # match the groups by their MatMul names (the inputs are renamed where a Mul was inserted)
    by_mm_before = {n.name: spread(before[k]) for k, ns in smoothable_groups(before_ir).items() for n in ns}
    by_mm_after = {n.name: spread(after[k]) for k, ns in groups.items() for n in ns}
    assert by_mm_before.keys() == by_mm_after.keys()
    worse = {k: (by_mm_before[k], by_mm_after[k]) for k in by_mm_before if by_mm_after[k] > by_mm_before[k]}
    assert not worse, worse
    assert max(by_mm_before.values()) > 2 * max(by_mm_after.values())


def test_static_build_is_closer_to_fp32_with_smoothing():
    """Residual-stream outlier channels 8x the others (LayerNorm gains), as trained BERTs have."""
    m = bert_like(weights=random_weights(spike=8.0))
    tgt = load_target("x86")
    assert "smooth-quant" in tgt.pipeline
    ref = _embed(m)
    got = {}
    for label, names in (("with", tgt.pipeline), ("without", [n for n in tgt.pipeline if n != "smooth-quant"])):
        res = build(m, target=tgt, pipeline=names, calib=lambda: iter(CALIB), options={"evaluate": False})
        got[label] = embedding_agreement(ref, _embed(res.model))["cosine"]
    assert 1 - got["with"] < 0.5 * (1 - got["without"]), got


def test_models_without_attention_are_untouched():
    path = os.path.join(ROOT, "examples", "tiny_convnet.onnx")
    x = np.load(os.path.join(ROOT, "examples", "calib", "sample_00.npy"))
    res = build(path, pipeline=["canonicalize", "smooth-quant"], calib=lambda: iter([{"input": x}]),
                options={"evaluate": False})
    assert res.report["passes"]["smooth-quant"]["skipped"] == "no attention block"
    assert not any(n.op == "Mul" for n in res.ir.graph.nodes)


def test_without_calibration_data_the_pass_says_so():
    res = build(bert_like(), pipeline=["canonicalize", "smooth-quant"], options={"evaluate": False})
    assert res.report["passes"]["smooth-quant"]["skipped"] == "no calibration data"


def test_alpha_outside_zero_one_is_a_usage_error():
    with pytest.raises(QCompilerError, match="smooth_alpha must be in"):
        _float_pipeline(bert_like(), alpha=1.5)
