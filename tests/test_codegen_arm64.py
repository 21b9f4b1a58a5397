"""arm64 libraries cross-compiled with gcc-aarch64-linux-gnu and run under qemu-aarch64,
bit for bit against the interpreter on every integer tensor (.ci/run installs the
toolchain and qemu-user). arm64-dot builds with -march=armv8.2-a+dotprod, where the
NCHW44_DOT kernels use SDOT; arm64 builds use the NEON NCHW44 kernels."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from codegen_cases import MODELS, compare_all, program, sample
from qcompiler.codegen import generate, write_library

CROSS, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"
MARCH = {"arm64": "-march=armv8-a", "arm64-dot": "-march=armv8.2-a+dotprod"}

pytestmark = pytest.mark.skipif(shutil.which(CROSS) is None or shutil.which(QEMU) is None,
                                reason="the arm64 cross toolchain or qemu-user is missing (.ci/run installs them)")

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "model.h"

static int io(const char* path, void* p, size_t n, int write) {
  FILE* f = fopen(path, write ? "wb" : "rb");
  size_t k;
  if (!f) return 1;
  k = write ? fwrite(p, 1, n, f) : fread(p, 1, n, f);
  fclose(f);
  return k != n;
}

int main(int argc, char** argv) {
  float* in = malloc(sizeof(float) * MODEL_INPUT_SIZE);
  float* out = malloc(sizeof(float) * MODEL_OUTPUT_SIZE);
  void* ws = malloc(MODEL_WORKSPACE_SIZE);
  if (argc != 4 || !in || !out || !ws || io(argv[1], in, sizeof(float) * MODEL_INPUT_SIZE, 0)) return 2;
  if (model_run(in, out, ws) != 0) return 3;
  return io(argv[2], out, sizeof(float) * MODEL_OUTPUT_SIZE, 1) || io(argv[3], ws, MODEL_WORKSPACE_SIZE, 1);
}
"""


def run_under_qemu(prog, feeds, tmp_path, target):
    (name, x), = feeds.items()
    lib = generate(prog, {name: x.shape}, debug=True)
    d = write_library(lib, tmp_path / "lib")
    (d / "main.c").write_text(HARNESS)
    exe = d / "model"
    subprocess.run([CROSS, "-std=c99", "-ffp-contract=off", "-O1", "-Wall", "-Werror", MARCH[target],
                    "model.c", "model_weights.c", "main.c", "-lm", "-o", str(exe)], cwd=d, check=True)
    x.astype(np.float32).tofile(d / "in.bin")
    subprocess.run([QEMU, "-L", SYSROOT, str(exe), "in.bin", "out.bin", "ws.bin"], cwd=d, check=True, timeout=120)
    ws = np.fromfile(d / "ws.bin", dtype=np.uint8)
    tensors = {}
    for t in lib.tensors:
        n = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize
        tensors[t.name] = ws[t.offset:t.offset + n].view(np.dtype(t.dtype)).reshape(t.shape)
    out = np.fromfile(d / "out.bin", dtype=np.float32).reshape(lib.outputs[0].shape)
    return lib, tensors, out


@pytest.mark.parametrize("target", ["arm64", "arm64-dot"])
@pytest.mark.parametrize("model", MODELS)
def test_arm64_under_qemu_bit_exact(model, target, tmp_path):
    prog = program(model, target)
    feeds = sample(model)
    lib, tensors, out = run_under_qemu(prog, feeds, tmp_path, target)
    assert compare_all(prog, tensors, feeds) >= 3
    np.testing.assert_array_equal(out, tensors[lib.outputs[0].name])
