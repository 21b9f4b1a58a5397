"""Signals at calibration and in the middle of writing the output.

A real `qcompiler build` process is paused at the chosen point by a test plugin
(tests/data/signals/pause_plugin.py), then signalled. After SIGINT and SIGTERM: exit
130 / 143, one error line, no temporary file anywhere (output folder, system temp folder),
the previous output untouched. After SIGKILL: the previous output is intact.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from fixtures.models import conv_bn_relu

PLUGIN = Path(__file__).resolve().parent / "data" / "signals" / "pause_plugin.py"
OLD = b"the previous output model"


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("at", ["calibration", "write"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_signal_leaves_no_temporary_file_and_keeps_the_old_output(at, sig, tmp_path):
    for d in ("in", "out", "tmp"):
        (tmp_path / d).mkdir()
    onnx.save(conv_bn_relu(cin=3, cout=8, hw=16), str(tmp_path / "in" / "model.onnx"))
    np.save(tmp_path / "in" / "calib.npy", np.random.default_rng(0).random((4, 3, 16, 16)).astype(np.float32))
    (tmp_path / "out" / "m.onnx").write_bytes(OLD)
    inputs = _tree(tmp_path / "in")
    marker = tmp_path / "paused"
    env = dict(os.environ, QC_PAUSE_AT=at, QC_PAUSE_MARKER=str(marker), TMPDIR=str(tmp_path / "tmp"))
    proc = subprocess.Popen([sys.executable, "-m", "qcompiler", "build", "in/model.onnx", "--target", "x86",
                             "--calib", "in/calib.npy", "--plugin", str(PLUGIN), "--report", "out/r.json",
                             "-o", "out/m.onnx", "--force", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the build never reached the pause point"
            time.sleep(0.05)
        if at == "calibration":  # ONNX Runtime's temporary model folder exists now
            assert any(p.name.startswith("qcompiler-ort-") for p in (tmp_path / "tmp").iterdir())
        else:  # half of the new model is in a temporary file beside the output
            assert any(p.name.startswith(".m.onnx.") for p in (tmp_path / "out").iterdir())
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (tmp_path / "out" / "m.onnx").read_bytes() == OLD, "the previous output was damaged"
    assert _tree(tmp_path / "in") == inputs
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == (130 if sig == "SIGINT" else 128 + signal.SIGTERM), err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: interrupted" if sig == "SIGINT" else "error: terminated"], err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.onnx"], "a temporary file or report was left"
    # lark's grammar cache and ONNX Runtime's session-id file are kept caches, written by a
    # successful run too; anything else is a leftover
    left = [p.name for p in (tmp_path / "tmp").iterdir() if not (p.name.startswith(".lark_cache_") or p.name == ".ses")]
    assert left == [], "a temporary file or folder was left in the system temp folder"
