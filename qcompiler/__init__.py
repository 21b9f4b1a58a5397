"""qcompiler: a compiler-style INT8 quantization toolkit for ONNX models.

    import qcompiler
    result = qcompiler.build("model.onnx", "arm64", calib="data/")   # what `qcompiler build` runs
    result.save("model.int8.onnx")
    ir = qcompiler.load("model.onnx")                                  # the IR passes work on
    qcompiler.analyze("model.onnx", "x86", calib)                      # per-layer sensitivity
    qcompiler.verify("model.program.onnx", "model.int8.onnx", "data.npy")

Plugin authors need only `Pass` and `register_pass` (and `qcompiler.rewrite`).
"""

__version__ = "0.1.0"

from .pipeline.registry import Pass, register_pass  # noqa: E402

__all__ = ["Pass", "register_pass", "build", "BuildResult", "load", "analyze", "verify", "__version__"]


def __getattr__(name):  # the driver and the tools load on first use: `import qcompiler` stays light
    if name in ("build", "BuildResult"):
        from . import driver

        return getattr(driver, name)
    if name == "load":
        from .ir import load_ir

        return load_ir
    if name == "analyze":
        from .analysis.sensitivity import analyze

        return analyze
    if name == "verify":
        from .lowering.verify import verify_files

        return verify_files
    raise AttributeError(f"module 'qcompiler' has no attribute {name!r}")
