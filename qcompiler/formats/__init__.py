"""Quantized model forms other than the QDQ export: reading pre-quantized (Q/DQ) models back,
and lowering Q/DQ pairs to ONNX's QOperator ops (QLinearConv, ...).
"""
