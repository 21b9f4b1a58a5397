"""The files of `qcompiler run` and `qcompiler verify`: input data checked against the
program, and the outputs of `run` written through the output gateway.

The interpreter runs whatever arrays it is given (a [1,3,16,16] program on [4,3,8,8] data
yields numbers), and ONNX Runtime fails on a fixed batch axis with a multi-line message.
`check_program_inputs` refuses such data up front with one line naming the input, the
shape or dtype it has and the one the program takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from .errors import UsageError

_HINT = "save arrays shaped like the program's inputs (see 'qcompiler inspect PROGRAM')"


def _fmt(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def load_program_inputs(path, prog) -> List[Dict[str, np.ndarray]]:
    """The batches in `path` (.npy, .npz or a folder of them) for program `prog`, checked."""
    from .lowering.verify import load_inputs, split_to_program_batch

    p = Path(path)
    if p.is_file() and p.suffix not in (".npy", ".npz"):
        raise UsageError(f"input data '{p}' is not a .npy or .npz file", "save inputs with numpy.save / numpy.savez")
    try:
        batches = load_inputs(str(p), prog.inputs)
    except (ValueError, OSError, EOFError) as e:  # object arrays, truncated members of a .npz
        raise UsageError(f"cannot read input data '{p}': {' '.join(str(e).split()) or type(e).__name__}",
                         "save plain numeric arrays with numpy.save / numpy.savez") from None
    batches = split_to_program_batch(prog, batches)
    for i, batch in enumerate(batches):
        check_program_inputs(prog, batch, f"{p}" + (f", batch {i}" if len(batches) > 1 else ""))
    return batches


def check_program_inputs(prog, batch: Dict[str, np.ndarray], origin: str) -> None:
    """Each array of `batch` has the dtype kind, rank and fixed dims of the program input
    it feeds; float data is finite."""
    for name in prog.inputs:
        arr = batch[name]
        info = prog.tensors.get(name)
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            kind = getattr(arr, "dtype", type(arr).__name__)
            raise UsageError(f"input '{name}' in '{origin}' has dtype {kind}, not a number type", _HINT)
        if info is None:
            continue
        want = np.dtype(info.dtype) if info.dtype else None
        if want is not None and not np.can_cast(arr.dtype, want, "same_kind"):
            raise UsageError(f"input '{name}' in '{origin}' has dtype {arr.dtype}, but the program takes {want}",
                             f"save the array as {want}")
        shape = info.shape
        if shape is None:
            continue
        if arr.ndim != len(shape):
            raise UsageError(f"input '{name}' in '{origin}' has shape {_fmt(arr.shape)}, but the program takes "
                             f"{_fmt(shape)} ({len(shape)} axes, not {arr.ndim})", _HINT)
        for axis, (have, need) in enumerate(zip(arr.shape, shape)):
            if need is not None and have != need:
                hint = (f"the program takes batches of {need}: give one batch per file (a folder of .npy files "
                        "works)" if axis == 0 else _HINT)
                raise UsageError(f"input '{name}' in '{origin}' has shape {_fmt(arr.shape)}, but the program takes "
                                 f"{_fmt(shape)} (axis {axis} is {have}, not {need})", hint)
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise UsageError(f"input '{name}' in '{origin}' has {bad} NaN or Inf values", "give finite input data")


def check_data_for(program_path, data_path) -> None:
    """`verify`: load the program and check the data before anything runs."""
    from .lowering.program import load_program

    load_program_inputs(data_path, load_program(program_path))


def run_to_file(program_path, input_path, out: Path, backend: str = "interpreter") -> Dict[str, np.ndarray]:
    """`run`: the outputs of the program on one input file, written to `out` (.npy for one
    output, else .npz keyed by output name). `out` was checked by an OutputPlan. backend
    "c": the program as generated C compiled with the host compiler (qcompiler.codegen.native)
    instead of the interpreter."""
    from .lowering.interpreter import run_program
    from .lowering.program import load_program
    from .outputs import staged

    if out.suffix not in (".npy", ".npz"):
        raise UsageError(f"output '{out}' must end in .npy or .npz", "name the output file x.npy or x.npz")
    prog = load_program(program_path)
    if out.suffix == ".npy" and len(prog.outputs) != 1:
        raise UsageError(f"the program has {len(prog.outputs)} outputs; a .npy holds one", "give -o a .npz path")
    p = Path(input_path)
    if p.is_dir():
        raise UsageError(f"'{p}' is a folder; 'run' takes one input file", "give a .npy or .npz file")
    if backend == "c":
        from .codegen.native import run_c as run
    else:
        run = run_program
    # a file of several fixed-size batches runs batch by batch, the outputs concatenated
    results = [run(prog, batch) for batch in load_program_inputs(p, prog)]
    outs = {k: np.concatenate([r[k] for r in results]) if len(results) > 1 else results[0][k]
            for k in results[0]}
    with staged(out) as (tmp,):
        with open(tmp, "wb") as f:  # a file object: numpy adds no suffix
            if out.suffix == ".npy":
                np.save(f, next(iter(outs.values())))
            else:
                np.savez(f, **outs)
    return outs
