"""Advanced quantization: AdaRound, int4/int16 bit widths, dynamic quantization and
importing models that are already quantized (docs/advanced.md).

    from qcompiler.advanced import prepare_build
    names, options = prepare_build(model, target.pipeline, options)   # passes + options for a build

Passes: adaround, quantize-dynamic, import-qdq (in qcompiler.passes). Build options:
weight_dtype, activation_dtype, layer_dtypes, weight_range, adaround, adaround_seconds,
adaround_iters, mode, import_strict (qcompiler.advanced.commands lists the CLI flags).
"""

from .pipeline import advanced_pipeline, detect_mode, needs_calibration, prepare_build
from .precision import EXTRA_DTYPES, allowed_dtypes, apply_precision, prepare_options
from .qdq_import import detect_form

__all__ = ["EXTRA_DTYPES", "advanced_pipeline", "allowed_dtypes", "apply_precision", "detect_form", "detect_mode",
           "needs_calibration", "prepare_build", "prepare_options"]
