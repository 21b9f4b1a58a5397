"""Quantization math: schemes, observers, quantize/dequantize helpers.

Pure NumPy, independent of the IR.
"""

from .observers import (
    OBSERVER_METHODS,
    Observer,
    ObserverStats,
    make_observer,
    per_channel_minmax,
)
from .qparams import MIN_SCALE, QParams, compute_qparams, dequantize, fake_quant, quantize
from .scheme import DTYPES, QuantScheme

__all__ = [
    "DTYPES",
    "MIN_SCALE",
    "OBSERVER_METHODS",
    "Observer",
    "ObserverStats",
    "QParams",
    "QuantScheme",
    "compute_qparams",
    "dequantize",
    "fake_quant",
    "make_observer",
    "per_channel_minmax",
    "quantize",
]
