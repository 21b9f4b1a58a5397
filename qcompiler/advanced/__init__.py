"""Advanced quantization: AdaRound, int4/int16 bit widths, dynamic quantization and
importing models that are already quantized (docs/advanced.md).

    from qcompiler.advanced import advanced_pipeline, prepare_options
    names = advanced_pipeline(target, options)   # the pass list for these options
"""

from .precision import EXTRA_DTYPES, allowed_dtypes, apply_precision, prepare_options

__all__ = ["EXTRA_DTYPES", "allowed_dtypes", "apply_precision", "prepare_options"]
