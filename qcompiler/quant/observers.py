"""Streaming range observers for calibration.

An observer sees a tensor batch by batch and proposes a quantization range::

    obs = make_observer("entropy", bins=2048)
    for batch in batches:
        obs.update(batch)
    lo, hi = obs.range(QuantScheme("int8"))
    qp = compute_qparams(lo, hi, scheme)

Memory is flat in the number of samples: min/max observers keep a few numbers, the
histogram observers (percentile, entropy, mse) keep one fixed-size histogram.

The histogram is laid on a grid anchored at 0 (bin g covers [g*w, (g+1)*w)), so 0 is
always a bin edge and a signed histogram folds exactly into a histogram of |x|. When a
later batch falls outside the bins, the bin width doubles (pairs of neighbouring bins
merge, exactly, no interpolation) until everything fits; the range is therefore always
covered by between bins/2 and bins bins.

NaN and +-Inf values are left out of every range and counted in ``obs.stats`` so the
caller can warn. Ranges are finite and always contain 0 (``lo <= 0 <= hi``); a tensor
that is all zeros (or has no finite value at all) gives (0.0, 0.0), which
:func:`~qcompiler.quant.qparams.compute_qparams` turns into the safe MIN_SCALE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CalibrationError
from .qparams import _scale_zero_point
from .scheme import QuantScheme

__all__ = [
    "ObserverStats",
    "Observer",
    "MinMaxObserver",
    "MovingAverageObserver",
    "HistogramObserver",
    "PercentileObserver",
    "EntropyObserver",
    "MSEObserver",
    "MSE_CLIP_WEIGHT",
    "default_clip_weight",
    "OBSERVER_METHODS",
    "make_observer",
    "per_channel_minmax",
]

_DEFAULT_SCHEME = QuantScheme("int8", symmetric=True)


@dataclass(frozen=True)
class ObserverStats:
    """What an observer has seen. min/max are None until a finite value arrives."""

    min: float | None
    max: float | None
    count: int  # finite values
    nan_count: int
    inf_count: int

    @property
    def total(self) -> int:
        """All values seen, finite or not."""
        return self.count + self.nan_count + self.inf_count


def _as_float(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind == "f":
        return a
    if a.dtype.kind in "iub":
        return a.astype(np.float64)
    raise TypeError(f"observers take numeric arrays, got dtype {a.dtype}")


class Observer:
    """Base class: tracks stats (min, max, counts of finite, NaN and Inf values)."""

    method = "base"

    def __init__(self) -> None:
        self._min = math.inf
        self._max = -math.inf
        self._count = 0
        self._nan = 0
        self._inf = 0
        self._batch_min = math.nan  # extremes of the last batch's finite values
        self._batch_max = math.nan

    # -- bookkeeping --------------------------------------------------------------------

    def _finite(self, x) -> np.ndarray:
        """Flattened finite values of a batch; updates the stats."""
        a = _as_float(x).reshape(-1)
        if a.size == 0:
            return a
        # ufunc reduce and math.isfinite: this runs once per observed tensor and batch
        mn, mx = float(np.minimum.reduce(a)), float(np.maximum.reduce(a))
        if not (math.isfinite(mn) and math.isfinite(mx)):  # NaN propagates through min/max
            nan = np.isnan(a)
            fin = np.isfinite(a)
            n_nan = int(nan.sum())
            self._nan += n_nan
            self._inf += int(a.size - n_nan - fin.sum())
            a = a[fin]
            if a.size == 0:
                return a
            mn, mx = float(a.min()), float(a.max())
        self._count += int(a.size)
        self._batch_min, self._batch_max = mn, mx
        self._min = min(self._min, self._batch_min)
        self._max = max(self._max, self._batch_max)
        return a

    @property
    def stats(self) -> ObserverStats:
        has = self._count > 0
        return ObserverStats(
            min=self._min if has else None,
            max=self._max if has else None,
            count=self._count,
            nan_count=self._nan,
            inf_count=self._inf,
        )

    def _data_range(self) -> tuple[float, float]:
        if self._count == 0:
            return 0.0, 0.0
        return min(self._min, 0.0), max(self._max, 0.0)

    # -- API ----------------------------------------------------------------------------

    def update(self, x) -> "Observer":
        """Feed one batch (any shape). Returns self."""
        raise NotImplementedError

    def range(self, scheme: QuantScheme | None = None) -> tuple[float, float]:
        """The proposed (lo, hi), finite, lo <= 0 <= hi."""
        raise NotImplementedError

    def state_size(self) -> int:
        """Number of array elements the observer holds (flat in the samples seen)."""
        return sum(v.size for v in vars(self).values() if isinstance(v, np.ndarray))

    def __repr__(self) -> str:
        s = self.stats
        return f"{type(self).__name__}(count={s.count}, min={s.min}, max={s.max})"


class MinMaxObserver(Observer):
    """Exact running min and max; per channel when ``axis`` is given."""

    method = "minmax"

    def __init__(self, axis: int | None = None) -> None:
        super().__init__()
        self.axis = axis
        self._cmin: np.ndarray | None = None
        self._cmax: np.ndarray | None = None

    def _channel_minmax(self, x) -> tuple[np.ndarray, np.ndarray]:
        a = _as_float(x)
        ax = self.axis + a.ndim if self.axis < 0 else self.axis
        if not 0 <= ax < a.ndim:
            raise ValueError(f"observer axis {self.axis} is out of range for rank {a.ndim}")
        self._finite(a)  # stats
        return _masked_minmax(a, ax)

    def update(self, x) -> "MinMaxObserver":
        if self.axis is None:
            self._finite(x)
            return self
        lo, hi = self._channel_minmax(x)
        if self._cmin is None:
            self._cmin, self._cmax = lo, hi
        else:
            if lo.shape != self._cmin.shape:
                raise ValueError(
                    f"channel count changed from {self._cmin.shape[0]} to {lo.shape[0]}"
                )
            self._cmin = np.fmin(self._cmin, lo)  # fmin: NaN (empty channel) loses
            self._cmax = np.fmax(self._cmax, hi)
        return self

    def range(self, scheme: QuantScheme | None = None):
        if self.axis is None:
            return self._data_range()
        if self._cmin is None:
            return np.zeros(0), np.zeros(0)
        return _channel_range(self._cmin, self._cmax)


class MovingAverageObserver(MinMaxObserver):
    """Exponential moving average of per-batch min and max.

    ``momentum`` is the weight kept by the running value:
    running = momentum * running + (1 - momentum) * batch (the first batch sets it).
    Batches without a finite value are skipped.
    """

    method = "moving_average"

    def __init__(self, momentum: float = 0.9, axis: int | None = None) -> None:
        super().__init__(axis=axis)
        if not 0.0 <= float(momentum) < 1.0:
            raise CalibrationError(
                f"moving_average momentum must be in [0, 1), got {momentum}",
                "use e.g. momentum=0.9",
            )
        self.momentum = float(momentum)
        self._avg_min: float | None = None
        self._avg_max: float | None = None

    def update(self, x) -> "MovingAverageObserver":
        m = self.momentum
        if self.axis is None:
            before = self._count
            a = self._finite(x)
            if self._count == before:
                return self
            bmin, bmax = float(a.min()), float(a.max())
            if self._avg_min is None:
                self._avg_min, self._avg_max = bmin, bmax
            else:
                self._avg_min = m * self._avg_min + (1 - m) * bmin
                self._avg_max = m * self._avg_max + (1 - m) * bmax
            return self
        lo, hi = self._channel_minmax(x)
        if self._cmin is None:
            self._cmin, self._cmax = lo, hi
        else:
            if lo.shape != self._cmin.shape:
                raise ValueError(
                    f"channel count changed from {self._cmin.shape[0]} to {lo.shape[0]}"
                )
            keep = np.isnan(lo)  # empty channel in this batch: keep the running value
            self._cmin = np.where(
                np.isnan(self._cmin), lo, np.where(keep, self._cmin, m * self._cmin + (1 - m) * lo)
            )
            self._cmax = np.where(
                np.isnan(self._cmax), hi, np.where(keep, self._cmax, m * self._cmax + (1 - m) * hi)
            )
        return self

    def range(self, scheme: QuantScheme | None = None):
        if self.axis is not None:
            return super().range(scheme)
        if self._avg_min is None:
            return 0.0, 0.0
        return min(self._avg_min, 0.0), max(self._avg_max, 0.0)


def _masked_minmax(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel min/max along ``axis`` ignoring non-finite values (NaN if none)."""
    a = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    if a.shape[1] == 0:
        n = a.shape[0]
        return np.full(n, np.nan), np.full(n, np.nan)
    fin = np.isfinite(a)
    if fin.all():
        return a.min(axis=1).astype(np.float64), a.max(axis=1).astype(np.float64)
    lo = np.where(fin, a, np.inf).min(axis=1).astype(np.float64)
    hi = np.where(fin, a, -np.inf).max(axis=1).astype(np.float64)
    empty = ~fin.any(axis=1)
    lo[empty] = np.nan
    hi[empty] = np.nan
    return lo, hi


def _channel_range(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.where(np.isnan(lo), 0.0, np.minimum(lo, 0.0))
    hi = np.where(np.isnan(hi), 0.0, np.maximum(hi, 0.0))
    return lo, hi


def per_channel_minmax(w, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi) of a weight tensor along ``axis``, float64 arrays.

    Non-finite values are ignored; each range contains 0; a channel with no finite
    value gets (0, 0).
    """
    a = _as_float(w)
    if a.ndim == 0:
        raise ValueError("per_channel_minmax needs a tensor with at least one axis")
    ax = axis + a.ndim if axis < 0 else axis
    if not 0 <= ax < a.ndim:
        raise ValueError(f"axis {axis} is out of range for a weight of rank {a.ndim}")
    return _channel_range(*_masked_minmax(a, ax))


# ---- histogram observers ---------------------------------------------------------------


class HistogramObserver(Observer):
    """Fixed-bin histogram on a 0-anchored grid that coarsens (merges bin pairs) as needed."""

    method = "histogram"

    def __init__(self, bins: int = 2048) -> None:
        super().__init__()
        bins = int(bins)
        if bins < 16:
            raise CalibrationError(f"histogram bins must be at least 16, got {bins}", "use e.g. bins=2048")
        self.bins = bins
        self._w: float | None = None  # bin width
        self._offset = 0  # global index of _counts[0]
        self._counts = np.zeros(bins, dtype=np.int64)
        self._lo_idx: int | None = None  # occupied span (global indices)
        self._hi_idx: int | None = None
        self._zeros_pending = 0  # zeros seen before the bin width was known

    def _coarsen(self, k: int) -> None:
        """Double the bin width k times, merging bins exactly."""
        if k <= 0:
            return
        g = self._offset + np.arange(self.bins, dtype=np.int64)
        ng = g >> min(k, 63)  # an int64 shifted by 63 is already 0 or -1
        new_off = int(ng[0])
        self._counts = np.bincount(ng - new_off, weights=self._counts, minlength=self.bins)[
            : self.bins
        ].astype(np.int64)
        self._offset = new_off
        self._w *= 2.0**k
        if self._lo_idx is not None:
            self._lo_idx >>= k
            self._hi_idx >>= k

    def _place(self, lo_idx: int, hi_idx: int) -> None:
        """Move the window so that the occupied span [lo_idx, hi_idx] fits (span <= bins)."""
        if lo_idx >= self._offset and hi_idx < self._offset + self.bins:
            return
        new_off = lo_idx if lo_idx < self._offset else hi_idx - self.bins + 1
        counts = np.zeros(self.bins, dtype=np.int64)
        if self._lo_idx is not None:
            a = self._lo_idx - self._offset
            b = self._hi_idx - self._offset + 1
            counts[self._lo_idx - new_off : self._hi_idx - new_off + 1] = self._counts[a:b]
        self._counts = counts
        self._offset = new_off

    def _add(self, g: np.ndarray, gmin: int, gmax: int) -> None:
        """Count global bin indices g (gmin/gmax: their min and max)."""
        lo = gmin if self._lo_idx is None else min(gmin, self._lo_idx)
        hi = gmax if self._hi_idx is None else max(gmax, self._hi_idx)
        k = 0
        while (hi >> k) - (lo >> k) + 1 > self.bins:
            k += 1
        if k:
            self._coarsen(k)
            g = g >> min(k, 63)
            lo >>= k
            hi >>= k
        self._place(lo, hi)
        self._lo_idx, self._hi_idx = lo, hi
        g -= self._offset
        self._counts += np.bincount(g, minlength=self.bins)

    def update(self, x) -> "HistogramObserver":
        v = self._finite(x)
        if v.size == 0:
            return self
        if self._w is None:
            lo = min(self._batch_min, 0.0)
            hi = max(self._batch_max, 0.0)
            if hi == lo:  # all zeros: bin width still unknown
                self._zeros_pending += int(v.size)
                return self
            self._w = hi / (self.bins - 2) - lo / (self.bins - 2)  # no overflow
            self._offset = math.floor(lo / self._w)
            if self._zeros_pending:
                self._add(np.zeros(1, dtype=np.int64), 0, 0)
                self._counts[-self._offset] += self._zeros_pending - 1
                self._zeros_pending = 0
        # coarsen first by the float estimate so that indices stay small
        vmin, vmax = self._batch_min, self._batch_max
        # (in the log domain: v / w may overflow a float, let alone an int64)
        ext = max(abs(vmin), abs(vmax))
        if ext > 0:
            log_ext = math.log2(ext) - math.log2(self._w)
            if self._lo_idx is not None:
                idx_ext = max(abs(self._lo_idx), abs(self._hi_idx) + 1)
                log_ext = max(log_ext, math.log2(idx_ext))
            k = int(math.floor(log_ext + 1 - math.log2(self.bins))) - 1  # span <= 2 * ext
            if k > 0:
                self._coarsen(k)
        # Bin indices as floor(v * (1/w)) in float32 for float32 data (4x faster than in
        # float64; indices stay below 2**24, so they are exact integers). The same float
        # operations on the extremes give the extreme indices, as rounding is monotone.
        inv = 1.0 / self._w
        if v.dtype == np.float32 and inv < 1e30:
            inv = np.float32(inv)
            t = v * inv
            gmin, gmax = math.floor(np.float32(vmin) * inv), math.floor(np.float32(vmax) * inv)
        else:
            v = v.astype(np.float64, copy=False)
            t = v * inv
            gmin, gmax = math.floor(vmin * inv), math.floor(vmax * inv)
        np.floor(t, out=t)
        self._add(t.astype(np.intp), gmin, gmax)
        return self

    # -- histogram views ----------------------------------------------------------------

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the occupied bins (len(edges) == len(counts) + 1)."""
        if self._w is None:
            if self._zeros_pending:
                return np.array([self._zeros_pending], dtype=np.int64), np.array([0.0, 0.0])
            return np.zeros(0, dtype=np.int64), np.zeros(1)
        a = self._lo_idx - self._offset
        b = self._hi_idx - self._offset + 1
        edges = (self._lo_idx + np.arange(b - a + 1)) * self._w
        return self._counts[a:b].copy(), edges

    def _abs_histogram(self) -> tuple[np.ndarray, float]:
        """Histogram of |x|: counts[k] for [k*w, (k+1)*w); folds the signed bins exactly."""
        g = self._lo_idx + np.arange(self._hi_idx - self._lo_idx + 1)
        c = self._counts[self._lo_idx - self._offset : self._hi_idx - self._offset + 1]
        k = np.where(g >= 0, g, -g - 1)
        return np.bincount(k, weights=c).astype(np.float64), self._w

    def _quantile(self, q: float) -> float:
        """Value below which a fraction q of the finite values lie (linear within bins)."""
        counts, edges = self.histogram()
        cum = np.cumsum(counts)
        total = cum[-1]
        target = q * total
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, len(counts) - 1)
        before = cum[i - 1] if i > 0 else 0
        frac = (target - before) / counts[i] if counts[i] > 0 else 0.0
        v = edges[i] + frac * (edges[i + 1] - edges[i])
        return float(min(max(v, self._min), self._max))

    def _abs_quantile(self, q: float) -> float:
        counts, w = self._abs_histogram()
        cum = np.cumsum(counts)
        target = q * cum[-1]
        i = min(int(np.searchsorted(cum, target, side="left")), len(counts) - 1)
        before = cum[i - 1] if i > 0 else 0.0
        frac = (target - before) / counts[i] if counts[i] > 0 else 0.0
        absmax = max(-self._min, self._max)
        return float(min((i + frac) * w, absmax))

    def _empty(self) -> bool:
        return self._w is None  # nothing or only zeros seen

    def range(self, scheme: QuantScheme | None = None) -> tuple[float, float]:
        return self._data_range()


class PercentileObserver(HistogramObserver):
    """Range at a percentile of the data (e.g. 99.99).

    Symmetric schemes take the percentile of |x|; affine ones the (100 - p)-th and p-th
    percentiles of x. The result never exceeds the observed min/max.
    """

    method = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(bins)
        p = float(percentile)
        if not 50.0 < p <= 100.0:
            raise CalibrationError(
                f"percentile must be in (50, 100], got {percentile}", "use e.g. percentile=99.99"
            )
        self.percentile = p

    def range(self, scheme: QuantScheme | None = None) -> tuple[float, float]:
        scheme = scheme or _DEFAULT_SCHEME
        if self._empty():
            return 0.0, 0.0
        if self.percentile == 100.0:
            return self._data_range()
        q = self.percentile / 100.0
        if scheme.symmetric:
            t = self._abs_quantile(q)
            return min(max(self._min, -t), 0.0), max(min(self._max, t), 0.0)
        lo = self._quantile(1.0 - q)
        hi = self._quantile(q)
        return min(lo, 0.0), max(hi, 0.0)


def _levels(scheme: QuantScheme, one_sided: bool) -> int:
    """Quantization levels available on one side of zero (or all of them, one-sided affine)."""
    if scheme.symmetric:
        zp = scheme.symmetric_zero_point
        return min(scheme.qmax - zp, zp - scheme.qmin) + 1
    if one_sided:
        return scheme.qmax - scheme.qmin + 1
    return (scheme.qmax - scheme.qmin + 1) // 2


class EntropyObserver(HistogramObserver):
    """Threshold minimising the KL divergence between the data and its quantized version.

    TensorRT-style: on the histogram of |x|, for each candidate threshold i (in bins)
    the reference P is the first i bins with everything beyond added to the last one,
    and Q is those i bins merged into L levels and spread back over the bins that are
    non-empty; the i with the least KL(P || Q) wins. L is the number of grid steps
    between 0 and the candidate: 128 for symmetric int8, all 256 for one-sided data on an
    affine uint8 grid, and for two-sided data on an affine grid the share of the 255 steps
    that the candidate's side gets (a HardSwish output, mostly positive, gets most of
    them: counting only 128 made the search clip such tensors to half their range).
    """

    method = "entropy"

    def __init__(self, bins: int = 2048, max_candidates: int = 1024) -> None:
        super().__init__(bins)
        self.max_candidates = int(max_candidates)

    def threshold(self, levels) -> float:
        """The best threshold; `levels` is L, or a function of the candidate (in bins) giving L."""
        hist, w = self._abs_histogram()
        # The bin at zero lies on the grid (the zero point quantizes it exactly). Left in, the
        # spike of exact zeros after a ReLU dominates the divergence of every wide candidate,
        # and the search clips ReLU outputs to the first candidate (1/8 of the range).
        hist[0] = 0.0
        n = len(hist)
        absmax = max(-self._min, self._max)
        levels_at = levels if callable(levels) else (lambda i: levels)
        first = min(levels_at(1), n)  # the fewest levels: every candidate has a bin per level
        if n <= levels_at(n) or hist.sum() <= 0:
            return absmax
        step = max(1, (n - first) // self.max_candidates)
        cands = list(range(first, n + 1, step))
        if cands[-1] != n:
            cands.append(n)
        cands = np.asarray(cands, dtype=np.int64)
        lvs = np.minimum(np.array([levels_at(int(i)) for i in cands], dtype=np.int64), cands)
        kl = np.empty(len(cands))
        for lv in np.unique(lvs):  # one vectorised pass per level count
            sel = lvs == lv
            kl[sel] = _kl_divergences(hist, cands[sel], int(lv))
        best_i = int(cands[int(np.argmin(kl))]) if np.isfinite(kl).any() else n
        return float(min(best_i * w, absmax))

    def range(self, scheme: QuantScheme | None = None) -> tuple[float, float]:
        scheme = scheme or _DEFAULT_SCHEME
        if self._empty():
            return 0.0, 0.0
        one_sided = self._min >= 0 or self._max <= 0
        if scheme.symmetric or one_sided:
            t = self.threshold(_levels(scheme, one_sided))
        else:
            grid, w, neg, pos = scheme.qmax - scheme.qmin + 1, self._w, -self._min, self._max

            def levels(i: int) -> int:  # the candidate side's share of the grid, on the clipped range
                t = i * w
                return max(1, int(grid * t / (min(neg, t) + min(pos, t)) + 1e-9))  # 128 when both sides reach t

            t = self.threshold(levels)
        return min(max(self._min, -t), 0.0), max(min(self._max, t), 0.0)


def _kl_divergences(hist: np.ndarray, cands: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) of EntropyObserver for each candidate i in `cands`, all with `levels` levels.

    P: hist[:i] with the mass beyond added to bin i-1. Q: hist[:i] merged into `levels`
    equal groups, each group's mass spread evenly over its bins where P is non-zero (a bin
    with P > 0 and Q = 0 gets 1e-12). Everything comes from prefix sums, so a candidate
    costs O(levels), not O(bins) with a dozen NumPy calls.
    """
    H = np.concatenate([[0.0], np.cumsum(hist)])  # H[k] = sum of hist[:k]
    nz = hist > 0
    N = np.concatenate([[0], np.cumsum(nz)])  # non-zero bins among hist[:k]
    hlogh = np.zeros_like(hist)
    hlogh[nz] = hist[nz] * np.log(hist[nz])
    HL = np.concatenate([[0.0], np.cumsum(hlogh)])
    total = H[-1]
    i = cands[:, None]
    edges = (np.arange(levels + 1)[None, :] * i) // levels  # {candidates, levels + 1}
    merged = H[edges[:, 1:]] - H[edges[:, :-1]]
    count = (N[edges[:, 1:]] - N[edges[:, :-1]]).astype(np.float64)
    last = cands - 1
    p_last = total - H[last]  # the last bin of P: its own mass plus everything beyond
    count[:, -1] += (p_last > 0) & ~nz[last]
    mass = merged.copy()  # P's mass on the non-zero bins of each group
    mass[:, -1] += total - H[cands]
    per = np.divide(merged, count, out=np.zeros_like(merged), where=count > 0)
    qs = H[cands]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.where(per > 0, np.log(per / qs[:, None]), math.log(1e-12))
        cross = np.sum(np.where(mass > 0, mass * log_q, 0.0), axis=1)
        plogp = HL[last] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        kl = plogp / total - math.log(total) - cross / total
    return np.where(qs > 0, kl, np.inf)


#: How much more a clipped value's squared error counts than a rounded value's in the mse
#: search on affine (zero-point) grids. Rounding errors have zero mean and are independent,
#: so the sums of the next layers average them out; clipping errors all pull the largest
#: values towards zero, so they are biased and add up through the layers. Chosen on
#: bench_quant's models, x86 (output SQNR against FP32, docs/accuracy.md): 1 (the plain
#: squared error) lost 0.3 dB to min/max on the ResNet-18-shaped net; 4 recovers it and
#: gains on every other model; 8 loses on MobileNet-shaped and PP-OCRv4 rec, 16 on det.
#: Symmetric grids keep 1: there (cuda) any weight above 1 lost on det (15.9 -> 15.1 dB at
#: 1.5, 14.4 at 4).
MSE_CLIP_WEIGHT = 4.0


def default_clip_weight(scheme: QuantScheme) -> float:
    """The mse clip weight a scheme gets when none is given."""
    return 1.0 if scheme.symmetric else float(MSE_CLIP_WEIGHT)


class MSEObserver(HistogramObserver):
    """Range minimising the expected quantization error of the histogram on the scheme's grid.

    Each bin is represented by its centre, weighted by its count; the error of a range is
    sum(count * (centre - fake_quant(centre))**2) with the scheme's own scale, zero point
    and [qmin, qmax], where the values that fall outside the range count ``clip_weight``
    times (default: :data:`MSE_CLIP_WEIGHT` on affine schemes, 1 - the plain squared
    error - on symmetric ones; a number given applies to both). So a heavy tail is
    still clipped - cutting it shrinks the step of every other value - while a compact
    histogram, where clipping saves little rounding error, keeps (nearly) its min/max.
    Symmetric schemes and one-sided data search one threshold; two-sided data on an affine
    scheme alternate between the lower and upper end.
    """

    method = "mse"

    def __init__(self, bins: int = 2048, candidates: int = 128, clip_weight: float | None = None) -> None:
        super().__init__(bins)
        self.candidates = max(16, int(candidates))
        try:
            w = float(MSE_CLIP_WEIGHT if clip_weight is None else clip_weight)  # validated now, read in range()
        except (TypeError, ValueError):
            w = math.nan
        if not (math.isfinite(w) and w >= 1.0):
            raise CalibrationError(f"mse clip_weight must be a finite number >= 1, got {clip_weight}",
                                   f"use e.g. clip_weight={MSE_CLIP_WEIGHT:g} (1: plain squared error)")
        self.clip_weight = None if clip_weight is None else w

    def _errors(self, lo: np.ndarray, hi: np.ndarray, c: np.ndarray, n: np.ndarray, scheme,
                weight: float) -> np.ndarray:
        qmin, qmax = scheme.qmin, scheme.qmax
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scale, zp = _scale_zero_point(lo, hi, scheme)
            inv = (1.0 / scale.astype(np.float64)).astype(np.float32)[:, None]
            scale = scale.astype(np.float32)[:, None]
            zp = zp.astype(np.float32)[:, None]
            # float32 is enough to rank candidates and halves the cost of float64
            q = c[None, :] * inv
            np.rint(q, out=q)
            q += zp
            clipped = (q < qmin) | (q > qmax) if weight != 1.0 else None
            np.clip(q, qmin, qmax, out=q)
            q -= zp
            q *= scale
            q -= c[None, :]
            q *= q
            if clipped is not None:
                np.multiply(q, np.float32(weight), out=q, where=clipped)
            out = (q @ n).astype(np.float64)
        return np.where(np.isfinite(out), out, np.inf)  # a scale beyond float32 never wins

    def _search(self, tmax: float, make, c, n, scheme, weight: float) -> float:
        """1-d search of t in (0, tmax] minimising the error of make(t) -> (lo, hi).

        A coarse sweep (linear, plus a geometric tail for heavy-tailed data), then two
        refinements between the neighbours of the best candidate so far.
        """
        k = self.candidates
        t = np.unique(np.concatenate([np.linspace(tmax / k, tmax, k), np.geomspace(tmax * 1e-4, tmax, 32)]))
        e = self._errors(*make(t), c, n, scheme, weight)
        best_t, best_e = float(t[int(np.argmin(e))]), float(e.min())
        for _ in range(2):
            j = int(np.argmin(e))
            a = t[j - 1] if j > 0 else t[j] * 0.5
            b = t[j + 1] if j + 1 < len(t) else t[j]
            t = np.linspace(a, b, 17)
            e = self._errors(*make(t), c, n, scheme, weight)
            if e.min() < best_e:
                best_t, best_e = float(t[int(np.argmin(e))]), float(e.min())
        return best_t

    def range(self, scheme: QuantScheme | None = None, clip_weight: float | None = None) -> tuple[float, float]:
        """The range on `scheme`; `clip_weight` (>= 1) overrides the observer's own for this
        search only (calibrate compares weights on one histogram)."""
        scheme = scheme or _DEFAULT_SCHEME
        if self._empty():
            return 0.0, 0.0
        counts, edges = self.histogram()
        keep = counts > 0
        c = (edges[:-1] * 0.5 + edges[1:] * 0.5)[keep]
        c = np.clip(c, self._min, self._max).astype(np.float32)
        n = counts[keep].astype(np.float32)
        lo0, hi0 = min(self._min, 0.0), max(self._max, 0.0)
        w = next((x for x in (clip_weight, self.clip_weight) if x is not None), None)
        w = default_clip_weight(scheme) if w is None else float(w)
        if scheme.symmetric:
            absmax = max(-lo0, hi0)
            t = self._search(absmax, lambda t: (-t, t), c, n, scheme, w)
            return max(lo0, -t), min(hi0, t)
        if lo0 == 0.0:
            hi = self._search(hi0, lambda t: (np.zeros_like(t), t), c, n, scheme, w)
            return 0.0, hi
        if hi0 == 0.0:
            t = self._search(-lo0, lambda t: (-t, np.zeros_like(t)), c, n, scheme, w)
            return -t, 0.0
        # The search is deterministic: once an end comes back unchanged, the remaining
        # alternations would repeat searches already made, so they are looked up.
        upper, lower = {}, {}
        lo, hi = lo0, hi0
        for _ in range(3):
            if lo not in upper:
                upper[lo] = self._search(hi0, lambda t, lo=lo: (np.full_like(t, lo), t), c, n, scheme, w)
            hi = upper[lo]
            if hi not in lower:
                lower[hi] = -self._search(-lo0, lambda t, hi=hi: (-t, np.full_like(t, hi)), c, n, scheme, w)
            lo = lower[hi]
        return lo, hi


# ---- factory --------------------------------------------------------------------------

OBSERVER_METHODS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def make_observer(method: str, **opts) -> Observer:
    """A new observer: method in minmax, moving_average, percentile, entropy, mse.

    Options: minmax(axis=None); moving_average(momentum=0.9, axis=None);
    percentile(percentile=99.99, bins=2048); entropy(bins=2048, max_candidates=1024);
    mse(bins=2048, candidates=128, clip_weight=None: 4 on affine schemes, 1 on symmetric).
    """
    key = str(method).lower().replace("-", "_")
    aliases = {"kl": "entropy", "max": "minmax", "min_max": "minmax", "ema": "moving_average"}
    key = aliases.get(key, key)
    cls = OBSERVER_METHODS.get(key)
    if cls is None:
        raise CalibrationError(
            f"unknown calibration method {method!r}",
            f"use one of {', '.join(OBSERVER_METHODS)}",
        )
    try:
        return cls(**opts)
    except TypeError as e:
        raise CalibrationError(
            f"bad option for calibration method {key!r}: {e}",
            make_observer.__doc__.split("Options: ")[1].replace("\n", " "),
        ) from None
