"""Data-free activation statistics: per-channel mean, variance and a range for every
tensor, derived from BatchNorm statistics and propagated through the graph.

Where a layer absorbed a BatchNorm (record-bn-stats kept it), its output channel c is
taken as N(beta_c, gamma_c^2) (Nagel et al. 2019, section 4.2: a trained BN's output
statistics describe the data), with the range beta_c +- k gamma_c. Everything else is
propagated from the graph inputs (`input_stats`: mean/std, default N(0, 1)) assuming
independent channels:

- Conv/Gemm/MatMul without BN: mean_o = sum_i w_oi mean_i + b_o, var_o = sum_i w_oi^2 var_i;
- Relu / LeakyRelu / Clip / Sigmoid / HardSigmoid / HardSwish / Tanh / ...: moments by
  Gauss-Hermite quadrature over the Gaussian input, range as f applied to the input range
  (Relu: clipped at 0);
- Add/Sub/Mul/Div with a constant: exact; of two tensors: moments of independent
  variables, range the tighter of interval arithmetic and mean +- k std;
- Concat on the channel axis concatenates channels; pooling, Resize and layout ops keep
  them; ops that mix channels into other axes (Reshape, Transpose...) pool them into one.
- An op none of these rules knows gets its statistics from one ONNX Runtime run on
  synthetic inputs drawn from `input_stats` (reported as "fallback").

Ranges are per channel; a per-tensor quantizer takes min over channels of lo and max of hi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from qcompiler.quant.layers import Layer, bias_vector, bn_stats

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)
_GH_W = _GH_W / _GH_W.sum()

LAYOUT_KEEP = ("MaxPool", "AveragePool", "Resize", "Upsample", "Identity", "Dropout", "Pad",
               "SpaceToDepth", "DepthToSpace")
POOLING = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")
MIXERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "Expand", "Tile",
          "Split", "Cast")


@dataclass
class TStats:
    """Per-channel statistics of a tensor (channel axis `axis`; one channel when pooled)."""

    mean: np.ndarray
    var: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    axis: Optional[int] = 1
    source: str = "propagated"

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.var, 0.0))

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def range(self) -> Tuple[float, float]:
        return float(np.min(self.lo)), float(np.max(self.hi))

    def pooled(self) -> "TStats":
        m = float(np.mean(self.mean))
        v = float(np.mean(self.var + self.mean ** 2) - m * m)
        return TStats(np.array([m]), np.array([max(v, 0.0)]), np.array([float(np.min(self.lo))]),
                      np.array([float(np.max(self.hi))]), None, self.source)

    def channel(self, n: int) -> "TStats":
        """Broadcast a one-channel statistic to n channels."""
        if self.mean.size == n:
            return self
        p = self.pooled() if self.mean.size != 1 else self
        rep = lambda a: np.repeat(a, n)  # noqa: E731
        return TStats(rep(p.mean), rep(p.var), rep(p.lo), rep(p.hi), 1, p.source)


def gaussian(mean, std, k: float, source: str) -> TStats:
    mean = np.asarray(mean, np.float64).reshape(-1)
    std = np.abs(np.asarray(std, np.float64).reshape(-1))
    return TStats(mean, std ** 2, mean - k * std, mean + k * std, 1, source)


def _elementwise(s: TStats, f, monotone: bool = True) -> TStats:
    """f applied to each channel's Gaussian: moments by quadrature, range from the input range."""
    x = s.mean[:, None] + s.std[:, None] * _GH_X[None, :]
    # keep the quadrature nodes inside the input's range where it is known to be narrower
    x = np.clip(x, s.lo[:, None], s.hi[:, None])
    y = f(x)
    m = (y * _GH_W).sum(axis=1)
    v = ((y - m[:, None]) ** 2 * _GH_W).sum(axis=1)
    if monotone:
        a, b = f(s.lo), f(s.hi)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
    else:
        grid = s.lo[:, None] + (s.hi - s.lo)[:, None] * np.linspace(0, 1, 129)[None, :]
        fy = f(grid)
        lo, hi = fy.min(axis=1), fy.max(axis=1)
    return TStats(m, v, lo, hi, s.axis, s.source)


def _attr(node, key, default):
    v = node.attrs.get(key, default)
    return v


def _act_fn(ir, node):
    op = node.op
    if op == "Relu":
        return (lambda x: np.maximum(x, 0.0)), True
    if op == "LeakyRelu":
        a = float(_attr(node, "alpha", 0.01))
        return (lambda x: np.where(x >= 0, x, a * x)), True
    if op == "Clip":
        lo, hi = -np.inf, np.inf
        if "min" in node.attrs:
            lo = float(node.attrs["min"])
        if "max" in node.attrs:
            hi = float(node.attrs["max"])
        if len(node.inputs) > 1 and node.inputs[1].name:
            v = ir.const_value(node.inputs[1])
            if v is None:
                return None, True
            lo = float(v)
        if len(node.inputs) > 2 and node.inputs[2].name:
            v = ir.const_value(node.inputs[2])
            if v is None:
                return None, True
            hi = float(v)
        return (lambda x: np.clip(x, lo, hi)), True
    if op == "Sigmoid":
        return (lambda x: 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))), True
    if op == "Tanh":
        return np.tanh, True
    if op == "HardSigmoid":
        a, b = float(_attr(node, "alpha", 0.2)), float(_attr(node, "beta", 0.5))
        return (lambda x: np.clip(a * x + b, 0.0, 1.0)), True
    if op == "HardSwish":
        return (lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)), False
    if op == "Softplus":
        return (lambda x: np.logaddexp(0.0, x)), True
    if op == "Elu":
        a = float(_attr(node, "alpha", 1.0))
        return (lambda x: np.where(x > 0, x, a * (np.exp(np.minimum(x, 0)) - 1))), True
    if op == "Abs":
        return np.abs, False
    if op == "Neg":
        return (lambda x: -x), True
    if op == "Exp":
        return (lambda x: np.exp(np.clip(x, -60, 60))), True
    return None, True


def _const_channels(ir, c: np.ndarray, rank: Optional[int], axis: Optional[int]) -> Optional[np.ndarray]:
    """A constant operand as one value per channel (scalar -> 1 value), or None if it varies
    along other axes."""
    c = np.asarray(c, np.float64)
    if c.size == 1:
        return c.reshape(1)
    if rank is None or axis is None:
        return None
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if len(shape) != rank:
        return None
    if any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return c.reshape(-1)


def _rank(t) -> Optional[int]:
    return len(t.shape) if t.shape is not None else None


class MomentPropagator:
    def __init__(self, ir, k: float = 6.0, input_stats=None, fallback_batches=None):
        self.ir = ir
        self.k = float(k)
        self.input_stats = input_stats or {}
        self.stats: Dict[str, TStats] = {}
        self.bn = bn_stats(ir)
        self.fallback: List[str] = []
        self._fallback_batches = fallback_batches

    # ---- entry points
    def run(self) -> Dict[str, TStats]:
        ir = self.ir
        for t in ir.graph.inputs:
            self.stats[t.name] = self._input_stats(t)
        pending_fallback = []
        for node in ir.graph.nodes:
            outs = self._node(node)
            if outs is None:
                pending_fallback.append(node)
                continue
            for t, s in zip(node.outputs, outs):
                if t.name and s is not None:
                    self.stats[t.name] = s
        if pending_fallback:
            self._run_fallback(pending_fallback)
        return self.stats

    def _input_stats(self, t) -> TStats:
        spec = self.input_stats.get(t.name, self.input_stats.get("*", None))
        mean, std, rng = 0.0, 1.0, None
        if isinstance(spec, dict):
            mean = spec.get("mean", 0.0)
            std = spec.get("std", 1.0)
            rng = spec.get("range")
        elif spec is not None:
            mean, std = spec
        rank = _rank(t)
        c = 1
        if rank is not None and rank >= 2 and isinstance(t.shape[1], int):
            c = int(t.shape[1])
        mean = np.broadcast_to(np.asarray(mean, np.float64).reshape(-1), (c,)) if np.size(mean) in (1, c) else \
            np.full(c, float(np.mean(mean)))
        std = np.broadcast_to(np.asarray(std, np.float64).reshape(-1), (c,)) if np.size(std) in (1, c) else \
            np.full(c, float(np.mean(std)))
        s = gaussian(mean, std, 3.0, "input")
        if rng is not None:
            s.lo = np.full(c, float(rng[0]))
            s.hi = np.full(c, float(rng[1]))
        return s

    # ---- rules
    def _get(self, t) -> Optional[TStats]:
        if not t.name:
            return None
        s = self.stats.get(t.name)
        if s is not None:
            return s
        v = self.ir.const_value(t)
        if v is not None:
            v = np.asarray(v, np.float64)
            if v.size == 0:
                return None
            m = float(v.mean())
            return TStats(np.array([m]), np.array([float(v.var())]), np.array([float(v.min())]),
                          np.array([float(v.max())]), None, "constant")
        return None

    def _node(self, node):
        ir = self.ir
        op = node.op
        if node.domain not in ("", None):
            return None
        if op in ("Conv", "Gemm", "MatMul") and Layer.supported(ir, node):
            return [self._linear(node)]
        if op == "ConvTranspose" and ir.const_value(node.inputs[1]) is not None:
            return [self._deconv(node)]
        if op == "BatchNormalization":
            return [self._batchnorm(node)] + [None] * (len(node.outputs) - 1)
        x = self._get(node.inputs[0]) if node.inputs else None
        if x is None and op not in ("Concat",):
            return None
        f, monotone = _act_fn(ir, node)
        if f is not None:
            return [_elementwise(x, f, monotone)]
        if op == "PRelu":
            slope = ir.const_value(node.inputs[1])
            if slope is None:
                return None
            sv = _const_channels(ir, slope, _rank(node.outputs[0]), x.axis)
            if sv is None:
                return None
            if sv.size == 1:
                sv = np.broadcast_to(sv, x.mean.shape)
            else:
                x = x.channel(sv.size)
            outs = [_elementwise(_one(x, i), lambda z, a=a: np.where(z >= 0, z, a * z)) for i, a in enumerate(sv)]
            return [_stack(outs, x.axis, x.source)]
        if op in ("Add", "Sub", "Mul", "Div"):
            return [self._binary(node)]
        if op == "Concat":
            return [self._concat(node)]
        if op in LAYOUT_KEEP:
            s = x
            if op == "Pad":
                s = TStats(s.mean, s.var, np.minimum(s.lo, 0.0), np.maximum(s.hi, 0.0), s.axis, s.source)
            if op == "Dropout":
                return [s] + [None] * (len(node.outputs) - 1)
            return [s]
        if op in POOLING:
            if op.startswith("Reduce"):
                axes = node.attrs.get("axes")
                if axes is None and len(node.inputs) > 1 and node.inputs[1].name:
                    v = ir.const_value(node.inputs[1])
                    axes = None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]
                rank = _rank(node.inputs[0])
                if axes is None or rank is None or any((a % rank) in (0, 1) for a in axes) \
                        or not int(node.attrs.get("keepdims", 1)):
                    return [x.pooled()]
            return [x]
        if op == "Flatten":
            return [self._flatten(node, x)]
        if op in MIXERS:
            return [x.pooled()] * len(node.outputs)
        if op == "Softmax":
            n = x.channels
            return [TStats(np.array([1.0 / max(n, 1)]), np.array([0.05]), np.array([0.0]), np.array([1.0]), None,
                           "propagated")]
        return None

    def _linear(self, node) -> TStats:
        layer = Layer(self.ir, node)
        bn = self.bn.get(node.name)
        if bn is not None and bn["mean"].size == layer.cout:
            return gaussian(bn["mean"], bn["std"], self.k, "bn")
        x = self._get(node.inputs[0])
        x = x.channel(layer.cin) if x is not None else gaussian(np.zeros(layer.cin), np.ones(layer.cin), 3.0, "propagated")
        b = bias_vector(self.ir, node, layer.cout) if node.op != "MatMul" else np.zeros(layer.cout)
        mean = layer.apply_to_channel_vector(layer.w, x.mean) + b
        var = layer.apply_to_channel_vector(layer.w ** 2, x.var)
        s = gaussian(mean, np.sqrt(np.maximum(var, 0.0)), self.k, "propagated")
        if node.op == "MatMul":
            rank = _rank(node.outputs[0])
            s.axis = (rank - 1) if rank else None
            if rank and rank != 2:
                return s.pooled()
        return s

    def _deconv(self, node) -> TStats:
        ir = self.ir
        w = np.asarray(ir.const_value(node.inputs[1]), np.float64)  # {Cin, Cout/g, k...}
        g = int(node.attrs.get("group", 1))
        cin, cpg = w.shape[0], w.shape[1]
        cout = cpg * g
        strides = node.attrs.get("strides", [1] * (w.ndim - 2))
        overlap = max(1.0, float(np.prod(w.shape[2:])) / float(np.prod(strides)))
        x = self._get(node.inputs[0])
        x = x.channel(cin) if x is not None else gaussian(np.zeros(cin), np.ones(cin), 3.0, "propagated")
        ws = w.reshape(g, cin // g, cpg, -1)
        mean = np.einsum("gio,gi->go", ws.sum(axis=3), x.mean.reshape(g, -1)).reshape(-1) / overlap
        var = np.einsum("gio,gi->go", (ws ** 2).sum(axis=3), x.var.reshape(g, -1)).reshape(-1) / overlap
        b = np.zeros(cout)
        if len(node.inputs) > 2 and node.inputs[2].name and ir.const_value(node.inputs[2]) is not None:
            b = np.asarray(ir.const_value(node.inputs[2]), np.float64).reshape(-1)
        bn = self.bn.get(node.name)
        if bn is not None and bn["mean"].size == cout:
            return gaussian(bn["mean"], bn["std"], self.k, "bn")
        return gaussian(mean + b, np.sqrt(var), self.k, "propagated")

    def _batchnorm(self, node) -> TStats:
        gamma = self.ir.const_value(node.inputs[1])
        beta = self.ir.const_value(node.inputs[2])
        if gamma is not None and beta is not None:
            return gaussian(beta, gamma, self.k, "bn")
        return self._get(node.inputs[0])

    def _binary(self, node) -> Optional[TStats]:
        ir, op = self.ir, node.op
        a_t, b_t = node.inputs[0], node.inputs[1]
        ca, cb = ir.const_value(a_t), ir.const_value(b_t)
        rank = _rank(node.outputs[0])
        if ca is not None and cb is not None:
            return None
        if cb is not None or ca is not None:
            x = self._get(b_t if ca is not None else a_t)
            c = _const_channels(ir, ca if ca is not None else cb, rank, x.axis if x.axis is not None else 1)
            if c is None:
                c = np.array([float(np.mean(ca if ca is not None else cb))])
                x = x.pooled()
            if c.size > 1 and x.channels != c.size:
                x = x.channel(c.size)
            const_first = ca is not None
            if op == "Add":
                return TStats(x.mean + c, x.var, x.lo + c, x.hi + c, x.axis if x.channels > 1 else None, x.source)
            if op == "Sub":
                if const_first:
                    return TStats(c - x.mean, x.var, c - x.hi, c - x.lo, x.axis, x.source)
                return TStats(x.mean - c, x.var, x.lo - c, x.hi - c, x.axis, x.source)
            if op == "Mul" or (op == "Div" and not const_first):
                m = c if op == "Mul" else 1.0 / np.where(c == 0, np.inf, c)
                a, b = x.lo * m, x.hi * m
                return TStats(x.mean * m, x.var * m * m, np.minimum(a, b), np.maximum(a, b), x.axis, x.source)
            return None  # const / tensor
        xa, xb = self._get(a_t), self._get(b_t)
        if xa is None or xb is None:
            return None
        n = max(xa.channels, xb.channels)
        if xa.channels not in (1, n) or xb.channels not in (1, n):
            xa, xb = xa.pooled(), xb.pooled()
            n = 1
        xa, xb = xa.channel(n), xb.channel(n)
        axis = xa.axis if xa.channels > 1 else xb.axis
        src = "bn" if "bn" in (xa.source, xb.source) else xa.source
        k = self.k
        if op in ("Add", "Sub"):
            sign = 1.0 if op == "Add" else -1.0
            mean = xa.mean + sign * xb.mean
            var = xa.var + xb.var
            if op == "Add":
                ilo, ihi = xa.lo + xb.lo, xa.hi + xb.hi
            else:
                ilo, ihi = xa.lo - xb.hi, xa.hi - xb.lo
            sd = np.sqrt(var)
            lo = np.maximum(ilo, mean - k * sd)
            hi = np.minimum(ihi, mean + k * sd)
            return TStats(mean, var, np.minimum(lo, hi), np.maximum(lo, hi), axis, src)
        if op == "Mul":
            mean = xa.mean * xb.mean
            var = (xa.var + xa.mean ** 2) * (xb.var + xb.mean ** 2) - mean ** 2
            corners = np.stack([xa.lo * xb.lo, xa.lo * xb.hi, xa.hi * xb.lo, xa.hi * xb.hi])
            return TStats(mean, np.maximum(var, 0.0), corners.min(axis=0), corners.max(axis=0), axis, src)
        return None

    def _concat(self, node) -> Optional[TStats]:
        parts = [self._get(t) for t in node.inputs]
        if any(p is None for p in parts):
            return None
        rank = _rank(node.outputs[0])
        axis = int(node.attrs.get("axis", 1))
        if rank is not None:
            axis %= rank
        if axis == 1 and all(p.axis == 1 for p in parts):
            sizes = []
            for t, p in zip(node.inputs, parts):
                c = t.shape[1] if t.shape is not None and isinstance(t.shape[1], int) else p.channels
                sizes.append(c)
            parts = [p.channel(c) for p, c in zip(parts, sizes)]
            cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
            return TStats(cat("mean"), cat("var"), cat("lo"), cat("hi"), 1, parts[0].source)
        pooled = [p.pooled() for p in parts]
        m = float(np.mean([p.mean[0] for p in pooled]))
        v = float(np.mean([p.var[0] + p.mean[0] ** 2 for p in pooled]) - m * m)
        return TStats(np.array([m]), np.array([max(v, 0.0)]), np.array([min(p.lo[0] for p in pooled)]),
                      np.array([max(p.hi[0] for p in pooled)]), None, parts[0].source)

    def _flatten(self, node, x: TStats) -> TStats:
        t = node.inputs[0]
        axis = int(node.attrs.get("axis", 1))
        if axis == 1 and x.axis == 1 and t.shape is not None and all(isinstance(d, int) for d in t.shape[2:]):
            per = int(np.prod(t.shape[2:])) if len(t.shape) > 2 else 1
            rep = lambda a: np.repeat(a, per)  # noqa: E731
            return TStats(rep(x.mean), rep(x.var), rep(x.lo), rep(x.hi), 1, x.source)
        return x.pooled()

    # ---- fallback
    def _run_fallback(self, nodes) -> None:
        """Statistics of outputs the rules do not cover, from one ONNX Runtime run on
        synthetic inputs (N(mean, std) of `input_stats`)."""
        from qcompiler.ir.io import ir_to_model
        from qcompiler.quant.session import session_with_outputs

        names = []
        for n in nodes:
            names.extend(t.name for t in n.outputs if t.name and t.dtype is not None
                         and np.dtype(t.dtype).kind == "f")
        ir = self.ir
        # later nodes whose rules needed a fallback input: recompute them after the run
        batch = self._fallback_batches or [self._synthetic_batch()]
        sess = session_with_outputs(ir_to_model(ir), names)
        acc: Dict[str, List[np.ndarray]] = {n: [] for n in names}
        for b in batch:
            feeds = {k: v for k, v in b.items() if k in {i.name for i in sess.get_inputs()}}
            for name, v in zip(names, sess.run(names, feeds)):
                acc[name].append(np.asarray(v, np.float64))
        for name, vals in acc.items():
            flat = np.concatenate([v.reshape(-1) for v in vals])
            if flat.size == 0:
                continue
            self.stats[name] = TStats(np.array([flat.mean()]), np.array([flat.var()]), np.array([flat.min()]),
                                      np.array([flat.max()]), None, "fallback")
            self.fallback.append(name)
        # propagate again through the nodes after the fallback outputs
        for node in ir.graph.nodes:
            if all(t.name in self.stats for t in node.outputs if t.name):
                continue
            outs = self._node(node)
            if outs is None:
                continue
            for t, s in zip(node.outputs, outs):
                if t.name and s is not None and t.name not in self.stats:
                    self.stats[t.name] = s

    def _synthetic_batch(self) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        feed = {}
        for t in self.ir.graph.inputs:
            shape = [d if isinstance(d, int) and d > 0 else (2 if i == 0 else 64) for i, d in enumerate(t.shape or [])]
            s = self._input_stats(t)
            c = shape[1] if len(shape) > 1 else 1
            mean = np.broadcast_to(s.mean if s.mean.size == c else s.mean[:1], (c,))
            std = np.broadcast_to(s.std if s.std.size == c else s.std[:1], (c,))
            bshape = [1] * len(shape)
            if len(shape) > 1:
                bshape[1] = c
            x = rng.standard_normal(shape) * std.reshape(bshape) + mean.reshape(bshape)
            dt = np.dtype(t.dtype) if t.dtype is not None else np.float32
            feed[t.name] = x.astype(dt)
        return feed


def _one(s: TStats, i: int) -> TStats:
    sl = slice(i, i + 1)
    return TStats(s.mean[sl], s.var[sl], s.lo[sl], s.hi[sl], s.axis, s.source)


def _stack(parts: List[TStats], axis, source) -> TStats:
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
    return TStats(cat("mean"), cat("var"), cat("lo"), cat("hi"), axis, source)


def data_free_stats(ir, k: float = 6.0, input_stats=None) -> Tuple[Dict[str, TStats], List[str]]:
    """Statistics of every tensor of `ir` without data; also the tensors that needed the
    synthetic-input fallback."""
    p = MomentPropagator(ir, k=k, input_stats=input_stats)
    stats = p.run()
    return stats, p.fallback
