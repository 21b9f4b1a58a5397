"""Generated C against the integer reference interpreter, on the host compiler.

Every program below is generated as C, compiled with -Wall -Werror -std=c99 and run through
ctypes: a debug build (every tensor kept) must equal the interpreter on every integer
tensor bit for bit, and the normal build (workspace reused) must give the same outputs.
The program of any target runs on the host in portable C.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

from codegen_cases import C_FLAGS, MODELS, TARGETS, cache_env, compare_all, program, sample
from qcompiler.codegen import generate, native, write_library
from qcompiler.errors import ModelError
from qcompiler.lowering.interpreter import run_program
from qcompiler.lowering.lower import lower_to_program
from qcompiler.target import parse_target
from qcompiler.lowering.program import Kernel, Program, TensorInfo
from test_lowering_models import LAYOUT_IDS, LAYOUT_TARGETS, inputs, qdq


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    cache_env(tmp_path_factory)


def _check(prog, feeds, cc=None):
    shapes = {k: v.shape for k, v in feeds.items()}
    dbg = native.load(prog, shapes, debug=True, cc=cc, flags=C_FLAGS)
    out_dbg = dbg.run(feeds)
    tensors = {t.name: dbg.tensor(t.name) for t in dbg.lib.tensors}
    ints = compare_all(prog, tensors, feeds)
    assert ints >= 3
    fast = native.load(prog, shapes, cc=cc, flags=C_FLAGS)
    assert fast.lib.workspace_size < dbg.lib.workspace_size  # tensors share the workspace
    out = fast.run(feeds)
    for k in out:
        np.testing.assert_array_equal(out[k], out_dbg[k])
    return ints


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model", MODELS)
def test_models_bit_exact(model, target):
    prog = program(model, target)
    _check(prog, sample(model))


@pytest.mark.parametrize("model", ["ppocr_rec", "cnn_lstm", "yolox_like"])
def test_matrix_models_bit_exact_x86(model):
    """The rest of the real-model matrix on x86 (ppocr_det: test_codegen_x86.py): PP-OCRv4
    rec at 48 x 160 (attention: float MatMul, Softmax, LayerNorm's ReduceMean/Pow/Sqrt, u8
    Gemm), the CNN+LSTM (a bidirectional float LSTM between integer convs and a Gemm) and
    the YOLOX-style head (SiLU LUTs, Concat, Reshape, Transpose)."""
    _check(program(model, "x86"), sample(model))


@pytest.mark.parametrize("cc", [None, "clang"])
def test_float_islands_bit_exact(cc):
    """Float kernels beyond the models' cases: a reverse LSTM with bias, peepholes and
    initial state (all three outputs), MatMul with broadcast batch dims, Softmax on a middle
    axis, reductions over two leading axes and over the last."""
    rng = np.random.default_rng(3)
    t, n, i, h = 6, 2, 5, 4
    consts = {"W": rng.normal(0, .5, (1, 4 * h, i)), "R": rng.normal(0, .5, (1, 4 * h, h)),
              "B": rng.normal(0, .5, (1, 8 * h)), "h0": rng.normal(0, .5, (1, n, h)),
              "c0": rng.normal(0, .5, (1, n, h)), "P": rng.normal(0, .5, (1, 3 * h)), "M": rng.normal(0, 1, (3, 1, h, 7))}
    prog = Program("x86", "single_rounding", "fixed_point", inputs=["x"], outputs=["out", "ymax"],
                   constants={k: v.astype(np.float32) for k, v in consts.items()})
    shapes = {"x": [t, n, i], "y": [t, 1, n, h], "yh": [1, n, h], "yc": [1, n, h], "y5": [t, 1, n, 1, h],
              "mm": [t, 3, n, 1, 7], "sm": [t, 3, n, 1, 7], "out": [1, 1, n, 1, 7], "ymax": [t, 1, n, 1]}
    prog.tensors = {k: TensorInfo(k, "float32", shape=v) for k, v in shapes.items()}
    prog.constants["ax"] = np.asarray([t, 1, n, 1, h], np.int64)
    prog.nodes = [
        Kernel("LSTM", "lstm", ["x", "W", "R", "B", "", "h0", "c0", "P"], ["y", "yh", "yc"],
               {"hidden_size": h, "direction": "reverse"}, domain=""),
        Kernel("Reshape", "r", ["y", "ax"], ["y5"], domain=""),
        Kernel("MatMul", "mm", ["y5", "M"], ["mm"], domain=""),  # [t,1,n,1,h] @ [3,1,h,7]
        Kernel("Softmax", "sm", ["mm"], ["sm"], {"axis": 1}, domain=""),
        Kernel("ReduceMean", "mean", ["sm"], ["out"], {"axes": [0, 1], "keepdims": 1}, domain=""),
        Kernel("ReduceMax", "max", ["y5"], ["ymax"], {"axes": [-1], "keepdims": 0}, domain=""),
    ]
    feeds = {"x": rng.normal(0, 1, (t, n, i)).astype(np.float32)}
    if cc and shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (.ci/run installs it)")
    dbg = native.load(prog, {"x": (t, n, i)}, debug=True, cc=cc, flags=C_FLAGS)
    out = dbg.run(feeds)
    tensors = {tt.name: dbg.tensor(tt.name) for tt in dbg.lib.tensors}
    compare_all(prog, tensors, feeds)
    assert {"y", "yh", "yc", "mm", "sm", "out", "ymax"} <= set(tensors)
    ref = run_program(prog, feeds)
    for k in ("out", "ymax"):
        np.testing.assert_allclose(out[k], ref[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("target", LAYOUT_TARGETS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("net", ["small", "mixed"])
def test_every_layout_bit_exact(net, target):
    """Grouped, depthwise, first-layer and dense convs, AveragePool, Resize, Concat, Mul,
    LUTs in NCHW, NHWC, NCHW44, NCHW44_DOT, NC4HW4 and NC32HW32."""
    prog = lower_to_program(qdq(net), target)
    _check(prog, {"input": inputs(1, seed=5)[0]})


@pytest.mark.parametrize("rounding", ["half_away_from_zero", "half_to_even"])
def test_other_roundings_bit_exact(rounding):
    target = parse_target(f'target r-{rounding} extends arm64 "test" {{\nrounding {rounding}\ndrop layout Conv\n}}')
    prog = lower_to_program(qdq("mixed"), target)
    _check(prog, {"input": inputs(1, seed=6)[0]})


def test_uint8_activations_bit_exact():
    for target in ["x86", "arm64"]:
        prog = lower_to_program(qdq("small", u8=True), target)
        _check(prog, {"input": inputs(1, seed=8)[0]})


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed (.ci/run installs it)")
@pytest.mark.parametrize("target", TARGETS + ["cuda"])
def test_clang_compiles_and_agrees(target):
    prog = lower_to_program(qdq("mixed"), target)
    _check(prog, {"input": inputs(1, seed=9)[0]}, cc="clang")


def test_unsupported_op_is_refused_with_its_name(tmp_path):
    prog = program("tiny_convnet", "x86")
    bad = copy.deepcopy(prog)
    out = bad.outputs[0]
    bad.constants["gw"] = np.ones((3, 10), np.float32)
    bad.nodes.append(Kernel("Gemm", "gemm_node", [out, "gw"], ["g"], {"transB": 1}, domain=""))  # float Gemm
    bad.tensors["g"] = TensorInfo("g", "float32", shape=[1, 3])
    bad.outputs = ["g"]
    with pytest.raises(ModelError, match=r"no kernel for Gemm \(node 'gemm_node'\)"):
        lib = generate(bad)
        write_library(lib, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_open_input_dims_need_a_shape():
    prog = program("ppocr_cls", "arm64")
    with pytest.raises(Exception, match="open dims"):
        generate(prog)
    lib = generate(prog, {"x": (1, 3, 48, 192)})
    assert lib.inputs[0].shape == (1, 3, 48, 192) and lib.outputs[0].shape == (1, 2)


def test_generated_header_declares_the_api():
    lib = generate(program("tiny_convnet", "arm64"))
    h = lib.files["model.h"]
    assert "int model_run(const float* in, float* out, void* workspace);" in h
    assert f"#define MODEL_WORKSPACE_SIZE {lib.workspace_size}" in h
    assert "#define MODEL_INPUT_SIZE 3072" in h and "#define MODEL_OUTPUT_SIZE 10" in h
