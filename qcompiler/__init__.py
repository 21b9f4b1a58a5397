"""qcompiler: a compiler-style INT8 quantization toolkit for ONNX models."""

__version__ = "0.1.0"
