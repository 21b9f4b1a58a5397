"""What calibration data must look like: the model's graph inputs as (shape, dtype)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import numpy as np
import onnx
from onnx import helper

Dim = Optional[Union[int, str]]


def input_specs(model: onnx.ModelProto) -> Dict[str, Tuple[Tuple[Dim, ...], np.dtype]]:
    """Name -> (shape with None/str for dynamic dims, numpy dtype) for real graph inputs."""
    inits = {i.name for i in model.graph.initializer}
    specs = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue  # old exporters list initializers as inputs
        tt = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else np.dtype(np.float32)
        dims = []
        for d in tt.shape.dim if tt.HasField("shape") else []:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        specs[vi.name] = (tuple(dims), dtype)
    return specs
