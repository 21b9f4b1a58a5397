"""The integer reference interpreter: runs a lowered Program in NumPy as the target would.

Integer kernels (qcompiler.lowering.int_kernels) work on int8 / uint8 tensors in the
target layout with exact int32 accumulation and the target's requantization. Floats appear
only at Dequantize and in the ops the program keeps in float (standard ONNX ops, run by
the NumPy op library qcompiler.lowering.float_ops).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import ModelError, UsageError
from .float_ops import run_float_op
from .int_kernels import KERNELS
from .integers import dtype_range
from .layouts import block_of, is_blocked
from .program import DOMAIN, Program

__all__ = ["run_program"]


def run_program(prog: Program, feeds: Mapping[str, np.ndarray], poison_padding: bool = False,
                keep: Sequence[str] = (),
                observe: Optional[Callable[[str, np.ndarray], Optional[np.ndarray]]] = None
                ) -> Dict[str, np.ndarray]:
    """Execute `prog` on `feeds` (input name -> array) and return {output name: array}.

    poison_padding: fill the padded lanes of every blocked tensor with random values as
    soon as it is produced, which proves that padding never leaks into real channels.
    keep: extra tensor names to return (for debugging), in their physical layout.
    observe: called as observe(name, value) for every tensor produced; a returned array
    replaces the value (verify_program's layer-wise mode feeds reference values this way).
    """
    env: Dict[str, np.ndarray] = {}
    for name in prog.inputs:
        if name not in feeds:
            raise UsageError(f"the program needs input '{name}'", f"inputs: {', '.join(prog.inputs)}")
        info = prog.tensors[name]
        env[name] = np.asarray(feeds[name]).astype(np.dtype(info.dtype), copy=False)
    unknown = sorted(set(feeds) - set(prog.inputs))
    if unknown:
        raise UsageError(f"the program has no input '{unknown[0]}'", f"inputs: {', '.join(prog.inputs)}")
    consts = prog.constants
    cache = prog.__dict__.setdefault("_prepared", {})
    rng = np.random.default_rng(1234) if poison_padding else None
    for node in prog.nodes:
        args = [None if not i else (consts[i] if i in consts else env[i]) for i in node.inputs]
        try:
            if node.domain == DOMAIN:
                fn = KERNELS.get(node.op)
                if fn is None:
                    raise ModelError(f"program node '{node.name}' uses unknown kernel '{node.op}'",
                                     "the program was written by a newer qcompiler")
                outs = fn(node, args, prog, cache)
            else:
                attrs = node.attrs
                if node.op == "Split":
                    attrs = dict(attrs, _num_outputs=len(node.outputs))
                outs = run_float_op(node.op, args, attrs)
        except (ModelError, UsageError):
            raise
        except Exception as e:
            raise ModelError(f"program node '{node.name}' ({node.op}) failed: {type(e).__name__}: {e}",
                             "check the input shapes against the program's inputs") from None
        for name, val in zip(node.outputs, outs):
            if name:
                if rng is not None:
                    val = _poison(prog, name, val, rng)
                if observe is not None:
                    repl = observe(name, val)
                    if repl is not None:
                        val = repl
                env[name] = val
    result = {name: env[name] for name in prog.outputs}
    for name in keep:
        result[name] = env[name] if name in env else consts[name]
    return result


def _poison(prog, name, val, rng):
    info = prog.tensors.get(name)
    if info is None or not is_blocked(info.layout) or info.channels is None or val.ndim != 5:
        return val
    k = block_of(info.layout)
    c = info.channels
    if c % k == 0:
        return val
    lo, hi = dtype_range(val.dtype)
    val = val.copy()
    val[:, -1, :, :, c % k:] = rng.integers(lo, hi + 1, size=val[:, -1, :, :, c % k:].shape)
    return val
