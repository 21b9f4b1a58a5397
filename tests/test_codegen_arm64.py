"""arm64 libraries cross-compiled with gcc-aarch64-linux-gnu and run under qemu-aarch64,
bit for bit against the interpreter on every integer tensor (.ci/run installs the
toolchain and qemu-user). arm64-dot builds with -march=armv8.2-a+dotprod, where the
NCHW44_DOT kernels use SDOT; arm64 builds use the NEON NCHW44 kernels."""

from __future__ import annotations

import numpy as np
import pytest

from codegen_cases import MODELS, arm64_toolchain, compare_all, program, run_under_qemu, sample

pytestmark = pytest.mark.skipif(not arm64_toolchain(),
                                reason="the arm64 cross toolchain or qemu-user is missing (.ci/run installs them)")


@pytest.mark.parametrize("target", ["arm64", "arm64-dot"])
@pytest.mark.parametrize("model", MODELS)
def test_arm64_under_qemu_bit_exact(model, target, tmp_path):
    prog = program(model, target)
    feeds = sample(model)
    lib, tensors, out = run_under_qemu(prog, feeds, tmp_path, target)
    assert compare_all(prog, tensors, feeds) >= 3
    np.testing.assert_array_equal(out, tensors[lib.outputs[0].name])


@pytest.mark.parametrize("target", ["arm64", "arm64-dot"])
@pytest.mark.parametrize("model", ["ppocr_det", "ppocr_rec", "cnn_lstm", "yolox_like"])
def test_matrix_models_under_qemu_bit_exact(model, target, tmp_path):
    """The rest of the real-model matrix (bench/bench_targets.py; yolov8n needs the bench
    extra: bench/codegen_matrix.py covers it): det at 96 x 96, rec at 48 x 160, the CNN+LSTM
    and the YOLOX-style head, float islands (LSTM, MatMul, Softmax, reductions) included."""
    prog = program(model, target)
    feeds = sample(model)
    lib, tensors, out = run_under_qemu(prog, feeds, tmp_path, target)
    assert compare_all(prog, tensors, feeds) >= 3
    np.testing.assert_array_equal(out, tensors[lib.outputs[0].name])
