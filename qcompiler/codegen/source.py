"""The state of one C generation: where every tensor lives, the constant arrays, C literals.

Kernel emitters (int_kernels.py, float_ops.py) ask this object for a tensor's C pointer,
its physical shape and C type, and register the constants they read; it collects the
statements of model_run and the scratch bytes the largest kernel needs.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ModelError
from ..lowering.layouts import block_of, is_blocked
from ..lowering.program import Kernel, Program

#: the program's rounding mode as the generated code's QC_ROUNDING constant
ROUNDING_CODE = {"half_away_from_zero": 0, "single_rounding": 1, "half_to_even": 2}

C_TYPE = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
          "float32": "float", "uint16": "uint16_t"}
DT_CODE = {"int8": "QC_I8", "uint8": "QC_U8", "float32": "QC_F32"}


def unsupported(node: Kernel, what: str = "") -> ModelError:
    detail = f": {what}" if what else ""
    return ModelError(f"C code generation has no kernel for {node.op} (node '{node.name}'){detail}",
                      "emit the program instead (--emit program) and run it with the interpreter")


def flit(v) -> str:
    """A float32 value as an exact C literal."""
    f = float(np.float32(v))
    if math.isnan(f):
        return "NAN"
    if math.isinf(f):
        return "INFINITY" if f > 0 else "-INFINITY"
    return f"{f.hex()}f"


def ilit(v) -> str:
    v = int(v)
    if v == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    if v < -(1 << 31) or v > (1 << 31) - 1:
        return f"{v}LL"
    return str(v)


class Source:
    def __init__(self, prog: Program, values: Dict[str, np.ndarray], static: set, prefix: str):
        self.prog = prog
        self.values = values
        self.static = static
        self.prefix = prefix
        self.offsets: Dict[str, int] = {}
        self.input_index = {n: i for i, n in enumerate(prog.inputs)}
        self.consts: Dict[str, tuple] = {}  # key -> (symbol, ctype, flat array)
        self.lines: List[str] = []
        self.scratch = 0  # bytes
        self.profile = False
        self.labels: List[str] = []  # profiled nodes
        self.isa: tuple = ()  # instruction sets the target allows (QC_ISA_* defines)

    @property
    def x86(self) -> bool:
        return "avx2" in self.isa or "avx512_vnni" in self.isa

    # ------------------------------------------------------------------ tensors
    def dtype(self, name: str) -> str:
        return str(self.array(name).dtype)

    def array(self, name: str) -> np.ndarray:
        if name in self.prog.constants:
            return np.asarray(self.prog.constants[name])
        return self.values[name]

    def shape(self, name: str) -> tuple:
        return tuple(int(d) for d in self.array(name).shape)

    def size(self, name: str) -> int:
        return int(np.prod(self.shape(name), dtype=np.int64))

    def layout(self, name: str) -> str:
        info = self.prog.tensors.get(name)
        return info.layout if info is not None else "NCHW"

    def ptr(self, name: str, ctype: Optional[str] = None) -> str:
        """A C expression pointing at the tensor's first element."""
        ct = ctype or C_TYPE.get(self.dtype(name), "uint8_t")
        if name in self.input_index:
            return f"in{self.input_index[name]}"
        if name in self.static:
            return self.const(name)
        return f"(({ct}*)(ws + {self.offsets[name]}))"

    def const(self, name: str, arr: Optional[np.ndarray] = None, ctype: Optional[str] = None) -> str:
        """The symbol of a constant array (a program constant, a folded tensor, or `arr`)."""
        if arr is None:
            arr = self.array(name)
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        ct = ctype or C_TYPE.get(str(arr.dtype))
        if ct is None:
            raise ModelError(f"C code generation cannot store constant '{name}' of type {arr.dtype}",
                             "emit the program instead (--emit program)")
        key = (name, ct)
        if key not in self.consts:
            self.consts[key] = (f"{self.prefix}_w{len(self.consts)}", ct, arr.reshape(-1))
        return self.consts[key][0]

    def new_const(self, arr: np.ndarray, ctype: str) -> str:
        return self.const(f"#{len(self.consts)}", arr, ctype)

    # ------------------------------------------------------------------ statements
    def emit(self, comment: str, *stmts: str) -> None:
        comment = comment.replace("*/", "* /").replace("\n", " ")
        self.lines.append(f"  {{ /* {comment} */")
        if self.profile:  # the node's time, summed over runs into <prefix>_profile_s[i]
            self.labels.append(comment)
            self.lines.append("    double t0_ = qc_now_s();")
        for s in stmts:
            self.lines.append(f"    {s}")
        if self.profile:
            self.lines.append(f"    {self.prefix}_profile_s[{len(self.labels) - 1}] += qc_now_s() - t0_;")
        self.lines.append("  }")

    def need_scratch(self, nbytes: int) -> None:
        self.scratch = max(self.scratch, int(nbytes))

    # ------------------------------------------------------------------ kernel descriptors
    def plane(self, name: str, layout: str) -> str:
        """A qc_plane initializer for a 4-D activation (units of (n, channel) planes)."""
        shape = self.shape(name)
        if layout == "NHWC":
            n, h, w, c = shape
            units, lanes, ustride, hs, ws = n * c, c, h * w * c, w * c, c
        elif is_blocked(layout):
            n, cb, h, w, k = shape
            units, lanes, ustride, hs, ws = n * cb * k, k, h * w * k, w * k, k
        else:
            n, c, h, w = shape
            units, lanes, ustride, hs, ws = n * c, 1, h * w, w, 1
        return f"{{{units}, {lanes}, {h}, {w}, {ustride}, {hs}, {ws}}}"

    def spatial(self, name: str, layout: str) -> tuple:
        """(planes, H, W, lanes, physical channels) of a 4-D activation."""
        shape = self.shape(name)
        if len(shape) == 5:
            n, cb, h, w, k = shape
            return n * cb, h, w, k, cb * k
        if layout == "NHWC":
            n, h, w, c = shape
            return n, h, w, c, c
        n, c, h, w = shape
        return n * c, h, w, 1, c

    def bcast(self, out: str, a_shape: Sequence[int], b_shape: Sequence[int], node: Kernel) -> str:
        """A qc_bcast initializer: output shape and input strides (0 where broadcast)."""
        out_shape = list(self.shape(out))
        if len(out_shape) > 6 or len(a_shape) > 6 or len(b_shape) > 6:
            raise unsupported(node, "more than 6 dims")
        nd = 6
        oshape = [1] * (nd - len(out_shape)) + out_shape

        def strides(shape):
            shape = [1] * (nd - len(shape)) + list(shape)
            st, acc = [0] * nd, 1
            for d in range(nd - 1, -1, -1):
                st[d] = 0 if shape[d] == 1 and oshape[d] != 1 else acc
                acc *= shape[d]
            return st

        fmt = lambda xs: "{" + ", ".join(str(int(x)) for x in xs) + "}"
        return f"{{{fmt(oshape)}, {fmt(strides(a_shape))}, {fmt(strides(b_shape))}}}"

    def requant(self, node: Kernel, qnames: Sequence[str], zp: int, qmin: int, qmax: int) -> str:
        """A qc_rq initializer from a kernel's requantization inputs."""
        float_out = node.attrs.get("output") == "float"
        if float_out or self.prog.requant == "float_scale":
            scale = np.asarray(self.array(qnames[0]), dtype=np.float32).reshape(-1)
            bias = np.asarray(self.array(qnames[1]), dtype=np.float32).reshape(-1) if len(qnames) > 1 else None
            mode = "QC_RQ_FLOAT_OUT" if float_out else "QC_RQ_FLOAT"
            s = self.const(qnames[0], scale, "float")
            b = self.const(qnames[1], bias, "float") if bias is not None else "NULL"
            return (f"{{{mode}, NULL, NULL, {s}, {b}, {int(scale.size > 1)}, "
                    f"{int(bias is not None and bias.size > 1)}, {zp}, {qmin}, {qmax}}}")
        if self.prog.requant != "fixed_point":
            raise unsupported(node, f"requant style {self.prog.requant!r}")
        mult = np.asarray(self.array(qnames[0])).astype(np.int32).reshape(-1)
        shift = np.asarray(self.array(qnames[1])).astype(np.int32).reshape(-1)
        m, s = self.const(qnames[0], mult, "int32_t"), self.const(qnames[1], shift, "int32_t")
        return f"{{QC_RQ_FIXED, {m}, {s}, NULL, NULL, {int(mult.size > 1)}, 0, {zp}, {qmin}, {qmax}}}"

    def requant_table(self, mult=None, shift=None, scale=None, zp=0, qmin=0, qmax=0) -> str:
        """A qc_rq initializer with per-position constants computed at generation time."""
        if scale is not None:
            s = self.new_const(np.asarray(scale, np.float32).reshape(-1), "float")
            return f"{{QC_RQ_FLOAT, NULL, NULL, {s}, NULL, 1, 0, {zp}, {qmin}, {qmax}}}"
        m = self.new_const(np.asarray(mult, np.int32).reshape(-1), "int32_t")
        s = self.new_const(np.asarray(shift, np.int32).reshape(-1), "int32_t")
        return f"{{QC_RQ_FIXED, {m}, {s}, NULL, NULL, 1, 0, {zp}, {qmin}, {qmax}}}"


def block_k(layout: str) -> int:
    return block_of(layout)
