"""unify-concat-scales: inputs and output of Concat (and every op the target marks
`share_scale`) join one scale group, whose parameters cover all members.

With one scale, an integer concat is a copy: no input needs a requantization. The
report counts the requantizations that unification removed: the members whose own
parameters would have differed from the concat output's.
"""

from __future__ import annotations

from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import group_qparams, to_quant_scheme


@register_pass("unify-concat-scales", requires={"calibrated"}, provides={"scales-unified"})
class UnifyConcatScales(Pass):
    """Give Concat inputs and output (and other share_scale ops) one scale group."""

    def run(self, ir, ctx) -> bool:
        target = ctx.target
        ranges = ir.ann.notes.get("ranges", {})
        qp = ir.ann.qparams
        unified, removed = 0, 0
        for node in ir.graph.nodes:
            if not target.shares_scale(node.op) or not node.outputs:
                continue
            members = [t.name for t in node.inputs if t.name in ranges] + [node.outputs[0].name]
            if node.outputs[0].name not in ranges or len(members) < 2:
                continue
            out_qp = qp.get(node.outputs[0].name)
            removed += sum(1 for m in members[:-1] if qp.get(m) != out_qp)
            for m in members[1:]:
                ir.ann.groups.union(members[0], m)
            unified += 1
        if unified:
            act = to_quant_scheme(target.scheme("activation"))
            qp.update(group_qparams(ir, ranges, act))
        ctx.pass_report(self.name).update(ops_unified=unified, requantizations_removed=removed)
        return unified > 0
