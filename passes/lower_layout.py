"""lower-layout: plan the target layout of every integer kernel.

The pass recognises the integer kernels of the QDQ graph (DQ -> op -> Q groups), picks a
layout for each conv from the target's layout rules (NCHW44, NCHW44_DOT, NC4HW4,
NC32HW32, NHWC; channels padded to the target's pad_channels where a rule then holds;
otherwise the fallback layout), lets layout-agnostic kernels follow their inputs, and
counts the conversions needed at the edges of each layout region.

It annotates each conv (`ir.ann.layout[node] = "NCHW44 (IC=3: first-layer ...)"`, shown by
the printer and the dumps) and stores the whole plan in `ir.ann.notes["layout_plan"]`. The
graph itself stays valid QDQ ONNX: the lowered program is a separate export
(`qcompiler.lowering.lower.lower_to_program(ir, target)`, `--emit program`), which follows
this plan.

Planning never fails a QDQ build: ops the program interpreter cannot run (LSTM, Loop, ...)
are recorded under `no_program_kernel` (ONNX Runtime runs them in the QDQ model), and a
plan that cannot be made at all is recorded with its reason and leaves every kernel in
NCHW; only `--emit program` refuses such models.
"""

from __future__ import annotations

from qcompiler.pipeline.options import EMIT_OPTION
from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("lower-layout", requires={"qdq-placed"}, provides={"lowered"})
class LowerLayout(Pass):
    """Plan target layouts for the integer kernels (a reason per conv); the program export follows it."""

    config = {"emit": EMIT_OPTION}

    def run(self, ir, ctx) -> bool:
        from qcompiler.errors import QCompilerError
        from qcompiler.lowering.lower import plan_layouts

        try:
            plan = plan_layouts(ir, ctx.target)
        except QCompilerError as e:
            ir.ann.notes.pop("layout_plan", None)
            ctx.pass_report(self.name).update(planned=False, reason=str(e))
            if self.settings(ctx).emit != "qop":  # a QOperator graph has no layouts to plan
                ctx.log.warning("lower-layout: no layout plan (%s); the QDQ model is unaffected, "
                                "--emit program would refuse this model", e)
            return False
        before = dict(ir.ann.layout)
        for d in plan.convs:
            ir.ann.layout[d.node] = f"{d.layout} ({d.reason})"
        data = plan.to_json()
        ir.ann.notes["layout_plan"] = data
        padded = sum(1 for d in plan.convs if (d.ic_padded, d.oc_padded) != (d.ic, d.oc))
        ctx.pass_report(self.name).update(
            convs=len(plan.convs), conv_layouts=data["conv_layouts"], padded_convs=padded,
            layout_conversions=data["num_conversions"], no_program_kernel=data["no_program_kernel"],
            decisions={d.node: f"{d.layout} ({d.reason})" for d in plan.convs})
        return ir.ann.layout != before
