"""An independent copy of an IR, for tools that build many variants of one model."""

from __future__ import annotations

def clone_ir(ir):
    """An independent copy of an IR (graph nodes and tensors copied, constant arrays shared
    - passes never edit them in place - and annotations deep-copied). copy.deepcopy does
    not work on onnx-graphsurgeon graphs."""
    import copy

    from .graph import IR

    new = IR(ir.graph.copy(), copy.deepcopy(ir.model_meta))
    new.ann = copy.deepcopy(ir.ann)
    return new
