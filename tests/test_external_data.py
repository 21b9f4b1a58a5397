"""Models with external data: read next to the model, never modified, and written with
external data when the output needs it (over 2 GB; forced smaller here by lowering the
threshold, so that every CI run covers the path without a 2 GB file).

The >2 GB case itself is bench/bench_large_model.py (opt-in).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import qcompiler.ir.io as qio
from qcompiler.cli import main
from qcompiler.quant.session import ort_session
from fixtures.models import conv_bn_relu, residual_concat_net, with_external_data

from conftest import ort_run


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _run(args, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _ext_model(model=None, folder="in", name="model.onnx"):
    model = model or conv_bn_relu(cin=3, cout=8, hw=16)
    path = with_external_data(model, folder, name, size_threshold=64)
    assert os.path.getsize(path + ".data") > 0
    return path, model


def _calib(shape=(3, 16, 16), n=4):
    np.save("in/calib.npy", np.random.default_rng(0).random((n, *shape)).astype(np.float32))
    return "in/calib.npy"


def _run_ort(path, feeds):
    return ort_run(path, feeds, optimized=True)


@pytest.mark.parametrize("target", [None, "x86"])
def test_external_data_model_builds(work, capsys, target):
    path, model = _ext_model()
    args = ["build", path, "-o", "out/m.onnx", "-q", "--report", "out/r.json"]
    if target:
        args += ["--target", target, "--calib", _calib()]
    before = _hashes(work / "in")
    rc, err = _run(args, capsys)
    assert rc == 0, err
    assert _hashes(work / "in") == before, "the input model or its external data changed"
    assert _files(work / "out") == ["m.onnx", "r.json"]  # small output: one self-contained file
    x = np.random.default_rng(1).random((1, 3, 16, 16)).astype(np.float32)
    ref = _run_ort(path, {"input": x})[0]
    got = _run_ort("out/m.onnx", {"input": x})[0]
    tol = 1e-4 if target is None else 0.1
    assert np.abs(ref - got).max() <= tol * max(1.0, np.abs(ref).max())


def test_external_data_in_a_subfolder(work, capsys):
    model = conv_bn_relu(cin=3, cout=8, hw=16)
    onnx.save_model(model, "in/model.onnx", save_as_external_data=True, all_tensors_to_one_file=False,
                    location="unused", size_threshold=64)
    # one file per tensor, moved into a weights/ subfolder as some exporters do
    m = onnx.load("in/model.onnx", load_external_data=False)
    os.mkdir("in/weights")
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                os.replace(os.path.join("in", e.value), os.path.join("in/weights", e.value))
                e.value = "weights/" + e.value
    onnx.save_model(m, "in/model.onnx")
    calib = _calib()
    before = _hashes(work / "in")
    rc, err = _run(["build", "in/model.onnx", "--calib", calib, "-o", "out/m.onnx", "-q"], capsys)
    assert rc == 0, err
    assert _hashes(work / "in") == before
    assert _files(work / "out") == ["m.onnx"]


def test_large_output_is_saved_with_external_data(work, capsys, monkeypatch):
    """Over the 2 GB protobuf limit the output goes to OUT + OUT.data (the limit is lowered
    here so that a small model takes that path)."""
    monkeypatch.setattr(qio, "TWO_GB", 1000)
    path, _ = _ext_model(residual_concat_net(channels=16, hw=8, blocks=1))
    rc, err = _run(["build", path, "--calib", _calib((3, 8, 8)), "-o", "out/m.onnx", "-q",
                    "--report", "out/r.json"], capsys)
    assert rc == 0, err
    assert _files(work / "out") == ["m.onnx", "m.onnx.data", "r.json"]
    m = onnx.load("out/m.onnx", load_external_data=False)
    locations = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"m.onnx.data"}, "the output must name its final data file, not a temp file"
    assert os.path.getsize("out/m.onnx") < os.path.getsize("out/m.onnx.data")
    onnx.checker.check_model("out/m.onnx")
    x = np.random.default_rng(1).random((1, 3, 8, 8)).astype(np.float32)
    (y,) = _run_ort("out/m.onnx", {"input": x})
    assert np.isfinite(y).all()
    # a moved pair still loads (the location is relative)
    os.mkdir("moved")
    os.replace("out/m.onnx", "moved/m.onnx")
    os.replace("out/m.onnx.data", "moved/m.onnx.data")
    assert np.array_equal(_run_ort("moved/m.onnx", {"input": x})[0], y)
    report = json.loads(Path("out/r.json").read_text())
    assert report["size"]["after"] < report["size"]["before"]


def test_large_output_write_failure_leaves_nothing(work, capsys, monkeypatch):
    """The external data file is written, then the model write fails: neither the data
    file nor any temporary file stays behind. Only writes into the output folder fail
    (sessions over the limit write temporary models elsewhere)."""
    monkeypatch.setattr(qio, "TWO_GB", 1000)
    path, _ = _ext_model(residual_concat_net(channels=16, hw=8, blocks=1))
    real_save = qio.onnx.save_model
    present = []

    def failing_output_save(model, p, *a, **k):
        if Path(p).resolve().parent == (work / "out").resolve():
            present.append(_files(work / "out"))  # what is written by the time the proto is
            raise OSError(28, "No space left on device")
        return real_save(model, p, *a, **k)

    monkeypatch.setattr(qio.onnx, "save_model", failing_output_save)
    rc, err = _run(["build", path, "--calib", _calib((3, 8, 8)), "-o", "out/m.onnx", "-q"], capsys)
    assert rc == 2, err
    assert len(present) == 1 and any(f.startswith(".m.onnx.data.") and f.endswith(".tmp") for f in present[0]), present
    assert "cannot write output 'out/m.onnx'" in err
    assert _files(work / "out") == []


def test_force_replaces_model_and_data(work, capsys, monkeypatch):
    monkeypatch.setattr(qio, "TWO_GB", 1000)
    Path("out/m.onnx").write_bytes(b"old")
    Path("out/m.onnx.data").write_bytes(b"old data")
    path, _ = _ext_model(residual_concat_net(channels=16, hw=8, blocks=1))
    rc, err = _run(["build", path, "--calib", _calib((3, 8, 8)), "-o", "out/m.onnx", "-q", "--force"], capsys)
    assert rc == 0, err
    assert _files(work / "out") == ["m.onnx", "m.onnx.data"]
    onnx.checker.check_model("out/m.onnx")
    assert Path("out/m.onnx.data").read_bytes() != b"old data"


def test_library_save_keeps_callers_model(tmp_path):
    """save_model with external data must not strip the caller's ModelProto."""
    model = conv_bn_relu(cin=8, cout=16)
    before = model.SerializeToString()
    qio.save_model(model, tmp_path / "m.onnx", external_data=True)
    assert model.SerializeToString() == before
    assert (tmp_path / "m.onnx.data").exists()
    onnx.checker.check_model(str(tmp_path / "m.onnx"))


def test_external_data_asked_but_all_tensors_small(tmp_path):
    """Regression: external_data=True on a model whose tensors are all under the threshold
    wrote no data file, and the rename of the missing file failed."""
    model = conv_bn_relu(cin=3, cout=4, hw=8)
    assert all(len(t.raw_data) <= 1024 for t in model.graph.initializer)
    qio.save_model(model, tmp_path / "m.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    onnx.checker.check_model(str(tmp_path / "m.onnx"))


def test_internal_write_errors_are_not_blamed_on_the_disk(tmp_path, monkeypatch):
    """Only file-system errnos (disk full, read-only, permissions, ...) become user errors;
    an OSError from a bug stays an internal error."""
    def broken(model, path, *a, **k):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(qio.onnx, "save_model", broken)
    with pytest.raises(FileNotFoundError):
        qio.save_model(conv_bn_relu(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_ort_session_over_2gb_keeps_the_model(monkeypatch):
    """ort_session goes through a temporary external data file when the proto is too big to
    serialize (simulated by lowering the limit) and leaves the model as it was."""
    model = residual_concat_net(channels=16, hw=8, blocks=1)
    before = model.SerializeToString()
    x = {"input": np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)}
    ref = ort_session(model).run(None, x)[0]
    monkeypatch.setattr(qio, "TWO_GB", 1000)
    seen = []
    real = ort.InferenceSession

    def spy(source, *a, **k):
        seen.append(source)
        return real(source, *a, **k)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    got = ort_session(model).run(None, x)[0]
    monkeypatch.undo()
    assert len(seen) == 1 and isinstance(seen[0], str), "over the limit, the session must load from a file"
    # weight pre-packing is off on that path, so the kernels may round differently
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert model.SerializeToString() == before


def test_report_size_works_over_2gb(work, capsys, monkeypatch):
    """Regression: the report measured sizes with ModelProto.ByteSize(), which raises
    EncodeError over 2 GB (found by bench/bench_large_model.py). Over the (lowered) limit the
    size is the sum of the tensor data plus the nodes."""
    monkeypatch.setattr(qio, "TWO_GB", 1000)
    model = residual_concat_net(channels=16, hw=8, blocks=1)
    onnx.save(model, "in/model.onnx")
    rc, err = _run(["build", "in/model.onnx", "--calib", _calib((3, 8, 8)), "-o", "out/m.onnx", "-q",
                    "--report", "out/r.json"], capsys)
    assert rc == 0, err
    size = json.loads(Path("out/r.json").read_text())["size"]
    data = sum(len(t.raw_data) for t in model.graph.initializer)
    assert size["before"] == data + sum(n.ByteSize() for n in model.graph.node)
    assert size["after"] < size["before"]
