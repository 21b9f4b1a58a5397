"""bias-correction: remove the expected output shift that weight quantization causes.

For every Conv/Gemm kernel: b <- b - (W_q - W) E[x] (Nagel et al. 2019, section 4.2),
with W_q the weights as place-qdq will quantize them (the calibrated weight QParams).
E[x] is measured on the calibration batches (the float model's mean input map; when
calibrate runs earlier in the pipeline it measures them in its own run), or,
with the `data_free` option or without calibration data, taken from the BatchNorm
statistics propagated to each layer's input (qcompiler.calib.bn_moments).

Runs after calibrate (or calibrate-data-free) and before place-qdq.
Options: data_free, bias_correction_batches (at most this many batches, default all),
bn_sigmas / input_stats (data-free, as calibrate-data-free).
"""

from __future__ import annotations

import itertools

from qcompiler.rounding.bias_correction import correct_biases, measure_input_means, weighted_inputs
from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import require_plan


@register_pass("bias-correction", requires={"calibrated"}, provides={"bias-corrected"}, wants={"input-means"})
class BiasCorrection(Pass):
    """Subtract the expected output error of quantized weights, (W_q - W) E[x], from Conv/Gemm biases."""

    config = {"data_free": Option(bool, False, "E[x] from BatchNorm statistics instead of data"),
              "bias_correction_batches": Option(int, None, "measure E[x] on at most this many batches (default all)"),
              "bn_sigmas": Option(float, 6.0, "data-free activation range beta +- k gamma, this k"),
              "input_stats": Option(dict, None, '{input or "*": {mean, std, range}} for data-free statistics'),}

    def run(self, ir, ctx) -> bool:
        cfg = self.settings(ctx)
        plan = require_plan(ir, self.name)
        inputs = weighted_inputs(ir, plan)
        data_free = cfg.data_free or ctx.calib is None
        limit = cfg.bias_correction_batches
        measured = ir.ann.notes.pop("input_means", None)  # calibrate's by-product, same batches
        if data_free:
            from qcompiler.calib.bn_moments import data_free_stats

            stats, _ = data_free_stats(ir, k=cfg.bn_sigmas, input_stats=cfg.input_stats)
            expected = {n: stats[n].mean for n in inputs if n in stats}
            source = "bn-statistics"
        elif measured is not None and not limit:
            expected = measured
            source = "calibration"
        else:
            batches = ctx.calib()
            if limit:
                batches = itertools.islice(batches, limit)
            expected = measure_input_means(ir, inputs, batches)
            source = "calibration"
        rep = correct_biases(ir, expected)
        rep["source"] = source
        ctx.pass_report(self.name).update(rep)
        return rep["corrected"] > 0
