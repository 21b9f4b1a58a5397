"""What a quantized model costs and loses: sensitivity analysis, bit-operations, output
error, task metrics, evaluation data and plots (docs/accuracy.md).
"""
