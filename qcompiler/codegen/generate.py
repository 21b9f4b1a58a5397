"""Program -> C sources: the node walk, the workspace plan and the generated files' text.

`generate(prog)` returns a `CLibrary` (file name -> text, plus what the API looks like);
`write_library` in files.py puts it on disk. Nothing is written for a program with a node
that has no C kernel: generation stops with a one-line error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from ..errors import ModelError, UsageError
from ..lowering.program import Program
from . import float_ops, int_kernels
from .memory import ALIGN, Lifetime, align, place
from .shapes import resolve_input_shapes, static_tensors, trace
from .source import ROUNDING_CODE, Source, unsupported


@dataclass
class CTensor:
    name: str
    shape: tuple          # logical (program inputs/outputs) or physical (debug table)
    dtype: str
    offset: int = -1      # in the workspace (debug table)
    layout: str = "NCHW"


@dataclass
class CLibrary:
    prefix: str
    target: str
    files: Dict[str, str]
    inputs: List[CTensor]
    outputs: List[CTensor]
    workspace_size: int
    tensors: List[CTensor] = field(default_factory=list)  # debug builds: every workspace tensor
    debug: bool = False
    profile_labels: List[str] = field(default_factory=list)


def target_isa(target_name: str) -> tuple:
    """The instruction sets a shipped target's file allows (its `isa` statement); () for a
    target that is not shipped (portable C)."""
    from ..target import load_target

    try:
        return tuple(load_target(target_name).isa)
    except Exception:  # a custom target file the program only names: portable C
        return ()


def generate(prog: Program, input_shapes: Optional[Mapping[str, Sequence[int]]] = None, prefix: str = "model",
             debug: bool = False, profile: bool = False, isa: Optional[Sequence[str]] = None) -> CLibrary:
    """C sources of `prog` for concrete input shapes (see shapes.resolve_input_shapes).

    debug: every tensor keeps its own workspace bytes after model_run, and the library
    lists them (name, offset, type) so that tests can compare each with the interpreter.
    profile: each node's wall time is summed into <prefix>_profile_s[] (POSIX clock; for
    bench/bench_codegen.py), labelled by <prefix>_profile_labels[].
    isa: the instruction sets the code may use; default: the program's target file's `isa`.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise UsageError(f"'{prefix}' is not a C identifier", "give a prefix of letters, digits and '_'")
    if prog.rounding not in ROUNDING_CODE:
        raise ModelError(f"the program's rounding '{prog.rounding}' has no C form", "lower the model again")
    shapes = resolve_input_shapes(prog, input_shapes)
    for name in prog.inputs:
        if prog.tensors[name].dtype != "float32":
            raise ModelError(f"program input '{name}' is {prog.tensors[name].dtype}; the C API takes float32",
                             "emit the program instead (--emit program)")
    values = trace(prog, shapes)
    static = static_tensors(prog)
    src = Source(prog, values, static, prefix)
    src.profile = profile
    src.isa = tuple(target_isa(prog.target) if isa is None else isa)
    for name in prog.outputs:
        if name in static or name in prog.inputs or str(values[name].dtype) != "float32":
            raise ModelError(f"program output '{name}' is not a float32 tensor computed from the inputs",
                             "emit the program instead (--emit program)")

    # lifetimes of the tensors that live in the workspace
    dynamic = [n for n in prog.nodes if not all(o in static for o in n.outputs if o)]
    first: Dict[str, int] = {}
    last: Dict[str, int] = {}
    for i, node in enumerate(dynamic):
        for o in node.outputs:
            if o and o not in first:
                first[o] = last[o] = i
        for t in node.inputs:
            if t in first:
                last[t] = i
    for o in prog.outputs:
        last[o] = len(dynamic)
    lifetimes = [Lifetime(t, int(values[t].nbytes), first[t], last[t]) for t in first]
    src.offsets, arena = place(lifetimes, reuse=not debug)

    for node in dynamic:
        fn = int_kernels.KERNELS.get(node.op) if node.is_kernel else float_ops.emitter(node.op)
        if fn is None:
            raise unsupported(node)
        fn(src, node)

    for i, name in enumerate(prog.outputs):
        src.lines.append(f"  memcpy(out{i}, {src.ptr(name)}, {values[name].nbytes});")

    scratch_at = align(arena)
    workspace = align(scratch_at + src.scratch, ALIGN) if src.scratch else max(arena, ALIGN)
    inputs = [CTensor(n, tuple(shapes[n]), "float32") for n in prog.inputs]
    outputs = [CTensor(n, tuple(values[n].shape), "float32") for n in prog.outputs]
    tensors = [CTensor(t, tuple(values[t].shape), str(values[t].dtype), src.offsets[t], src.layout(t))
               for t in first] if debug else []
    lib = CLibrary(prefix, prog.target, {}, inputs, outputs, workspace, tensors, debug, list(src.labels))
    from .files import render

    lib.files = render(lib, src, prog, scratch_at)
    return lib


__all__ = ["CLibrary", "CTensor", "generate", "ROUNDING_CODE"]
