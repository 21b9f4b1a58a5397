"""Accuracy tools: sensitivity analysis, automatic mixed precision, bit-operations
report, and data-free quantization (cross-layer equalization, bias correction, ranges
from BatchNorm statistics). See docs/accuracy.md.
"""

from .bitops import bitops_report, format_bitops, mac_counts
from .pipelines import adjust_pipeline

__all__ = ["adjust_pipeline", "analyze", "bitops_report", "format_bitops", "mac_counts", "mixed_precision",
           "VariantBuilder", "equalize"]


def __getattr__(name):  # heavy modules load on first use
    if name == "analyze":
        from .sensitivity import analyze

        return analyze
    if name == "mixed_precision":
        from .mixed_precision import mixed_precision

        return mixed_precision
    if name == "VariantBuilder":
        from .variants import VariantBuilder

        return VariantBuilder
    if name == "equalize":
        from .equalization import equalize

        return equalize
    raise AttributeError(name)
