"""calibrate: stream calibration batches through one ONNX Runtime session and turn the
observed ranges into quantization parameters.

The session's outputs are exactly the observed tensors; each batch goes into the
observers and is dropped, so memory stays flat in the number of samples. Weights get
per-channel (or per-tensor) parameters from their values, as the target says.
"""

from __future__ import annotations

import time


from qcompiler.build import require_calibration
from qcompiler.errors import CalibrationError
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.observers import make_observer
from qcompiler.quant.plan import Plan, group_qparams, to_quant_scheme, weight_qparams
from qcompiler.quant.session import observe_session


@register_pass("calibrate", requires={"observed"}, provides={"calibrated"})
class Calibrate(Pass):
    """Run calibration data through ONNX Runtime and compute scales and zero points."""

    def run(self, ir, ctx) -> bool:
        plan = Plan.from_json(ir.ann.notes["quant_plan"])
        rep = ctx.pass_report(self.name)
        method = ctx.option("calib_method", "minmax")
        opts = {"percentile": ctx.option("percentile", 99.99)} if method == "percentile" else {}
        act = to_quant_scheme(ctx.target.scheme("activation"))
        t0 = time.perf_counter()
        ranges = {}
        if plan.tensors:
            observers = {name: make_observer(method, **opts) for name in plan.tensors}
            source = require_calibration(ctx, self.name)
            batches = observe_session(ir, plan.tensors, source(), observers,
                                      progress=ctx.option("progress", False))
            for name, obs in observers.items():
                stats = obs.stats
                if stats.count == 0:
                    raise CalibrationError(f"tensor '{name}' saw no finite values during calibration",
                                           "check the calibration data for NaN/Inf")
                if stats.nan_count or stats.inf_count:
                    ctx.log.warning("tensor '%s' had %d NaN and %d Inf values during calibration; they were ignored",
                                    name, stats.nan_count, stats.inf_count)
                lo, hi = obs.range(act)
                if not hi > lo:
                    ctx.log.warning("tensor '%s' is constant (%g) on the calibration data; a minimal safe scale is used",
                                    name, lo)
                ranges[name] = (float(lo), float(hi))
            rep["batches"] = batches
        ir.ann.notes["ranges"] = ranges
        ir.ann.qparams.update(group_qparams(ir, ranges, act))
        n_w = weight_qparams(ir, ctx.target, plan)
        rep.update(method=method, tensors=len(ranges), weights=n_w, seconds=round(time.perf_counter() - t0, 4))
        ctx.report["calibration"] = {"method": method, "seconds": rep["seconds"], "batches": rep.get("batches", 0)}
        return bool(ranges) or n_w > 0
