"""`qcompiler build --emit c` and `qcompiler run --backend c` from the command line, and the
example of docs/codegen.md compiled against a generated library."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from codegen_cases import ROOT, cache_env
from qcompiler.cli.main import main
from qcompiler.lowering.interpreter import run_program
from qcompiler.lowering.program import load_program

MODEL = str(ROOT / "examples" / "tiny_convnet.onnx")
CALIB = str(ROOT / "examples" / "calib")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    cache_env(tmp_path_factory)


def _docs_example() -> str:
    text = (ROOT / "docs" / "codegen.md").read_text()
    return re.search(r"```c\n(#include <stdio.h>.*?)```", text, re.S).group(1)


def test_emit_c_builds_with_make_and_the_docs_example_prints_the_class(tmp_path):
    out = tmp_path / "model_c"
    assert main(["build", MODEL, "--target", "arm64", "--calib", CALIB, "--emit", "c", "-o", str(out), "-q"]) == 0
    assert {"model.c", "model.h", "model_weights.c", "qc_kernels.h", "Makefile", "README.md"} <= \
        {p.name for p in out.iterdir()}
    subprocess.run(["make", "-s", "-C", str(out), "CFLAGS=-O1 -Wall -Werror"], check=True)
    (tmp_path / "main.c").write_text(_docs_example())
    exe = tmp_path / "classify"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-O1", f"-I{out}", str(tmp_path / "main.c"),
                    str(out / "libmodel.a"), "-lm", "-o", str(exe)], check=True)
    prog_path = tmp_path / "p.onnx"
    assert main(["build", MODEL, "--target", "arm64", "--calib", CALIB, "--emit", "program", "-o", str(prog_path),
                 "-q"]) == 0
    prog = load_program(prog_path)
    for i in (0, 5):
        x = np.load(ROOT / "examples" / "calib" / f"sample_{i:02d}.npy").astype(np.float32)
        x.tofile(tmp_path / "input.bin")
        r = subprocess.run([str(exe), str(tmp_path / "input.bin")], capture_output=True, text=True, check=True)
        y = run_program(prog, {"input": x})["output"].reshape(-1)
        assert r.stdout.startswith(f"class {int(np.argmax(y))} "), (r.stdout, y)


def test_emit_c_refuses_a_non_empty_folder_and_a_file(tmp_path, capsys):
    out = tmp_path / "lib"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["build", MODEL, "--target", "x86", "--calib", CALIB, "--emit", "c", "-o", str(out), "-q"]) == 2
    assert "already holds keep.txt" in capsys.readouterr().err
    f = tmp_path / "file.c"
    f.write_text("")
    assert main(["build", MODEL, "--target", "x86", "--calib", CALIB, "--emit", "c", "-o", str(f), "-q"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["build", MODEL, "--target", "x86", "--calib", CALIB, "--emit", "c", "-o", str(out), "-q",
                 "--force"]) == 0
    assert (out / "model.c").exists() and (out / "keep.txt").exists()


def test_run_backend_c_equals_the_interpreter(tmp_path):
    prog_path = tmp_path / "p.onnx"
    assert main(["build", MODEL, "--target", "x86", "--calib", CALIB, "--emit", "program", "-o", str(prog_path),
                 "-q"]) == 0
    x = str(ROOT / "examples" / "calib" / "sample_03.npy")
    assert main(["run", str(prog_path), "--input", x, "-o", str(tmp_path / "c.npy"), "--backend", "c"]) == 0
    assert main(["run", str(prog_path), "--input", x, "-o", str(tmp_path / "i.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.load(tmp_path / "i.npy"))
