"""ONNX Runtime sessions: one for a model of any size (`ort_session`), and one whose outputs
are the observed tensors, fed batch by batch (calibration)."""

from __future__ import annotations

import gc
import os
import tempfile
from typing import Dict, Iterable, List, Union

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import CalibrationError
from ..ir.graph import IR
from ..ir import io as ir_io  # limits read at call time: tests lower them
from ..ir.io import external_skeleton, ir_data_bytes, ir_skeleton, ir_to_model, model_data_bytes, model_size


def ort_session(source: Union[onnx.ModelProto, IR], options=None, providers=("CPUExecutionProvider",),
                outputs=()):
    """An ONNX Runtime InferenceSession for a ModelProto (or an IR) of any size; neither is
    modified.

    `outputs` (tensor names) are added as graph outputs. A small model goes to ONNX Runtime
    as a serialized proto. With more tensor data than qcompiler.ir.io.SESSION_FILE_BYTES, or
    over 2 GB (where protobuf cannot serialize the proto), or with weights still in their files
    (read_model(lazy=True)), the proto without its large tensors is written to a temporary
    folder and the tensors are streamed into an external data file there (file to file for
    those still in files): ONNX Runtime maps that file instead of parsing a second copy of
    the weights, and no copy is made on the Python side. Weight pre-packing is off for
    models over SESSION_FILE_BYTES: it would keep a packed copy of every weight next to the
    mapped one (the kernels may round differently without it).
    """
    ort.set_default_logger_severity(3)  # errors only: no coloured optimizer warnings among qcompiler's lines

    if isinstance(source, IR):
        data, lazy = ir_data_bytes(source)
        to_file = lazy or data > ir_io.SESSION_FILE_BYTES
        model, layout = ir_skeleton(source) if to_file else (ir_to_model(source), None)
    else:
        data, lazy = model_data_bytes(source)
        to_file = lazy or data > ir_io.SESSION_FILE_BYTES or model_size(source) > ir_io.TWO_GB
        model, layout = external_skeleton(source, "weights.data") if to_file else (source, None)
        if outputs and not to_file:  # outputs are added to a copy, not to the caller's model
            model = onnx.ModelProto()
            model.CopyFrom(source)
    _add_outputs(model, outputs)
    if not to_file:
        return ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    if data > ir_io.SESSION_FILE_BYTES:
        # Weights that passes replaced may sit in reference cycles of dropped graph objects:
        # free them before ONNX Runtime maps the model's weights.
        gc.collect()
        if options is None:
            options = ort.SessionOptions()
        options.add_session_config_entry("session.disable_prepacking", "1")
    with tempfile.TemporaryDirectory(prefix="qcompiler-ort-", ignore_cleanup_errors=True) as d:
        if layout.entries:
            layout.write(os.path.join(d, layout.location))
        path = os.path.join(d, "model.onnx")
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        del model
        return ort.InferenceSession(path, options, providers=list(providers))


def _add_outputs(model: onnx.ModelProto, names) -> None:
    existing = {o.name for o in model.graph.output}
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    for name in names:
        if name not in existing:
            elem = types.get(name) or onnx.TensorProto.FLOAT
            g.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            existing.add(name)


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
