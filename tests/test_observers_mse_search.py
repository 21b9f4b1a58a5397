"""MSEObserver's range search: the shortcuts taken for speed choose the ranges the plain
search chooses."""

import numpy as np
import pytest

from qcompiler.quant.observers import MSE_CLIP_WEIGHT, MSEObserver
from qcompiler.quant.scheme import QuantScheme

UINT8 = QuantScheme("uint8", symmetric=False)


def _varied(seed):
    """Two-sided batches of several shapes: bulk and tails, skew, spikes, sparse values."""
    rng = np.random.default_rng(seed)
    kind = seed % 6
    if kind == 0:
        return [rng.laplace(0.3, 1.0, 4000).astype(np.float32) for _ in range(5)]
    if kind == 1:  # HardSwish-like: mostly positive, a short negative side
        x = rng.normal(0.5, 2.0, (5, 3000))
        return list((x * np.clip(x + 3, 0, 6) / 6).astype(np.float32))
    if kind == 2:  # heavy tails, growing range over the batches (coarsening)
        return [(rng.standard_t(2, 2000) * (1 + i)).astype(np.float32) for i in range(5)]
    if kind == 3:  # few distinct values
        return [rng.choice([-2.0, -0.5, 0.0, 0.25, 3.0], 512).astype(np.float32) for _ in range(3)]
    if kind == 4:  # a spike at zero and a thin uniform spread
        x = np.where(rng.random((4, 5000)) < 0.7, 0.0, rng.uniform(-1, 5, (4, 5000)))
        return list(x.astype(np.float32))
    return [rng.normal(0, 1, 64).astype(np.float64) for _ in range(2)]  # tiny, float64


def _plain_alternation(obs, scheme, weight):
    """The two-sided affine search as first written: three full rounds, no lookups."""
    counts, edges = obs.histogram()
    keep = counts > 0
    c = np.clip((edges[:-1] * 0.5 + edges[1:] * 0.5)[keep], obs._min, obs._max).astype(np.float32)
    n = counts[keep].astype(np.float32)
    lo0, hi0 = obs._min, obs._max
    lo, hi = lo0, hi0
    for _ in range(3):
        hi = obs._search(hi0, lambda t, lo=lo: (np.full_like(t, lo), t), c, n, scheme, weight)
        lo = -obs._search(-lo0, lambda t, hi=hi: (-t, np.full_like(t, hi)), c, n, scheme, weight)
    return lo, hi


@pytest.mark.parametrize("seed", range(12))
def test_alternation_lookups_choose_the_plain_alternations_range(seed):
    obs = MSEObserver()
    for b in _varied(seed):
        obs.update(b)
    assert obs._min < 0 < obs._max
    assert obs.range(UINT8) == _plain_alternation(obs, UINT8, MSE_CLIP_WEIGHT)


def test_alternation_stops_searching_once_an_end_repeats(monkeypatch):
    obs = MSEObserver()
    for b in _varied(0):
        obs.update(b)
    calls = []
    search = MSEObserver._search
    monkeypatch.setattr(MSEObserver, "_search", lambda self, *a: calls.append(a[0]) or search(self, *a))
    obs.range(UINT8)
    assert 2 <= len(calls) < 6
