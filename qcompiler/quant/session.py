"""One ONNX Runtime session whose outputs are the observed tensors, fed batch by batch."""

from __future__ import annotations

from typing import Dict, Iterable, List, Union

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import CalibrationError
from ..ir.graph import IR
from ..ir.io import ort_session


def session_with_outputs(model: Union[onnx.ModelProto, IR], names: List[str]) -> ort.InferenceSession:
    """A session of `model` (a ModelProto or an IR, of any size; neither is modified) whose
    outputs include `names`."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort_session(model, so, outputs=names)
    except Exception as e:
        raise CalibrationError(f"ONNX Runtime cannot run the model for calibration: {str(e).splitlines()[0]}",
                               "check that the model runs in onnxruntime") from None


def observe_session(model: Union[onnx.ModelProto, IR], names: List[str], batches: Iterable[Dict[str, np.ndarray]],
                    observers: Dict[str, object], progress: bool = False) -> int:
    """Feed every batch, update each observer with its tensor; returns the batch count."""
    sess = session_with_outputs(model, names)
    input_names = [i.name for i in sess.get_inputs()]
    count = 0
    iterator = batches
    bar = None
    if progress:
        from tqdm import tqdm

        import sys

        # a bar on a terminal only: in a log, its carriage-return frames stay as fragments
        bar = tqdm(desc="calibrating", unit="batch", leave=False, disable=not sys.stderr.isatty())
    try:
        for batch in iterator:
            feeds = {k: v for k, v in batch.items() if k in input_names}
            try:
                outs = sess.run(names, feeds)
            except Exception as e:
                raise CalibrationError(f"calibration batch {count} failed in ONNX Runtime: {str(e).splitlines()[0]}",
                                       "check the calibration data's shapes and dtypes") from None
            for name, value in zip(names, outs):
                observers[name].update(value)
            count += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if count == 0:
        raise CalibrationError("the calibration data holds no samples", "give at least one sample with --calib")
    return count
