"""qcompiler: a compiler-style INT8 quantization toolkit for ONNX models."""

__version__ = "0.1.0"

from .pipeline.registry import Pass, register_pass  # noqa: E402  (public API for plugin authors)

__all__ = ["Pass", "register_pass", "__version__"]
