"""Static INT8 builds of a BERT-style sentence encoder (tests/bert_like.py): the attention
mask's -3.4e38 no longer collapses attention, the default x86 build keeps the embeddings
(cosine >= 0.99 against FP32 on held-out padded sentences), and models without attention
build exactly as before (the two transformer passes only annotate, and only attention
graphs)."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from bert_like import bert_like, embedding_agreement, padded_batches  # noqa: E402

from qcompiler.driver.build import build  # noqa: E402
from qcompiler.ir import load_ir  # noqa: E402
from qcompiler.quant.attention_mask import mask_nodes, mask_tensors  # noqa: E402
from qcompiler.target import load_target  # noqa: E402

from conftest import ort_session  # noqa: E402
TRANSFORMER_PASSES = ("attention-mask", "transformer-placement")
CALIB = padded_batches(48, seed=1)
HELD = padded_batches(64, seed=2)


def _embed(model, optimize=True):
    sess = ort_session(model, optimized=optimize)
    return np.concatenate([sess.run(None, b)[0] for b in HELD])


def _build(model, without=()):
    tgt = load_target("x86")
    names = [n for n in tgt.pipeline if n not in without]
    return build(model, target=tgt, pipeline=names, calib=lambda: iter(CALIB), options={"evaluate": False})


def _qdq_scales(model):
    init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: (init[n.input[1]].tolist(), init[n.input[2]].tolist())
            for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("mask", ["add", "where"])
def test_without_the_mask_pass_attention_collapses(mask):
    """The model reproduces the collapse: min/max gives the masked scores a ~1e36 scale."""
    m = bert_like(mask=mask)
    res = _build(m, without=TRANSFORMER_PASSES)
    scales = _qdq_scales(res.model)
    masked = [t for t in scales if "mask_add" in t or "mask_fill" in t]
    assert masked and all(scales[t][0] > 1e30 for t in masked)
    assert embedding_agreement(_embed(m), _embed(res.model))["cosine"] < 0.9


@pytest.mark.parametrize("mask,layernorm", [("add", "op"), ("where", "op"), ("add", "decomposed")])
def test_default_x86_build_keeps_embeddings(mask, layernorm):
    m = bert_like(mask=mask, layernorm=layernorm)
    res = _build(m)
    got = embedding_agreement(_embed(m), _embed(res.model))
    assert got["cosine"] >= 0.99, got
    assert got["nn_agreement"] >= 0.85, got
    # nothing on the mask path is quantized; the MatMuls are
    scales = _qdq_scales(res.model)
    assert not [t for t in scales if "mask" in t or "softmax" in t]
    assert any("attention.self.query" in n.name for n in res.model.graph.node if n.op_type == "DequantizeLinear")
    assert "attention mask" in res.ir.ann.float_reasons["encoder.layer.0.attention.self.softmax"]


def test_onnx_runtime_fuses_the_transformer_build(tmp_path):
    """MatMuls run integer with float outputs; LayerNorm and GELU stay fusable float ops."""
    res = _build(bert_like(layernorm="decomposed"))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(res.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}
    assert "MatMulIntegerToFloat" in ops, ops
    assert ops & {"LayerNormalization", "SkipLayerNormalization"}, ops
    assert ops & {"Gelu", "BiasGelu", "FastGelu"}, ops
    assert not ops & {"QLinearAdd", "QLinearMul", "QLinearSoftmax"}, ops


def test_mask_recognition_add_and_where_forms():
    ir = load_ir(bert_like(mask="add", layers=1))
    huge = mask_tensors(ir)
    assert {"mask_scale.out", "encoder.layer.0.attention.self.mask_add.out"} <= set(huge)
    assert "encoder.layer.0.attention.self.softmax.out" not in huge  # Softmax bounds it again
    assert "mask_invert.out" not in huge  # 0/1 values quantize fine
    reasons = mask_nodes(ir, huge)
    assert "attention mask" in reasons["encoder.layer.0.attention.self.softmax"]
    assert "-3.4e+38" in reasons["mask_scale"]

    ir = load_ir(bert_like(mask="where", layers=1))
    huge = mask_tensors(ir)
    assert set(huge) == {"encoder.layer.0.attention.self.mask_fill.out"}
    assert "encoder.layer.0.attention.self.softmax" in mask_nodes(ir, huge)


def test_mask_recognition_needs_an_index_input():
    """A large constant on float data (a scale, a clip bound) is not mask arithmetic."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    big = onnx.numpy_helper.from_array(np.array(-1e9, np.float32), "big")
    g = helper.make_graph([helper.make_node("Mul", ["x", "big"], ["m"], name="mul"),
                           helper.make_node("Softmax", ["m"], ["y"], name="sm")], "g", [x], [y], [big])
    assert mask_tensors(load_ir(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))) == {}


def _tiny_convnet():
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    calib = [{"input": np.load(os.path.join(root, "calib", f))[None] if np.load(os.path.join(root, "calib", f)).ndim == 3
              else np.load(os.path.join(root, "calib", f))} for f in sorted(os.listdir(os.path.join(root, "calib")))]
    return onnx.load(os.path.join(root, "tiny_convnet.onnx")), calib


def test_cnn_builds_are_unchanged():
    """tiny_convnet and PP-OCR cls: the same Q/DQ parameters with and without the passes."""
    from fixtures import tasks
    from fixtures.real_models import real_model_path

    model, calib = _tiny_convnet()
    name = model.graph.input[0].name
    calib = [{name: next(iter(c.values()))} for c in calib]
    path = real_model_path("ppocr_cls")
    cls_name = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    cls_calib = [{cls_name: x[None]} for x in tasks.text_line_task(8, seed=1)[0]]
    for m, data in ((model, calib), (onnx.load(path), cls_calib)):
        tgt = load_target("x86")
        built = [build(m, target=tgt, pipeline=[n for n in tgt.pipeline if n not in skip], calib=lambda: iter(data),
                       options={"evaluate": False}) for skip in ((), TRANSFORMER_PASSES)]
        assert _qdq_scales(built[0].model) == _qdq_scales(built[1].model)
        assert [n.op_type for n in built[0].model.graph.node] == [n.op_type for n in built[1].model.graph.node]
