"""calibrate-data-free: activation ranges and QParams without calibration data.

Ranges come from BatchNorm statistics (kept by record-bn-stats before fold-bn): a layer
that absorbed a BN has outputs about N(beta, gamma^2) per channel, range
beta +- k gamma (k = `bn_sigmas`, default 6), clipped at 0 by a following Relu (or to
the Clip bounds); other tensors get statistics propagated from those and from the graph
inputs (`input_stats`: {"input_name" or "*": {"mean": m, "std": s, "range": [lo, hi]}},
default N(0, 1) with range +-3). See qcompiler.calib.bn_moments for the rules. Weights get
their QParams from their values, as in calibrate.

Provides "calibrated", like calibrate: the passes after it do not know the difference.
"""

from __future__ import annotations

from qcompiler.quant.layers import apply_ranges
from qcompiler.calib.bn_moments import data_free_stats
from qcompiler.errors import PipelineError
from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import require_plan


@register_pass("calibrate-data-free", requires={"observed"}, provides={"calibrated"})
class CalibrateDataFree(Pass):
    """Activation ranges from BatchNorm statistics propagated through the graph (no calibration data)."""

    config = {"bn_sigmas": Option(float, 6.0, "data-free activation range beta +- k gamma, this k"),
              "input_stats": Option(dict, None, '{input or "*": {mean, std, range}} for data-free statistics'),}

    def run(self, ir, ctx) -> bool:
        cfg = self.settings(ctx)
        if ctx.target is None:
            raise PipelineError("pass 'calibrate-data-free' needs a target", "pass --target")
        plan = require_plan(ir, self.name)
        k = cfg.bn_sigmas
        stats, fallback = data_free_stats(ir, k=k, input_stats=cfg.input_stats)
        ranges, missing = {}, []
        for name in plan.tensors:
            s = stats.get(name)
            if s is None:
                missing.append(name)
                continue
            ranges[name] = s.range()
        if missing:
            raise PipelineError(f"pass 'calibrate-data-free' found no statistics for {len(missing)} tensors "
                                f"(first: {missing[0]})", "calibrate with data (--calib) instead")
        apply_ranges(ir, ctx.target, ranges)
        sources = {}
        for name in plan.tensors:
            src = stats[name].source
            sources[src] = sources.get(src, 0) + 1
        rep = ctx.pass_report(self.name)
        rep.update(method="bn-statistics", bn_sigmas=k, tensors=len(ranges), sources=sources,
                   fallback_tensors=sorted(fallback))
        ctx.report["calibration"] = {"method": "data-free (BN statistics)", "seconds": 0.0, "batches": 0}
        return bool(ranges)
