"""Quantization math: schemes, observers, quantize/dequantize helpers."""
