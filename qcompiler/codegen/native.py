"""Compile a generated library with the host C compiler and run it through ctypes.

Shared objects are cached by a hash of the sources, the compiler and its flags, in
$QCOMPILER_CACHE/c (default ~/.cache/qcompiler/c), so a program compiles once per shape.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..errors import QCompilerError, UsageError
from .files import CFLAGS
from .generate import CLibrary, generate

DEFAULT_FLAGS = ("-O2",)


class CompileError(QCompilerError):
    """The host C compiler failed on generated code (a qcompiler bug)."""


def cache_dir() -> Path:
    root = os.environ.get("QCOMPILER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "qcompiler")
    return Path(root) / "c"


def find_cc(cc: Optional[str] = None) -> str:
    cc = cc or os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise UsageError(f"C compiler '{cc}' not found", "install gcc or clang, or set CC")
    return cc


def compile_shared(lib: CLibrary, cc: Optional[str] = None, flags: Sequence[str] = DEFAULT_FLAGS,
                   warnings_as_errors: bool = False) -> Path:
    """lib<prefix>.so for `lib`, built (or found) in the cache."""
    cc = find_cc(cc)
    args = CFLAGS.split() + list(flags) + (["-Wall", "-Werror"] if warnings_as_errors else [])
    h = hashlib.sha256()
    for name in sorted(lib.files):
        h.update(name.encode() + b"\0" + lib.files[name].encode() + b"\0")
    h.update((cc + " " + " ".join(args)).encode())
    key = h.hexdigest()[:32]
    out = cache_dir() / f"{lib.prefix}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qc-cc-") as d:
        for name, text in lib.files.items():
            Path(d, name).write_text(text)
        so = Path(d, "lib.so")
        cmd = [cc, *args, "-fPIC", "-shared", "-o", str(so), f"{lib.prefix}.c", f"{lib.prefix}_weights.c", "-lm"]
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines() or ["no output"]
            first = next((ln for ln in lines if "error" in ln), lines[0])
            raise CompileError(f"the C compiler failed on the generated library: {first}",
                               "report it with the program file (a qcompiler bug)")
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(so, tmp)
        os.replace(tmp, out)
    return out


class NativeModel:
    """A compiled library loaded with ctypes: `run(feeds)` -> {output name: array}."""

    def __init__(self, lib: CLibrary, so_path: Path):
        self.lib = lib
        self.dll = ctypes.CDLL(str(so_path))
        self.fn = getattr(self.dll, f"{lib.prefix}_run")
        self.fn.restype = ctypes.c_int
        self.workspace = np.zeros(lib.workspace_size + 64, dtype=np.uint8)
        off = (-self.workspace.ctypes.data) % 64
        self.ws = self.workspace[off:off + lib.workspace_size]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        ins = []
        for t in self.lib.inputs:
            if t.name not in feeds:
                raise UsageError(f"the program needs input '{t.name}'",
                                 f"inputs: {', '.join(i.name for i in self.lib.inputs)}")
            x = np.ascontiguousarray(feeds[t.name], dtype=np.float32)
            if tuple(x.shape) != tuple(t.shape):
                raise UsageError(f"input '{t.name}' has shape {list(x.shape)}; the library was generated for "
                                 f"{list(t.shape)}", "generate the library for this shape")
            ins.append(x)
        outs = [np.empty(t.shape, dtype=np.float32) for t in self.lib.outputs]
        ptrs = [a.ctypes.data_as(ctypes.c_void_p) for a in ins + outs]
        rc = self.fn(*ptrs, self.ws.ctypes.data_as(ctypes.c_void_p))
        if rc != 0:
            raise QCompilerError(f"{self.lib.prefix}_run returned {rc}", "a qcompiler bug")
        return {t.name: o for t, o in zip(self.lib.outputs, outs)}

    def tensor(self, name: str) -> np.ndarray:
        """A debug build's tensor after run(), in its physical layout."""
        for t in self.lib.tensors:
            if t.name == name:
                n = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize
                return self.ws[t.offset:t.offset + n].view(np.dtype(t.dtype)).reshape(t.shape).copy()
        raise KeyError(name)


def load(prog, input_shapes=None, debug: bool = False, cc: Optional[str] = None,
         flags: Sequence[str] = DEFAULT_FLAGS, isa: Optional[Sequence[str]] = None) -> NativeModel:
    lib = generate(prog, input_shapes, debug=debug, isa=isa)
    return NativeModel(lib, compile_shared(lib, cc, flags))


def run_c(prog, feeds: Mapping[str, np.ndarray], **kw) -> Dict[str, np.ndarray]:
    """Run `prog` as generated C on `feeds` (the library is generated for their shapes)."""
    shapes = {n: tuple(np.shape(v)) for n, v in feeds.items()}
    return load(prog, shapes, **kw).run(feeds)
