"""Streaming observers: exactness, accuracy against NumPy, clipping, memory."""

import numpy as np
import pytest

from qcompiler.errors import CalibrationError
from qcompiler.quant.observers import (
    EntropyObserver,
    HistogramObserver,
    MSE_CLIP_WEIGHT,
    MSEObserver,
    make_observer,
    per_channel_minmax,
)
from qcompiler.quant.qparams import MIN_SCALE, compute_qparams, fake_quant
from qcompiler.quant.scheme import QuantScheme

INT8 = QuantScheme("int8", symmetric=True)
UINT8 = QuantScheme("uint8", symmetric=False)
METHODS = ["minmax", "moving_average", "percentile", "entropy", "mse"]


def feed(obs, x, n_batches):
    for b in np.array_split(x, n_batches):
        obs.update(b)
    return obs


def quant_mse(x, lo, hi, scheme):
    qp = compute_qparams(lo, hi, scheme)
    x32 = x.astype(np.float32)
    return float(np.mean((fake_quant(x32, qp).astype(np.float64) - x32) ** 2))


@pytest.fixture(scope="module")
def laplace_outliers():
    rng = np.random.default_rng(0)
    # Laplace bulk plus two far outliers: rare enough that clipping them pays off
    x = rng.laplace(0.0, 1.0, 1_000_000)
    x[:2] = [100.0, -90.0]
    rng.shuffle(x)
    return x.astype(np.float32)


# ---- min/max ---------------------------------------------------------------------------


def test_minmax_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 7, 9)).astype(np.float32)
    obs = feed(make_observer("minmax"), x, 13)
    assert obs.range() == (float(x.min()), float(x.max()))
    s = obs.stats
    assert (s.min, s.max, s.count, s.nan_count, s.inf_count) == (
        float(x.min()), float(x.max()), x.size, 0, 0,
    )
    # range always contains 0
    pos = make_observer("minmax").update(np.array([2.0, 5.0]))
    assert pos.range() == (0.0, 5.0) and pos.stats.min == 2.0


def test_minmax_per_channel_and_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 4, 5)).astype(np.float32)
    obs = feed(make_observer("minmax", axis=1), x, 4)
    lo, hi = obs.range()
    np.testing.assert_array_equal(lo, np.minimum(x.min(axis=(0, 2)), 0))
    np.testing.assert_array_equal(hi, np.maximum(x.max(axis=(0, 2)), 0))
    w = rng.normal(size=(6, 3, 3, 3))
    w[2] = 0.0
    w[4, 0, 0, 0] = np.nan
    lo, hi = per_channel_minmax(w, axis=0)
    assert lo.shape == (6,) and lo[2] == 0 and hi[2] == 0
    ref = np.nanmin(w.reshape(6, -1), axis=1)
    np.testing.assert_allclose(lo, np.minimum(ref, 0))
    qp = compute_qparams(lo, hi, QuantScheme("int8", axis=0))
    assert np.all(np.isfinite(qp.scale)) and qp.scale[2] == np.float32(MIN_SCALE)
    lo_t, _ = per_channel_minmax(w.transpose(1, 0, 2, 3), axis=-3)
    np.testing.assert_array_equal(lo_t, lo)


def test_moving_average():
    obs = make_observer("moving_average", momentum=0.5)
    obs.update(np.array([-1.0, 1.0]))
    obs.update(np.array([-3.0, 5.0]))
    assert obs.range() == (-2.0, 3.0)
    obs.update(np.array([np.nan]))  # no finite value: skipped
    assert obs.range() == (-2.0, 3.0) and obs.stats.nan_count == 1
    ch = make_observer("moving_average", momentum=0.5, axis=0)
    ch.update(np.array([[1.0, 2.0], [-1.0, -2.0]]))
    ch.update(np.array([[3.0, 4.0], [-3.0, -4.0]]))
    lo, hi = ch.range()
    np.testing.assert_array_equal(hi, [3.0, 0.0])
    np.testing.assert_array_equal(lo, [0.0, -3.0])
    with pytest.raises(CalibrationError):
        make_observer("moving_average", momentum=1.5)


# ---- non-finite values and degenerate data ---------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_nan_inf_ignored_and_counted(method):
    rng = np.random.default_rng(3)
    x = rng.normal(size=10_000)
    dirty = x.copy()
    dirty[::100] = np.nan
    dirty[1::250] = np.inf
    dirty[2::500] = -np.inf
    obs = feed(make_observer(method), dirty, 10)
    s = obs.stats
    assert s.nan_count == 100 and s.inf_count == 40 + 20
    assert s.count == 10_000 - 160 and s.total == 10_000
    lo, hi = obs.range(INT8)
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi
    clean = x[np.isfinite(dirty)]
    assert s.min == clean.min() and s.max == clean.max()
    ref = feed(make_observer(method), clean, 10).range(INT8)
    assert (lo, hi) == pytest.approx(ref)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "data",
    [np.zeros(1000), np.full(1000, 3.5), np.full(1000, -2.0), np.array([np.nan, np.inf]), np.zeros(0)],
    ids=["zeros", "const_pos", "const_neg", "no_finite", "empty"],
)
@pytest.mark.parametrize("scheme", [INT8, UINT8], ids=["int8sym", "uint8asym"])
def test_degenerate_data_gives_safe_range(method, data, scheme):
    obs = make_observer(method)
    for _ in range(3):
        obs.update(data)
    lo, hi = obs.range(scheme)
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi
    finite = data[np.isfinite(data)]
    if finite.size and finite.max() != 0:
        assert min(finite.min(), 0) <= lo and hi <= max(finite.max(), 0)
        assert hi - lo > 0
    qp = compute_qparams(lo, hi, scheme)
    assert np.isfinite(qp.scale) and qp.scale >= np.float32(MIN_SCALE)


def test_zeros_before_data_are_kept():
    obs = HistogramObserver(bins=64)
    obs.update(np.zeros(10))
    obs.update(np.array([1.0, 2.0, -1.0]))
    counts, edges = obs.histogram()
    assert counts.sum() == 13
    zero_bin = int(np.searchsorted(edges, 0.0, side="right")) - 1
    assert counts[zero_bin] == 10


# ---- histogram accuracy -----------------------------------------------------------------


def test_histogram_merge_is_exact_and_bounded():
    rng = np.random.default_rng(4)
    obs = HistogramObserver(bins=256)
    parts = [rng.normal(0, s, 3000) for s in (0.01, 0.1, 1.0, 50.0, 1e4)]
    for p in parts:
        obs.update(p)
    counts, edges = obs.histogram()
    x = np.concatenate(parts)
    assert counts.sum() == x.size
    assert len(counts) <= 256
    assert len(counts) > 256 // 2 - 2  # at least about half the bins cover the range
    assert edges[0] <= x.min() and edges[-1] > x.max()
    np.testing.assert_array_equal(counts, np.histogram(x, bins=edges)[0])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_extreme_dynamic_range(method):
    obs = make_observer(method)
    obs.update(np.array([1e-30, -2e-30, 0.0], np.float32))
    obs.update(np.array([1e30, 5.0], np.float32))
    obs.update(np.array([-1e-38, 0.0], np.float32))
    counts, _ = obs.histogram()
    assert counts.sum() == 7 and len(counts) <= 2048
    lo, hi = obs.range(INT8)
    assert float(np.float32(-2e-30)) <= lo <= 0 < hi <= float(np.float32(1e30))
    assert np.isfinite(compute_qparams(lo, hi, INT8).scale)


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_close_to_numpy(p):
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(1.0, 2.0, 600_000), rng.exponential(3.0, 200_000)])
    rng.shuffle(x)
    obs = feed(make_observer("percentile", percentile=p), x, 200)
    width = (x.max() - x.min()) / 2048 * 2  # at worst twice the initial bin width
    lo, hi = obs.range(QuantScheme("int8", symmetric=False))
    assert hi == pytest.approx(np.percentile(x, p), abs=width)
    assert lo == pytest.approx(np.percentile(x, 100 - p), abs=width)
    _, t = obs.range(INT8)
    assert t == pytest.approx(np.percentile(np.abs(x), p), abs=width)


def test_percentile_options():
    with pytest.raises(CalibrationError):
        make_observer("percentile", percentile=20)
    obs = make_observer("percentile", percentile=100).update(np.array([-1.0, 4.0]))
    assert obs.range() == (-1.0, 4.0)


# ---- clipping methods ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_clipping_beats_minmax_on_heavy_tails(method, laplace_outliers):
    x = laplace_outliers
    # mse on the plain squared error (the default weighs clipping 4x: see below)
    obs = feed(make_observer(method, **({"clip_weight": 1} if method == "mse" else {})), x, 20)
    lo, hi = obs.range(INT8)
    mm_lo, mm_hi = float(x.min()), float(x.max())
    assert max(-lo, hi) < 0.5 * max(-mm_lo, mm_hi)  # clipped well below the max
    assert quant_mse(x, lo, hi, INT8) < 0.5 * quant_mse(x, mm_lo, mm_hi, INT8)


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_clipping_one_sided_affine(method):
    # post-ReLU data on a uint8 affine grid: all 256 levels serve the positive side,
    # so only a rarer, nearer outlier is worth clipping
    rng = np.random.default_rng(11)
    relu = np.maximum(rng.laplace(0.0, 1.0, 1_000_000), 0).astype(np.float32)
    relu[123] = 60.0
    obs = feed(make_observer(method, **({"clip_weight": 1} if method == "mse" else {})), relu, 20)
    lo, hi = obs.range(UINT8)
    assert lo == 0.0 and hi < 0.75 * relu.max()
    mm = quant_mse(relu, 0.0, float(relu.max()), UINT8)
    if method == "mse":
        assert quant_mse(relu, lo, hi, UINT8) < mm
    else:  # KL is not MSE: it pays the outlier's clipping error, but stays close
        assert quant_mse(relu, lo, hi, UINT8) < 1.5 * mm


def test_mse_two_sided_affine_is_no_worse_than_minmax():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.laplace(2.0, 1.0, 200_000), [60.0, -15.0]])
    obs = make_observer("mse").update(x)
    lo, hi = obs.range(UINT8)
    assert lo <= 0 <= hi and hi < 60
    assert quant_mse(x, lo, hi, UINT8) < quant_mse(x, x.min(), x.max(), UINT8)


def test_mse_on_uniform_data_keeps_the_range():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 200_000)
    lo, hi = make_observer("mse").update(x).range(INT8)
    assert hi == pytest.approx(1.0, rel=0.02)


def test_entropy_threshold_uses_scheme_levels():
    rng = np.random.default_rng(8)
    x = rng.laplace(0.0, 1.0, 200_000)
    obs = EntropyObserver().update(x)
    t8 = obs.range(INT8)[1]
    t4 = obs.range(QuantScheme("int4"))[1]
    assert 0 < t4 < t8 <= x.max()  # fewer levels clip harder


def test_entropy_ignores_the_spike_of_zeros_after_relu():
    # Half the values exactly 0 (a ReLU output): zero lies on the grid, so the threshold must
    # be the one of the positive values alone (before, the spike pulled it to 1.64 of 4.37).
    rng = np.random.default_rng(3)
    pos = np.abs(rng.normal(0.0, 1.0, 100_000))
    alone = EntropyObserver().update(pos).range(UINT8)[1]
    relu = EntropyObserver().update(np.concatenate([pos, np.zeros(100_000)])).range(UINT8)[1]
    assert alone > 0.8 * pos.max()
    assert relu == pytest.approx(alone, rel=0.02)


def _kl_loop(hist, i, levels):
    """KL(P || Q) of one candidate, written out bin by bin (the reference for the prefix-sum form)."""
    h = hist[:i].astype(np.float64)
    p = h.copy()
    p[-1] += hist[i:].sum()
    nz = p > 0
    edges = (np.arange(levels + 1) * i) // levels
    q = np.zeros(i)
    for a, b in zip(edges[:-1], edges[1:]):
        k = nz[a:b].sum()
        if k:
            q[a:b] = np.where(nz[a:b], h[a:b].sum() / k, 0.0)
    if q.sum() <= 0:
        return np.inf
    pn, qn = p / p.sum(), q / q.sum()
    qn = np.where(nz & (qn <= 0), 1e-12, qn)
    return float(np.sum(pn[nz] * np.log(pn[nz] / qn[nz])))


@pytest.mark.parametrize("seed", range(4))
def test_entropy_divergences_match_the_bin_by_bin_definition(seed):
    from qcompiler.quant.observers import _kl_divergences

    rng = np.random.default_rng(seed)
    hist = np.floor(rng.exponential(50.0, 700) * (rng.random(700) > 0.3))  # with empty bins
    hist[650:] = 0
    hist[699] = 3.0  # an outlier bin after a gap
    for levels in (128, 200):
        cands = np.arange(levels, 701, 7)
        got = _kl_divergences(hist, cands, levels)
        want = np.array([_kl_loop(hist, int(i), levels) for i in cands])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# ---- streaming -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
@pytest.mark.parametrize("scheme", [INT8, UINT8], ids=["int8sym", "uint8asym"])
def test_one_batch_vs_many(method, scheme):
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(0.5, 1.0, 150_000), rng.laplace(0, 2.0, 50_000)])
    rng.shuffle(x)
    one = make_observer(method).update(x).range(scheme)
    many = feed(make_observer(method), x, 100).range(scheme)
    span = max(x.max(), 0) - min(x.min(), 0)
    tol = {"minmax": 0.0, "percentile": 0.003, "entropy": 0.03, "mse": 0.03}[method]
    assert one[0] == pytest.approx(many[0], abs=tol * span)
    assert one[1] == pytest.approx(many[1], abs=tol * span)
    if method != "minmax":
        m1, m2 = quant_mse(x, *one, scheme), quant_mse(x, *many, scheme)
        assert m2 == pytest.approx(m1, rel=0.05)


@pytest.mark.parametrize("method", METHODS)
def test_memory_is_flat(method):
    rng = np.random.default_rng(10)
    obs = make_observer(method)
    for i in range(1000):
        obs.update(rng.normal(0, 1 + i / 100, size=64))
    assert obs.stats.count == 64_000
    arrays = [v for v in vars(obs).values() if isinstance(v, np.ndarray)]
    held = sum(a.size for a in arrays)
    assert held == obs.state_size()
    assert held <= 2048 + 16
    lo, hi = obs.range(INT8)
    assert lo < 0 < hi


def test_make_observer_errors():
    with pytest.raises(CalibrationError, match="unknown calibration method 'kmeans'"):
        make_observer("kmeans")
    with pytest.raises(CalibrationError, match="bad option"):
        make_observer("minmax", bins=10)
    with pytest.raises(CalibrationError):
        make_observer("entropy", bins=4)
    assert make_observer("KL").method == "entropy"
    assert isinstance(make_observer("mse", bins=512), MSEObserver)


def test_integer_and_multidimensional_input():
    obs = make_observer("percentile").update(np.arange(-5, 6, dtype=np.int32).reshape(11, 1))
    assert obs.stats.min == -5 and obs.stats.max == 5
    with pytest.raises(TypeError):
        make_observer("minmax").update(np.array(["a"]))


# ---- mse: clipped values weigh more than rounded ones ------------------------------------


def _weighted_error(x, lo, hi, scheme, w):
    """The mse observer's objective on raw samples: squared error, clipped values w times."""
    qp = compute_qparams(lo, hi, scheme)
    x32 = x.astype(np.float32)
    d = (fake_quant(x32, qp).astype(np.float64) - x32) ** 2
    s = float(np.asarray(qp.scale).reshape(-1)[0])
    outside = (x32 < lo - 0.5 * s) | (x32 > hi + 0.5 * s)
    return float(np.mean(np.where(outside, w * d, d)))


def test_mse_clip_weight_one_is_the_plain_squared_error():
    rng = np.random.default_rng(21)
    x = rng.laplace(0.0, 1.0, 200_000)
    lo, hi = make_observer("mse", clip_weight=1).update(x).range(INT8)
    t = max(-lo, hi)
    # no threshold on a fine grid does better on the plain squared error
    best = min(quant_mse(x, -u, u, INT8) for u in np.linspace(0.3 * t, np.abs(x).max(), 200))
    assert quant_mse(x, lo, hi, INT8) <= best * 1.01


def test_mse_default_weights_clipping_errors_on_affine_grids():
    rng = np.random.default_rng(22)
    x = rng.laplace(0.0, 1.0, 200_000)
    assert MSE_CLIP_WEIGHT == 4.0
    plain = make_observer("mse", clip_weight=1).update(x).range(UINT8)
    weighted = make_observer("mse").update(x).range(UINT8)
    # a clip costs more, so the default keeps more of both tails than the plain minimum ...
    assert -weighted[0] > 1.05 * -plain[0] and weighted[1] > 1.05 * plain[1]
    # ... and it is the minimum of its own objective, not just any wider range
    e = _weighted_error(x, *weighted, UINT8, 4.0)
    for f in (0.9, 1.1):
        assert e <= _weighted_error(x, f * weighted[0], f * weighted[1], UINT8, 4.0) * 1.01
    # an explicit weight is that weight
    assert make_observer("mse", clip_weight=4).update(x).range(UINT8) == weighted


def test_mse_default_is_the_plain_squared_error_on_symmetric_grids():
    rng = np.random.default_rng(24)
    x = rng.laplace(0.0, 1.0, 200_000)
    plain = make_observer("mse", clip_weight=1).update(x).range(INT8)
    assert make_observer("mse").update(x).range(INT8) == plain
    assert make_observer("mse", clip_weight=4).update(x).range(INT8) != plain


def test_mse_clips_a_heavy_tail_and_keeps_a_compact_range():
    rng = np.random.default_rng(23)
    # heavy tail (Student's t, 3 degrees of freedom): clipped well inside its extremes,
    # far more than a Gaussian of as many samples
    heavy = rng.standard_t(3, 500_000)
    lo, hi = make_observer("mse").update(heavy).range(UINT8)
    heavy_keep = (hi - lo) / (heavy.max() - heavy.min())
    gauss = rng.normal(0.0, 1.0, 500_000)
    lo, hi = make_observer("mse").update(gauss).range(UINT8)
    gauss_keep = (hi - lo) / (gauss.max() - gauss.min())
    assert heavy_keep < 0.8 and gauss_keep > 0.85  # measured 0.75 and 0.87
    # compact: uniform data keeps its min/max, a post-ReLU Gaussian nearly so
    u = rng.uniform(-1.0, 1.0, 200_000)
    lo, hi = make_observer("mse").update(u).range(UINT8)
    assert (lo, hi) == pytest.approx((u.min(), u.max()), rel=0.01)
    relu = np.maximum(rng.normal(0.0, 1.0, 200_000), 0.0)
    lo, hi = make_observer("mse").update(relu).range(UINT8)
    assert lo == 0.0 and hi > 0.95 * relu.max()
    plain = make_observer("mse", clip_weight=1).update(relu).range(UINT8)
    assert plain[1] < hi  # the plain minimum clips more of it


@pytest.mark.parametrize("bad", [0.5, -1, float("nan"), float("inf"), "heavy"])
def test_mse_clip_weight_is_validated(bad):
    with pytest.raises(CalibrationError, match="clip_weight"):
        make_observer("mse", clip_weight=bad)
