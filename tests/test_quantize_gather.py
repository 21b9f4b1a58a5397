"""quantize-gather: large constant Gather tables are stored as int8 with a scale per row,
and the rows read come back within half a step of the float table; small tables are left
alone."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))

from bert_like import bert_like, padded_batches  # noqa: E402

from conftest import ort_session  # noqa: E402
from qcompiler.driver.build import build  # noqa: E402


def _lookup_model(vocab=3000, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal((vocab, dim)) * rng.uniform(0.01, 2.0, (vocab, 1))).astype(np.float32)
    small = rng.standard_normal((2, dim)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="word_gather"),
         helper.make_node("Gather", ["small", "types"], ["trows"], name="type_gather"),
         helper.make_node("Add", ["rows", "trows"], ["y"])],
        "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5]),
                   helper.make_tensor_value_info("types", TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, dim])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(small, "small")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), table, small


def test_rows_come_back_within_half_a_step():
    m, table, small = _lookup_model()
    res = build(m, pipeline=["canonicalize", "quantize-gather"], options={"evaluate": False})
    assert res.report["passes"]["quantize-gather"]["tables"] == ["word_gather"]
    inits = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
    assert not any(v.shape == table.shape and v.dtype == np.float32 for v in inits.values())
    assert any(v.shape == table.shape and v.dtype == np.int8 for v in inits.values())
    assert any(v.shape == small.shape and v.dtype == np.float32 for v in inits.values())  # 128 values: kept
    ids = np.array([[0, 5, 17, 2999, 42], [7, 7, 100, 1, 2500]], dtype=np.int64)
    types = np.zeros_like(ids)
    got = ort_session(res.model).run(None, {"ids": ids, "types": types})[0] - small[0]
    want = table[ids]
    step = np.abs(table[ids]).max(axis=-1, keepdims=True) / 127.0  # per row
    assert np.all(np.abs(got - want) <= 0.5 * step + 1e-6)
    assert np.abs(got - want).max() > 0  # it did quantize


def test_model_file_shrinks_on_the_bert_like_encoder():
    from qcompiler.target import load_target

    m = bert_like(vocab=4000)
    calib = padded_batches(16, seed=1, vocab=4000)
    tgt = load_target("x86")
    assert "quantize-gather" in tgt.pipeline
    with_q = build(m, target=tgt, calib=lambda: iter(calib), options={"evaluate": False})
    names = [p for p in tgt.pipeline if p != "quantize-gather"]
    without = build(m, target=tgt, pipeline=names, calib=lambda: iter(calib), options={"evaluate": False})
    word = 4000 * 128 * 4  # the word table's float32 bytes
    assert without.model.ByteSize() - with_q.model.ByteSize() > 0.7 * word


def test_small_tables_are_left_alone():
    m, _, _ = _lookup_model(vocab=100)  # 6400 values < 65536
    res = build(m, pipeline=["canonicalize", "quantize-gather"], options={"evaluate": False})
    assert res.report["passes"]["quantize-gather"]["tables"] == []
    res = build(_lookup_model()[0], pipeline=["canonicalize", "quantize-gather"],
                options={"evaluate": False, "gather_min_elements": 10 ** 9})
    assert res.report["passes"]["quantize-gather"]["tables"] == []
