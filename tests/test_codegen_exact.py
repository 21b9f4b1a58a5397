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
from qcompiler.lowering.lower import lower_to_program
from qcompiler.target import parse_target
from qcompiler.lowering.program import Kernel, TensorInfo
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
    bad.nodes.append(Kernel("ReduceMean", "mean_node", [out], ["mean"], {"keepdims": 1}, domain=""))
    bad.tensors["mean"] = TensorInfo("mean", "float32", shape=[1, 1])
    bad.outputs = ["mean"]
    with pytest.raises(ModelError, match=r"no kernel for ReduceMean \(node 'mean_node'\)"):
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
