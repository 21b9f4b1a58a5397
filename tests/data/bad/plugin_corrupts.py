"""A pass that corrupts the graph behind the IR's back: the verifier must catch it."""

import numpy as np
import onnx_graphsurgeon as gs

from qcompiler.pipeline import Pass, register_pass


@register_pass("corpus-corrupts")
class Corrupts(Pass):
    """Makes the last node read a tensor that no node produces."""

    def run(self, ir, ctx) -> bool:
        node = ir.graph.nodes[-1]
        node.inputs[0] = gs.Variable("ghost_tensor", dtype=np.float32)
        return True
