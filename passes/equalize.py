"""equalize: cross-layer equalization (and high-bias absorption) on the FP32 graph.

Rescales the output channels of a weighted layer and the matching input channels of the
next one(s) so that both have equal per-channel weight ranges (Nagel et al. 2019); the
FP32 outputs do not change. See qcompiler.rounding.equalization for the derivation and
for what is skipped (Clip/ReLU6, channels read by non-weighted ops, graph outputs).

Options (build options):
    equalize_iterations  sweeps over all pairs at most (default 100)
    equalize_tol         stop when no scale moves by more than this, in log space (1e-4)
    absorb_bias          high-bias absorption through Relu where BN statistics were kept
                         by record-bn-stats (default: on when `data_free`, else off)
    absorb_sigmas        absorb max(0, beta - k gamma) with this k (default 3)
"""

from __future__ import annotations

from qcompiler.rounding.equalization import equalize
from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("equalize", requires={"bn-folded"}, provides={"equalized"})
class Equalize(Pass):
    """Cross-layer equalization of Conv/Gemm pairs through Relu-like ops (FP32 outputs unchanged)."""

    def run(self, ir, ctx) -> bool:
        opt = lambda k, d: self.options.get(k, ctx.option(k, d))  # noqa: E731
        res = equalize(ir, max_iter=int(opt("equalize_iterations", 100)), tol=float(opt("equalize_tol", 1e-4)),
                       absorb_bias=bool(opt("absorb_bias", bool(ctx.option("data_free", False)))),
                       absorb_sigmas=float(opt("absorb_sigmas", 3.0)))
        ctx.pass_report(self.name).update(res.to_json())
        ir.ann.notes["equalize"] = res.to_json()
        return bool(res.changed)
