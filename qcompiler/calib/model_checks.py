"""Models that cannot be calibrated, refused with one line before any work.

Calibration runs the model in ONNX Runtime on float32 data and places float32
QuantizeLinear nodes: a model without inputs has nothing to calibrate, and a model that
computes in float16/bfloat16 would get Q/DQ nodes ONNX Runtime refuses.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ..errors import CalibrationError, ModelError

_HALF = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
_NUMERIC = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16,
            TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT32, TensorProto.UINT64,
            TensorProto.BOOL}


def check_calibratable(model: onnx.ModelProto, path) -> None:
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in inits]
    if not inputs:
        raise CalibrationError(f"the model '{path}' has no inputs: there is nothing to calibrate",
                               "its outputs are constants; build it without --calib (FP32 pipeline)")
    half = [(vi.name, _HALF[vi.type.tensor_type.elem_type]) for vi in inputs
            if vi.type.tensor_type.elem_type in _HALF]
    half += [(t.name, _HALF[t.data_type]) for t in g.initializer if t.data_type in _HALF]
    if half:
        name, kind = half[0]
        raise ModelError(f"the model '{path}' computes in {kind} ('{name}'); qcompiler quantizes float32 models",
                         "convert the model to float32 first (e.g. onnxconverter-common), or build without "
                         "--target/--calib for the FP32 pipeline")
    for vi in inputs:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"model input '{vi.name}' is not a tensor (a sequence or map)",
                             "calibration feeds tensors; export the model with tensor inputs")
        if not tt.HasField("shape"):
            raise ModelError(f"model input '{vi.name}' has no shape (unknown rank): calibration data cannot be "
                             "checked against it", "give the input a shape in the model (re-export it, or set it "
                             "with onnx.tools.update_model_dims)")
        if len(tt.shape.dim) == 0:
            raise ModelError(f"model input '{vi.name}' is a scalar (rank 0): calibration feeds samples along a "
                             "first axis", f"export the model with a batch axis on '{vi.name}'")
        if tt.elem_type and tt.elem_type not in _NUMERIC:
            kind = TensorProto.DataType.Name(tt.elem_type).lower()
            raise ModelError(f"model input '{vi.name}' has type {kind}, which calibration data cannot hold",
                             "calibrate a model whose inputs are numbers (float32 for images)")
