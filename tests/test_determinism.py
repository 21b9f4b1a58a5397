"""Builds are reproducible: the same inputs and options give byte-identical models, dumps
and reports (apart from timing fields), across processes with different hash seeds
(set and dict iteration order) and within one process (no state leaking between builds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from qcompiler.cli.main import main
from qcompiler.pipeline import known_pass_names
from qcompiler.target import load_target
from fixtures.models import residual_concat_net

TIMING_KEYS = {"seconds"}


def _strip_timings(obj):
    if isinstance(obj, dict):
        return {k: _strip_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timings(v) for v in obj]
    return obj


def _index_txt_without_seconds(text: str) -> list:
    # columns: step, seconds, nodes, changed
    rows = []
    for line in text.splitlines():
        parts = line.split()
        rows.append(parts[:1] + parts[2:])
    return rows


def _missing_passes(target: str) -> list:
    return sorted(set(load_target(target).pipeline) - known_pass_names())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("det_inputs")
    onnx.save(residual_concat_net(channels=8, hw=8, blocks=2), str(d / "model.onnx"))
    np.save(d / "calib.npy", np.random.default_rng(0).random((12, 3, 8, 8)).astype(np.float32))
    return d


def _args(inputs: Path, out: Path, target: str, method: str):
    return ["build", str(inputs / "model.onnx"), "--target", target, "--calib", str(inputs / "calib.npy"),
            "--method", method, "-o", str(out / "model.onnx"), "--report", str(out / "report.json"),
            "--dump-dir", str(out / "dumps"), "-q"]


def _build_subprocess(args, hash_seed: str):
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    # cwd outside the repository: `python -m` puts the cwd first on sys.path
    p = subprocess.run([sys.executable, "-m", "qcompiler", *args], capture_output=True, text=True, env=env,
                       timeout=300, cwd=tempfile.gettempdir())
    assert p.returncode == 0, p.stderr


def _assert_same_build(a: Path, b: Path):
    assert (a / "model.onnx").read_bytes() == (b / "model.onnx").read_bytes(), "model bytes differ"
    ra = json.loads((a / "report.json").read_text())
    rb = json.loads((b / "report.json").read_text())
    assert _strip_timings(ra) == _strip_timings(rb)
    da, db = a / "dumps", b / "dumps"
    names = sorted(p.name for p in da.iterdir())
    assert names == sorted(p.name for p in db.iterdir())
    assert any(n.endswith(".onnx") for n in names) and "index.json" in names
    for name in names:
        if name == "index.json":
            assert _strip_timings(json.loads((da / name).read_text())) == \
                _strip_timings(json.loads((db / name).read_text()))
        elif name == "index.txt":
            assert _index_txt_without_seconds((da / name).read_text()) == \
                _index_txt_without_seconds((db / name).read_text())
        else:
            assert (da / name).read_bytes() == (db / name).read_bytes(), f"dump {name} differs"


@pytest.mark.parametrize("target,method", [("x86", "minmax"), ("arm64", "percentile")])
def test_builds_are_byte_identical(target, method, inputs, tmp_path, capsys):
    missing = _missing_passes(target)
    if missing:
        print(f"{target}: pipeline passes not implemented yet: {missing}")
        pytest.skip(f"{target} pipeline needs {missing}")
    runs = []
    out = tmp_path / "sub"
    out.mkdir()
    # another process with a fixed hash seed: this one has a random seed (unless the environment
    # pins PYTHONHASHSEED), so set and dict-of-str iteration orders differ between the two
    _build_subprocess(_args(inputs, out, target, method), "12345")
    runs.append(out)
    for i in range(2):  # twice in this process: nothing may leak from one build to the next
        out = tmp_path / f"inproc{i}"
        out.mkdir()
        assert main(_args(inputs, out, target, method)) == 0, capsys.readouterr().err
        runs.append(out)
    for other in runs[1:]:
        _assert_same_build(runs[0], other)
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["target"] == target
    assert report["pass_timings"], "the report must keep its timings (they are only ignored here)"
