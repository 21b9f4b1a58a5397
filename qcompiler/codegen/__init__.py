"""C code generation: a lowered program -> a self-contained C99 library (docs/codegen.md).

    from qcompiler.codegen import generate, write_library
    lib = generate(prog, {"x": (1, 3, 224, 224)})   # model.c, model.h, model_weights.c, ...
    write_library(lib, "model_c/")

`qcompiler.codegen.native` compiles a library with the host compiler and runs it through
ctypes (`qcompiler run --backend c`).
"""

from .files import write_library
from .generate import CLibrary, generate

__all__ = ["CLibrary", "generate", "write_library"]
