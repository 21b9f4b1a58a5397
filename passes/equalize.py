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
from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("equalize", requires={"bn-folded"}, provides={"equalized"})
class Equalize(Pass):
    """Cross-layer equalization of Conv/Gemm pairs through Relu-like ops (FP32 outputs unchanged)."""

    config = {"equalize_iterations": Option(int, 100, "sweeps over all pairs at most"),
              "equalize_tol": Option(float, 1e-4, "stop when no scale moves more than this (log space)"),
              "absorb_bias": Option(bool, None, "high-bias absorption (default: on when data_free)"),
              "absorb_sigmas": Option(float, 3.0, "absorb max(0, beta - k gamma) with this k"),
              "data_free": Option(bool, False, "a data-free build (turns absorb_bias on)")}

    def run(self, ir, ctx) -> bool:
        cfg = self.settings(ctx)
        absorb = cfg.absorb_bias if cfg.absorb_bias is not None else cfg.data_free
        res = equalize(ir, max_iter=cfg.equalize_iterations, tol=cfg.equalize_tol, absorb_bias=absorb,
                       absorb_sigmas=cfg.absorb_sigmas)
        ctx.pass_report(self.name).update(res.to_json())
        ir.ann.notes["equalize"] = res.to_json()
        return bool(res.changed)
