"""Fixes for the rounding error of quantized weights: cross-layer equalization, bias
correction and AdaRound (docs/accuracy.md, docs/advanced.md).
"""
