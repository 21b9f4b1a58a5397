"""The qcompiler IR: an onnx-graphsurgeon graph, quantization annotations, one mutation
gateway, a verifier, a printer and ONNX import/export."""

from .annotations import Annotations, FusedRegion, UnionFind
from .graph import IR
from .io import ir_to_model, load_ir, model_to_ir, read_model, save_model
from .printer import format_ir, node_lines

__all__ = [
    "IR", "Annotations", "FusedRegion", "UnionFind", "load_ir", "model_to_ir", "ir_to_model",
    "read_model", "save_model", "format_ir", "node_lines",
]
