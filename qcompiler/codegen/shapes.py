"""Concrete shapes for code generation: a generated library is compiled for one input shape.

The program's tensor table may leave dims open (a dynamic batch, a text line's width). The
generator fixes them (batch 1 unless told otherwise, other open dims from the caller), runs
the reference interpreter once on zeros of those shapes, and takes every tensor's physical
shape from that run. Tensors that depend only on shapes and constants (Shape -> Slice ->
Concat chains feeding a Reshape) are folded to the values of that run.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Set

import numpy as np

from ..errors import UsageError
from ..lowering.interpreter import run_program
from ..lowering.program import Program

# ops whose result depends only on their inputs' shapes
_SHAPE_ONLY = frozenset({"Shape", "Size"})


def resolve_input_shapes(prog: Program, given: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, tuple]:
    """Every program input's concrete logical shape: `given` first, then the tensor table
    (an open batch becomes 1). An input with other open dims needs `given`."""
    given = dict(given or {})
    out = {}
    for name in prog.inputs:
        table = prog.tensors[name].shape
        if name in given:
            shape = tuple(int(d) for d in given[name])
            if table is not None and (len(shape) != len(table) or any(
                    t is not None and t >= 0 and t != s for t, s in zip(table, shape))):
                raise UsageError(f"input shape {list(shape)} does not fit program input '{name}' {table}",
                                 "give a shape that matches the model's fixed dims")
            out[name] = shape
            continue
        if table is None:
            raise UsageError(f"program input '{name}' has no recorded shape", "give the input shape")
        dims = [1 if i == 0 and (d is None or d < 0) else d for i, d in enumerate(table)]
        if any(d is None or d < 0 for d in dims):
            raise UsageError(f"program input '{name}' has open dims {table}: a C library is generated for one shape",
                             "give the input shape (build with --calib: the calibration data's shape is used)")
        out[name] = tuple(int(d) for d in dims)
    return out


def trace(prog: Program, shapes: Mapping[str, tuple]) -> Dict[str, np.ndarray]:
    """Every tensor the program produces, from one interpreter run on zeros."""
    feeds = {n: np.zeros(shapes[n], dtype=np.dtype(prog.tensors[n].dtype)) for n in prog.inputs}
    values: Dict[str, np.ndarray] = dict(feeds)

    def observe(name, value):
        values[name] = np.asarray(value)

    run_program(prog, feeds, observe=observe)
    return values


def static_tensors(prog: Program) -> Set[str]:
    """Constants, and standard-op results computed from constants and shapes only."""
    static = set(prog.constants)
    for node in prog.nodes:
        if node.is_kernel:
            continue
        ins = [i for i in node.inputs if i]
        if node.op in _SHAPE_ONLY or all(i in static for i in ins):
            static.update(o for o in node.outputs if o)
    return static


def open_dims_from(prog: Program, sample: Optional[Mapping[str, np.ndarray]]) -> Dict[str, tuple]:
    """Input shapes for the dims the program leaves open, taken from one batch of data
    (the build's calibration data); the batch dim becomes 1. Fixed dims stay as recorded."""
    shapes = {}
    for name in prog.inputs:
        table = prog.tensors[name].shape
        if sample is None or name not in sample or table is None:
            continue
        data = tuple(np.shape(sample[name]))
        if len(data) != len(table):
            continue
        shapes[name] = tuple((1 if i == 0 else data[i]) if d is None or d < 0 else d for i, d in enumerate(table))
    return shapes
