"""Test plugin: pauses the build at a chosen point so that a test can signal it there.

QC_PAUSE_AT=calibration: while ONNX Runtime loads the calibration session from qcompiler's
temporary model folder (every session goes through that folder: SESSION_FILE_BYTES = 0).
QC_PAUSE_AT=write: while the output model is written, after half of its bytes.
The plugin writes QC_PAUSE_MARKER when it pauses.
"""

import os
import time

import onnx
import onnxruntime

import qcompiler.ir.io as qio

AT = os.environ["QC_PAUSE_AT"]
MARKER = os.environ["QC_PAUSE_MARKER"]


def _pause():
    with open(MARKER, "w") as f:
        f.write("paused\n")
    for _ in range(600):
        time.sleep(0.1)


if AT == "calibration":
    qio.SESSION_FILE_BYTES = 0
    _Session = onnxruntime.InferenceSession

    class PausingSession(_Session):
        def __init__(self, path_or_bytes, *args, **kwargs):
            if isinstance(path_or_bytes, str) and "qcompiler-ort-" in path_or_bytes:
                _pause()
            super().__init__(path_or_bytes, *args, **kwargs)

    onnxruntime.InferenceSession = PausingSession

if AT == "write":
    _save = onnx.save_model

    def pausing_save(model, path, *args, **kwargs):
        data = model.SerializeToString()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        _pause()
        return _save(model, path, *args, **kwargs)

    onnx.save_model = pausing_save
