"""smooth-quant: move activation outliers of attention models into the MatMul weights.

Only when the graph has attention (a Softmax over the product of two activations), and
only with calibration data: measures each MatMul input's per-channel max |x| on the
calibration batches, then scales the weight rows by s and the input by 1/s
(qcompiler.quant.smoothing says how s is chosen and where 1/s goes). The float function is
unchanged; what changes is what one per-tensor 8-bit activation scale has to cover.
Runs before transformer-placement, so an inserted Mul is an elementwise op that stays float.
A model without attention (every CNN) is left exactly as it was.
"""

from __future__ import annotations

from qcompiler.pipeline.options import PROGRESS_OPTION, Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.smoothing import apply_smoothing, channel_absmax, smoothable_groups, smoothing_scales
from qcompiler.quant.transformer import attention_softmaxes


@register_pass("smooth-quant", requires={"canonical"}, provides={"smoothed"})
class SmoothQuant(Pass):
    """Per-channel smoothing of attention models' MatMul inputs into their weights."""

    config = {"smooth_alpha": Option(float, 0.85, "share of the activation outliers moved into the weights (0..1)"),
              "progress": PROGRESS_OPTION}

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        cfg = self.settings(ctx)
        alpha = cfg.smooth_alpha
        if not 0.0 <= alpha <= 1.0:
            from qcompiler.errors import UsageError

            raise UsageError(f"smooth_alpha must be in [0, 1], got {alpha}", "use e.g. smooth_alpha=0.85")
        if not attention_softmaxes(ir):
            rep["skipped"] = "no attention block"
            return False
        if ctx.calib is None:
            rep["skipped"] = "no calibration data"
            return False
        groups = smoothable_groups(ir)
        if not groups:
            rep["skipped"] = "no MatMul with a constant weight"
            return False
        scales = smoothing_scales(ir, groups, channel_absmax(ir, groups, ctx.calib(), progress=cfg.progress), alpha)
        how = apply_smoothing(ir, groups, scales)
        rep.update(alpha=alpha, smoothed=len(how), matmuls=sum(len(groups[k]) for k in how),
                   folded=sum(1 for v in how.values() if v.startswith("folded")))
        return bool(how)
