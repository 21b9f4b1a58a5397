"""precision-overrides: 16-bit activations for the layers a per-layer override asks it for.

Reads the `int16_layers` option (node names; qcompiler.precision.overrides decides them,
only where the target declares an int16 activation scheme). The kernels that contain
those nodes get int16 symmetric QParams on their activation inputs and output, from the
calibrated ranges; scale groups move together. Needs opset >= 21 (int16 QuantizeLinear):
the override loader sets min_opset 21. Runs after calibration, before place-qdq.
"""

from __future__ import annotations

from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import require_plan
from qcompiler.quant.qparams import compute_qparams
from qcompiler.quant.scheme import QuantScheme


@register_pass("precision-overrides", requires={"calibrated"}, provides={"precision-overridden"})
class PrecisionOverrides(Pass):
    """Give the activations of override-selected layers int16 quantization parameters."""

    config = {"int16_layers": Option(list, (), "node names whose kernels get int16 activations (--overrides)")}

    def run(self, ir, ctx) -> bool:
        names = set(self.settings(ctx).int16_layers)
        if not names:
            return False
        plan = require_plan(ir, self.name)
        ranges = ir.ann.notes.get("ranges", {})
        scheme = QuantScheme("int16", symmetric=True)
        tensors = set()
        for k in plan.kernels:
            if names & set(k.nodes):
                tensors.update(t for t in list(k.inputs) + [k.output] if t in ranges)
        members = set()
        for t in tensors:
            group = [m for m in ir.ann.groups.members(t) if m in ranges] or [t]
            lo = min(ranges[m][0] for m in group)
            hi = max(ranges[m][1] for m in group)
            qp = compute_qparams(lo, hi, scheme)
            for m in group:
                ir.ann.qspec[m] = scheme
                ir.ann.qparams[m] = qp
                members.add(m)
        ctx.pass_report(self.name).update(int16_tensors=sorted(members))
        return bool(members)
