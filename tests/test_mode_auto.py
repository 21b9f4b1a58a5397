"""`--mode auto` on float models: static when its held-out SQNR reaches warn_sqnr, dynamic
when static collapses and dynamic measures better on the same held-out batches; the report
and the CLI say which and why."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qcompiler.driver.build import build


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((64, 64)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((64, 16)) * 0.2).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(spread, n=60, seed=1):
    """Samples whose magnitude spans `spread` decades: one static scale cannot serve them all."""
    rng = np.random.default_rng(seed)
    xs = [(rng.standard_normal((1, 64)) * 10.0 ** rng.uniform(-spread / 2, spread / 2)).astype(np.float32)
          for _ in range(n)]
    return lambda: iter([{"x": x} for x in xs])


def test_static_collapse_picks_dynamic():
    m = _mlp()
    static = build(m, "x86", calib=_inputs(6), options={"mode": "static"})
    auto = build(m, "x86", calib=_inputs(6), options={"mode": "auto"})
    choice = auto.report["mode_auto"]
    assert choice["chosen"] == "dynamic", choice
    assert choice["static"]["sqnr_db"] < 20 < choice["dynamic"]["sqnr_db"], choice
    assert {n.op_type for n in auto.model.graph.node} >= {"DynamicQuantizeLinear"}
    assert "DynamicQuantizeLinear" not in {n.op_type for n in static.model.graph.node}
    # the static figure is the static build's own held-out report
    s = min(o["sqnr_db"] for o in static.report["accuracy"]["outputs"].values())
    assert abs(choice["static"]["sqnr_db"] - s) < 1e-6


def test_static_that_holds_stays_static():
    auto = build(_mlp(), "x86", calib=_inputs(0.3), options={"mode": "auto"})
    choice = auto.report["mode_auto"]
    assert choice["chosen"] == "static" and "dynamic" not in choice, choice
    assert choice["static"]["sqnr_db"] >= 20
    assert "DynamicQuantizeLinear" not in {n.op_type for n in auto.model.graph.node}


def test_cnn_without_matmul_stays_static_and_says_why():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "c",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    xs = [(rng.standard_normal((1, 3, 8, 8)) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32) for _ in range(40)]
    auto = build(m, "x86", calib=lambda: iter([{"x": x} for x in xs]), options={"mode": "auto", "warn_sqnr": 1e9})
    choice = auto.report["mode_auto"]
    assert choice["chosen"] == "static" and "no MatMul/Gemm/LSTM" in choice["why"], choice


def test_cli_prints_the_choice(tmp_path):
    from click.testing import CliRunner

    from qcompiler.cli.main import cli

    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(), path)
    xs = np.concatenate([b["x"] for b in _inputs(6)()])
    np.save(tmp_path / "calib.npy", xs)
    res = CliRunner().invoke(cli, ["build", str(path), "--calib", str(tmp_path / "calib.npy"), "--mode", "auto",
                                   "-o", str(tmp_path / "out.onnx")])
    assert res.exit_code == 0, res.output
    assert "mode auto: dynamic (static collapses" in res.output
    assert (tmp_path / "out.onnx").exists()
