"""Step 1 of lowering: recognise the integer kernels of a QDQ graph.

state: what each ONNX tensor is by now and the program being written; walk: the graph walk
and the op -> lowering table; conv, elementwise, pooling, movement: one concept's ops
each; float_islands: what stays float and its boundary.
"""

from .state import LoweringState
from .walk import recognise

__all__ = ["LoweringState", "recognise"]
