"""fold-requant: clean up quantization round trips.

DQ -> Q with equal parameters is an identity on the integers: the Q's consumers read
the DQ's input directly. DQ -> Q with different parameters is one requantization; it is
kept (ONNX has no single requant op) and counted. Integer lowering for a target
(fixed-point multipliers) happens in lower-layout / --emit program; with --emit qop this
pass also lowers DQ -> op -> Q groups to ONNX integer operators (qcompiler.quant.qop).
"""

from __future__ import annotations

import numpy as np

from qcompiler.pipeline.registry import Pass, register_pass


def _params(ir, node):
    vals = [ir.const_value(t) if t.name else None for t in node.inputs[1:3]]
    if vals[0] is None:
        return None
    zp = vals[1] if len(vals) > 1 and vals[1] is not None else np.zeros_like(vals[0], dtype=np.uint8)
    return (np.asarray(vals[0]), np.asarray(zp), node.attrs.get("axis", 1) if np.asarray(vals[0]).size > 1 else None)


def same_params(a, b) -> bool:
    return (a is not None and b is not None and a[2] == b[2] and a[0].shape == b[0].shape
            and np.array_equal(a[0], b[0]) and a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1]))


@register_pass("fold-requant", requires={"qdq-placed"}, provides={"requant-folded"})
class FoldRequant(Pass):
    """Remove DQ->Q pairs with equal parameters; count the requantizations that remain."""

    def run(self, ir, ctx) -> bool:
        removed = requants = 0
        for q in [n for n in ir.graph.nodes if n.op == "QuantizeLinear"]:
            src = q.inputs[0]
            dq = ir.producer(src)
            if dq is None or dq.op != "DequantizeLinear":
                continue
            if same_params(_params(ir, dq), _params(ir, q)) and not ir.is_graph_output(q.outputs[0]):
                ir.replace_uses(q.outputs[0], dq.inputs[0])
                ir.remove_node(q)
                if not src.outputs and not ir.is_graph_output(src):
                    ir.remove_node(dq)
                removed += 1
            else:
                requants += 1
        rep = ctx.pass_report(self.name)
        rep.update(identity_pairs_removed=removed, requantizations=requants)
        if ctx.option("emit") == "qop":
            from qcompiler.quant.qop import lower_to_qop

            rep["qop"] = lower_to_qop(ir)
            return True
        return removed > 0
