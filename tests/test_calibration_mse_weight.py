"""The x86 default (calibration mse) searches the clip-weighted squared error (the weight
each model keeps, 4 or 1, is tests/test_clip_choice.py's subject).

The end-to-end effect is measured, not tested: bench/bench_quant.py's "qc default" row and
docs/accuracy.md (a single small net's output SQNR moves by tenths of a dB with the last
bits of its ranges, in either direction)."""

import numpy as np
import pytest

from fixtures import models
from qcompiler.driver.build import build
from qcompiler.quant import observers

DEFAULT_WEIGHT = observers.MSE_CLIP_WEIGHT


def _scales(r):
    return {i.name: float(np.frombuffer(i.raw_data, np.float32)[0]) if i.raw_data else float(i.float_data[0])
            for i in r.model.graph.initializer
            if i.name.endswith("scale") and not i.dims}


def test_the_default_weight_keeps_more_range_than_the_plain_squared_error():
    xs = np.random.default_rng(3).standard_normal((12, 1, 3, 32, 32)).astype(np.float32)
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    plain = _scales_of(m, xs, 1.0)
    weighted = _scales_of(m, xs, DEFAULT_WEIGHT)
    assert set(plain) == set(weighted)
    wider = [k for k in plain if weighted[k] > plain[k] * (1 + 1e-6)]
    narrower = [k for k in plain if weighted[k] < plain[k] * (1 - 1e-6)]
    # clipping costs 4x, so the activation steps grow (wider ranges) and almost none shrinks
    assert len(wider) >= len(plain) // 2
    assert len(narrower) <= len(plain) // 10


def _scales_of(m, xs, weight):
    r = build(m, target="x86", calib=lambda: ({"input": x} for x in xs),
              options={"evaluate": False, "mse_clip_weight": weight})
    assert r.report["calibration"]["method"] == "mse"
    return _scales(r)


def test_minmax_override_is_unaffected_by_the_weight(monkeypatch):
    xs = np.random.default_rng(4).standard_normal((6, 1, 3, 32, 32)).astype(np.float32)
    m = models.resnet18_like(hw=32, width=8, num_classes=10)
    opts = {"evaluate": False, "calib_method": "minmax"}
    runs = []
    for w in (1.0, 16.0):
        monkeypatch.setattr(observers, "MSE_CLIP_WEIGHT", w)
        runs.append(_scales(build(m, target="x86", calib=lambda: ({"input": x} for x in xs), options=opts)))
    assert runs[0] == pytest.approx(runs[1], rel=0, abs=0)
