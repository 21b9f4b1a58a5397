"""4-bit values (int4 / uint4) in ONNX: NumPy holds them one per byte (ml_dtypes arrays),
ONNX tensors two per byte. The IR export packs the constants that passes wrote."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

__all__ = ["FOUR_BIT_TYPES", "pack_4bit_constants"]

# ONNX element types stored two values per byte
FOUR_BIT_TYPES = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1")
                  if hasattr(onnx.TensorProto, n)}


def pack_4bit_constants(g: gs.Graph) -> None:
    """int4/uint4 constants whose values were read (ml_dtypes arrays, one byte per value)
    go back to ONNX tensors: gs 0.6 would export their bytes unpacked and fail."""
    for node in g.nodes:
        for t in node.inputs:
            if not isinstance(t, gs.Constant) or isinstance(t._values, gs.ir.tensor.LazyValues):
                continue
            name = getattr(t._values, "dtype", None)
            if name is not None and str(name) in ("int4", "uint4"):
                from onnx import numpy_helper

                t._values = gs.ir.tensor.LazyValues(numpy_helper.from_array(np.asarray(t._values), t.name))
