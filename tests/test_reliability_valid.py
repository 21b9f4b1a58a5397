"""Valid inputs that used to fail or misbehave (issue 16), and the output gateway's
successful paths: each builds, and the result is checked against ONNX Runtime or the
equivalent build."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from qcompiler.cli.main import main
from fixtures.models import conv_bn_relu

from conftest import ort_run

@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx.save(conv_bn_relu(cin=3, cout=8, hw=16), "model.onnx")
    np.save("calib.npy", np.random.default_rng(0).random((4, 3, 16, 16)).astype(np.float32))
    return tmp_path


def run(capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _outputs(path, x):
    return ort_run(path, {"x": x}, optimized=True)[0]


def test_opset7_ir3_model_with_initializers_as_inputs(work, capsys):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.random((8, 3, 3, 3)).astype(np.float32), "w1")
    b = numpy_helper.from_array(rng.random(8).astype(np.float32), "b1")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", 1, [1, 3, 16, 16]),
                           helper.make_tensor_value_info("w1", 1, [8, 3, 3, 3]),
                           helper.make_tensor_value_info("b1", 1, [8])],
                          [helper.make_tensor_value_info("y", 1, [1, 8, 16, 16])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 3
    onnx.checker.check_model(m)
    onnx.save(m, "op7.onnx")
    x = np.load("calib.npy")[:1]
    rc, _, err = run(capsys, "build", "op7.onnx", "-o", "fp32.onnx", "-q")
    assert rc == 0, err
    np.testing.assert_allclose(_outputs("fp32.onnx", x), _outputs("op7.onnx", x), rtol=1e-5, atol=1e-5)
    rc, _, err = run(capsys, "build", "op7.onnx", "--calib", "calib.npy", "-o", "int8.onnx", "-q")
    assert rc == 0, err
    ref = _outputs("op7.onnx", x)
    assert np.abs(_outputs("int8.onnx", x) - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("decl,dtype", [("activation int16 symmetric per_tensor", onnx.TensorProto.INT16),
                                        ("weight uint4 asymmetric per_channel(axis=0)", onnx.TensorProto.UINT4)])
def test_custom_target_with_16_or_4_bit_types_raises_the_opset(decl, dtype, work, capsys):
    Path("t.qtarget").write_text(f'target t extends x86 "t" {{\n  {decl}\n}}\n')
    rc, _, err = run(capsys, "build", "model.onnx", "--target", "t.qtarget", "--calib", "calib.npy",
                     "-o", "out.onnx", "-q")
    assert rc == 0, err
    m = onnx.load("out.onnx")
    assert m.opset_import[0].version >= 21
    zps = {i.data_type for i in m.graph.initializer if i.name.endswith(("zero_point", "_quantized"))}
    assert dtype in zps
    x = np.load("calib.npy")[:1]
    y = ort_run("out.onnx", {"input": x}, optimized=True)[0]
    ref = ort_run("model.onnx", {"input": x}, optimized=True)[0]
    assert np.abs(y - ref).max() < 0.2 * np.abs(ref).max()


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_calibration_builds_the_same_model_as_npy(save, work, capsys):
    save("calib.npz", input=np.load("calib.npy"))
    assert run(capsys, "build", "model.onnx", "--calib", "calib.npy", "-o", "a.onnx", "-q")[0] == 0
    assert run(capsys, "build", "model.onnx", "--calib", "calib.npz", "-o", "b.onnx", "-q")[0] == 0
    assert Path("a.onnx").read_bytes() == Path("b.onnx").read_bytes()


def test_unevaluable_huge_constant_is_quick_and_quiet(work, capsys):
    shape = numpy_helper.from_array(np.array([1 << 29, 1 << 29], np.int64), "shape")
    g = helper.make_graph([helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                            value=helper.make_tensor("v", 1, [1], [0.0])),
                           helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
                           helper.make_node("Add", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", 1, [1, 4])], [helper.make_tensor_value_info("y", 1, None)],
                          [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, "huge.onnx")
    import time

    t0 = time.perf_counter()
    rc, out, err = run(capsys, "build", "huge.onnx", "-o", "o.onnx")
    assert rc == 0, err
    assert time.perf_counter() - t0 < 20  # it took 37 s of retries before
    assert "onnxruntime" not in err and "\x1b[" not in err, err
    assert len(err.splitlines()) <= 5, err


def test_outputs_of_every_command_get_the_umask_mode(work, capsys):
    old = os.umask(0o022)
    try:
        assert run(capsys, "build", "model.onnx", "--target", "arm64", "--calib", "calib.npy", "--emit", "program",
                   "-o", "p.qprog", "-q")[0] == 0
        np.save("x.npy", np.load("calib.npy")[:1])
        rc, out, err = run(capsys, "run", "p.qprog", "--input", "x.npy", "-o", "y.npy")
        assert rc == 0, err
        assert "float32[1, 8, 16, 16]" in out  # the result on stdout
        rc, _, err = run(capsys, "mixed-precision", "model.onnx", "--target", "x86", "--calib", "calib.npy",
                         "--min-sqnr", "10", "-o", "ov.json", "--report", "r.json", "-q")
        assert rc == 0, err
    finally:
        os.umask(old)
    for f in ("p.qprog", "y.npy", "ov.json", "r.json"):
        assert os.stat(f).st_mode & 0o777 == 0o644, f
    assert not [p for p in os.listdir(".") if p.startswith(".")]


def test_mixed_precision_force_replaces_both_files(work, capsys):
    Path("ov.json").write_text("old")
    Path("r.json").write_text("old")
    rc, _, err = run(capsys, "mixed-precision", "model.onnx", "--target", "x86", "--calib", "calib.npy",
                     "--min-sqnr", "10", "-o", "ov.json", "--report", "r.json", "--force", "-q")
    assert rc == 0, err
    import json

    assert json.loads(Path("ov.json").read_text())["keep_float"] == []
    assert "keep_float" in json.loads(Path("r.json").read_text())


def test_analyze_without_matplotlib_warns_first_and_writes_the_tables(work, capsys, monkeypatch):
    import qcompiler.analysis.plots as plots

    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    rc, _, err = run(capsys, "analyze", "model.onnx", "--target", "x86", "--calib", "calib.npy", "--out", "a", "-q")
    assert rc == 0, err
    assert err.splitlines()[0].startswith("warning: no plots: matplotlib is not installed"), err
    assert sorted(os.listdir("a")) == ["analysis.json", "analysis.md"]
    rc, _, err = run(capsys, "analyze", "model.onnx", "--target", "x86", "--calib", "calib.npy", "--out", "a",
                     "--force", "-q", "--no-plots")
    assert rc == 0, err


def test_swapped_resize_is_warned_once(work, capsys):
    from PIL import Image

    os.mkdir("imgs")
    for i in range(3):
        Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(f"imgs/{i}.png")  # landscape
    onnx.save(conv_bn_relu(cin=3, cout=8, hw=16), "model.onnx")
    m = onnx.load("model.onnx")
    for d, p in zip(m.graph.input[0].type.tensor_type.shape.dim[2:], "HW"):
        d.ClearField("dim_value")
        d.dim_param = p
    onnx.save(m, "dyn.onnx")
    Path("pre.json").write_text('{"resize": [32, 16]}')  # [w, h] by mistake
    rc, _, err = run(capsys, "build", "dyn.onnx", "--calib", "imgs", "--preprocess", "pre.json", "-o", "o.onnx", "-q")
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if "is [height, width]" in line]
    assert len(warnings) == 1, err
