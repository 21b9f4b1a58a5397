"""AdaRound in NumPy: learn, per weight, whether to round up or down, by layer-wise
reconstruction on calibration data (Nagel et al., "Up or Down? Adaptive Rounding for
Post-Training Quantization", ICML 2020).

For a layer y = W x with weight grid scale s (per output channel), zero point z and
integer range [qmin, qmax], the soft-quantized weight is

    W~(V) = s * (clip(floor(W / s) + h(V) + z, qmin, qmax) - z)
    h(V)  = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)      zeta = 1.1, gamma = -0.1

(the rectified sigmoid), and V minimises

    ||W~ X - W X||^2 / ||W^ X - W X||^2  +  lam * mean(1 - |2 h(V) - 1|^beta)

where X are the layer's FP32 inputs (im2col rows for a conv), W^ is the weight rounded to
nearest (so the first term starts near 1), and beta is annealed from 20 to 2 after a
warm-up without the regulariser, which drives every h to 0 or 1. Adam updates V; at the
end the rounding is frozen (up where V >= 0). The reconstruction term is evaluated
through the Gram matrix X^T X when the layer has fewer input features than rows, so the
cost per iteration does not depend on the number of rows.

If the frozen rounding reconstructs worse than rounding to nearest, nearest is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["AdaRoundConfig", "LayerResult", "adaround_codes", "LayerView", "layer_view", "RowCollector"]

ZETA, GAMMA = 1.1, -0.1


@dataclass
class AdaRoundConfig:
    iters: int = 1000
    lam: float = 3.0
    lr: float = 0.03
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0


@dataclass
class LayerResult:
    codes: np.ndarray  # [G, O, D] integer codes
    rec_nearest: float  # reconstruction error (mean squared output error) rounding to nearest
    rec_adaround: float  # the same with the learned hard rounding
    iters: int  # iterations run
    improved: bool  # False: nearest kept
    flipped: float  # share of weights rounded the other way than nearest


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip((1.0 / (1.0 + np.exp(-v))) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class _Recon:
    """||W~ Xq - W Xf||^2 / n and its gradient in dW = W~ - W (shape [G, O, D]).

    Xq are the inputs the quantized layer sees, Xf the FP32 ones (None: the same). With
    E = (Xq - Xf) W^T the error is dW Xq + E, evaluated through the Gram matrix Xq^T Xq
    when there are fewer features than rows.
    """

    def __init__(self, xq: np.ndarray, w: Optional[np.ndarray] = None, xf: Optional[np.ndarray] = None):
        g, r, d = xq.shape
        self.rows = r
        self.gram = self.x = self.e = self.m = None
        self.c = 0.0
        xq = xq.astype(np.float32)
        if xf is not None:
            self.e = np.matmul(xq - xf.astype(np.float32), w.transpose(0, 2, 1)).astype(np.float32)  # [G, R, O]
            self.c = float(np.vdot(self.e, self.e))
        if d <= r:
            self.gram = np.matmul(xq.transpose(0, 2, 1), xq)  # [G, D, D]
            if self.e is not None:
                self.m = np.matmul(self.e.transpose(0, 2, 1), xq)  # [G, O, D]
                self.e = None
        else:
            self.x = xq

    def loss_grad(self, dw: np.ndarray, need_grad: bool = True):
        n = float(self.rows * dw.shape[0] * dw.shape[1])
        single = dw.shape[0] == 1  # plain 2-d products are much faster than stacked ones
        if self.gram is not None:
            dh = (dw[0] @ self.gram[0])[None] if single else np.matmul(dw, self.gram)  # [G, O, D]
            if self.m is not None:
                loss = (float(np.vdot(dh, dw)) + 2.0 * float(np.vdot(self.m, dw)) + self.c) / n
                return loss, (2.0 / n) * (dh + self.m) if need_grad else None
            return float(np.vdot(dh, dw)) / n, (2.0 / n) * dh if need_grad else None
        if single:
            e = self.x[0] @ dw[0].T  # [R, O]
            if self.e is not None:
                e = e + self.e[0]
            loss = float(np.vdot(e, e)) / n
            return loss, ((2.0 / n) * (e.T @ self.x[0]))[None] if need_grad else None
        e = np.matmul(self.x, dw.transpose(0, 2, 1))  # [G, R, O]
        if self.e is not None:
            e = e + self.e
        loss = float(np.vdot(e, e)) / n
        return loss, (2.0 / n) * np.matmul(e.transpose(0, 2, 1), self.x) if need_grad else None


def adaround_codes(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
                   x: np.ndarray, cfg: AdaRoundConfig = AdaRoundConfig(), deadline: Optional[float] = None,
                   progress=None, x_fp32: Optional[np.ndarray] = None) -> LayerResult:
    """Learned integer codes for a weight.

    w: [G, O, D] float weights; scale, zero_point: broadcastable to [G, O, 1];
    x: [G, R, D] layer inputs (rows) as the quantized model feeds them; x_fp32: the same
    rows in the FP32 model (the target is W x_fp32; None: x itself). deadline:
    time.perf_counter() value to stop at (the rounding so far is frozen). progress: a
    tqdm-like bar (update(n)) or None.
    """
    w = np.asarray(w, dtype=np.float32)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float32), w.shape[:2] + (1,)).astype(np.float32)
    z = np.broadcast_to(np.asarray(zero_point, dtype=np.float32), w.shape[:2] + (1,)).astype(np.float32)
    rec = _Recon(np.asarray(x, dtype=np.float32), w, x_fp32)
    ws = w / s
    w_floor = np.floor(ws)
    rest = np.clip(ws - w_floor, 0.0, 1.0)
    nearest = np.clip(np.rint(ws) + z, qmin, qmax)

    def codes_of(up: np.ndarray) -> np.ndarray:
        return np.clip(w_floor + up + z, qmin, qmax)

    def rec_of(codes: np.ndarray) -> float:
        return rec.loss_grad(s * (codes - z) - w, need_grad=False)[0]

    rec0 = rec_of(nearest)
    if not rec0 > 0.0 or not np.isfinite(rec0):
        return LayerResult(nearest.astype(np.int64), rec0, rec0, 0, False, 0.0)
    # V such that h(V) equals the fractional part: the soft weight starts at W itself
    p = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1.0 - p)).astype(np.float32)
    m = np.zeros_like(v)
    vv = np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    numel = float(v.size)
    warm = int(cfg.iters * cfg.warmup)
    it = 0
    for it in range(1, cfg.iters + 1):
        sig = 1.0 / (1.0 + np.exp(-v))
        hraw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(hraw, 0.0, 1.0)
        q = w_floor + h + z
        inside = (q >= qmin) & (q <= qmax)
        w_soft = s * (np.clip(q, qmin, qmax) - z)
        loss, g_w = rec.loss_grad(w_soft - w)
        # d/dh of the reconstruction term (normalised by the nearest-rounding error)
        g_h = (g_w * s) * inside / rec0
        if it > warm:
            frac = (it - warm) / max(1, cfg.iters - warm)
            beta = cfg.beta_start + (cfg.beta_end - cfg.beta_start) * frac
            t = 2.0 * h - 1.0
            at = np.abs(t)
            g_h = g_h + (cfg.lam / numel) * (-beta * np.power(at, beta - 1.0) * np.sign(t) * 2.0)
        g_v = g_h * ((hraw > 0.0) & (hraw < 1.0)) * (ZETA - GAMMA) * sig * (1.0 - sig)
        m = b1 * m + (1 - b1) * g_v
        vv = b2 * vv + (1 - b2) * g_v * g_v
        mh = m / (1 - b1 ** it)
        vh = vv / (1 - b2 ** it)
        v = v - cfg.lr * mh / (np.sqrt(vh) + eps)
        if progress is not None:
            progress.update(1)
        if deadline is not None and time.perf_counter() > deadline:
            break
    hard = codes_of((v >= 0).astype(np.float32))
    rec1 = rec_of(hard)
    improved = rec1 < rec0
    codes = hard if improved else nearest
    flipped = float(np.mean(codes != nearest))
    return LayerResult(codes.astype(np.int64), rec0, rec1, it, bool(improved), flipped)


# ---------------------------------------------------------------- layers as [G, O, D]


@dataclass
class LayerView:
    """How a weighted op's weight maps to [G, O, D] and its inputs to rows [G, R, D]."""

    op: str
    groups: int
    weight_shape: Tuple[int, ...]
    kernel: Tuple[int, ...] = ()
    strides: Tuple[int, ...] = ()
    dilations: Tuple[int, ...] = ()
    pads: Tuple[int, ...] = ()  # begin..., end...
    auto_pad: str = "NOTSET"
    trans_w: bool = False  # Gemm transB: weight stored [O, D]
    trans_a: bool = False

    def to_god(self, w: np.ndarray) -> np.ndarray:
        if self.op == "Conv":
            o = w.shape[0]
            return w.reshape(self.groups, o // self.groups, -1)
        w2 = w if self.trans_w else w.T  # [O, D]
        return w2[None]

    def from_god(self, c: np.ndarray) -> np.ndarray:
        if self.op == "Conv":
            return c.reshape(self.weight_shape)
        c2 = c[0]
        return c2 if self.trans_w else c2.T

    def channel_params(self, values: np.ndarray, axis: Optional[int]) -> np.ndarray:
        """Per-output-channel values (scale or zero point) shaped [G, O, 1]."""
        values = np.asarray(values)
        n_out = self.weight_shape[0] if self.op == "Conv" else (
            self.weight_shape[0] if self.trans_w else self.weight_shape[-1])
        if values.size == 1:
            full = np.full(n_out, values.reshape(-1)[0])
        else:
            full = values.reshape(-1)
        return full.reshape(self.groups, -1, 1)

    def rows(self, x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """Up to `count` input rows [G, r, D] sampled from one batch of the layer's input."""
        if self.op != "Conv":
            a = x.T if (self.op == "Gemm" and self.trans_a) else x
            a = a.reshape(-1, a.shape[-1])
            if a.shape[0] > count:
                a = a[rng.choice(a.shape[0], count, replace=False)]
            return a[None].astype(np.float32)
        return self._patches(x, count, rng)

    def _patches(self, x: np.ndarray, count: int, rng) -> np.ndarray:
        sp = len(self.kernel)
        n, c = x.shape[:2]
        size = x.shape[2:]
        pads_b, pads_e = list(self.pads[:sp]) or [0] * sp, list(self.pads[sp:]) or [0] * sp
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads_b, pads_e = [], []
            for i in range(sp):
                out = -(-size[i] // self.strides[i])
                total = max(0, (out - 1) * self.strides[i] + (self.kernel[i] - 1) * self.dilations[i] + 1 - size[i])
                small, big = total // 2, total - total // 2
                pads_b.append(big if self.auto_pad == "SAME_LOWER" else small)
                pads_e.append(small if self.auto_pad == "SAME_LOWER" else big)
        elif self.auto_pad == "VALID":
            pads_b, pads_e = [0] * sp, [0] * sp
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pads_b[i], pads_e[i]) for i in range(sp)])
        outs = [(xp.shape[2 + i] - self.dilations[i] * (self.kernel[i] - 1) - 1) // self.strides[i] + 1
                for i in range(sp)]
        total = n * int(np.prod(outs))
        k = min(count, total)
        flat = rng.choice(total, k, replace=False) if total > k else np.arange(total)
        pos = np.unravel_index(flat, (n,) + tuple(outs))
        # index grids: [k, c, k1, k2, ...]
        idx = [pos[0].reshape((k,) + (1,) * (1 + sp))]
        idx.append(np.arange(c).reshape((1, c) + (1,) * sp))
        for i in range(sp):
            shape = [1] * (2 + sp)
            shape[2 + i] = self.kernel[i]
            off = (np.arange(self.kernel[i]) * self.dilations[i]).reshape(shape)
            start = (pos[1 + i] * self.strides[i]).reshape((k,) + (1,) * (1 + sp))
            idx.append(start + off)
        patches = xp[tuple(idx)]  # [k, c, k1, ...]
        g = self.groups
        cg = c // g
        patches = patches.reshape(k, g, cg * int(np.prod(self.kernel)))
        return patches.transpose(1, 0, 2).astype(np.float32)


def layer_view(node, w: np.ndarray, x_shape=None) -> Tuple[Optional[LayerView], str]:
    """The view of a weighted node, or (None, why it is not supported)."""
    a = node.attrs
    if node.op == "Conv":
        if w.ndim not in (3, 4):
            return None, f"{w.ndim - 2}-d convolutions are not supported"
        sp = w.ndim - 2
        kernel = tuple(int(k) for k in (a.get("kernel_shape") or w.shape[2:]))
        return LayerView("Conv", int(a.get("group", 1)), tuple(w.shape), kernel,
                         tuple(int(s) for s in (a.get("strides") or [1] * sp)),
                         tuple(int(d) for d in (a.get("dilations") or [1] * sp)),
                         tuple(int(p) for p in (a.get("pads") or [0] * (2 * sp))),
                         str(a.get("auto_pad", "NOTSET") or "NOTSET")), ""
    if node.op == "Gemm":
        if w.ndim != 2:
            return None, "Gemm weight is not 2-d"
        return LayerView("Gemm", 1, tuple(w.shape), trans_w=bool(a.get("transB", 0)),
                         trans_a=bool(a.get("transA", 0))), ""
    if node.op == "MatMul":
        if w.ndim != 2:
            return None, "batched MatMul weights are not supported"
        return LayerView("MatMul", 1, tuple(w.shape)), ""
    return None, f"{node.op} is not supported by AdaRound (nearest rounding kept)"


class RowCollector:
    """Streams batches of a layer input and keeps a bounded random sample of rows; with a
    second (FP32) tensor, the same rows of both."""

    def __init__(self, view: LayerView, max_rows: int, per_batch: int, seed: int = 0):
        self.view = view
        self.max_rows = max_rows
        self.per_batch = per_batch
        self.rng = np.random.default_rng(seed)
        self.parts: List[np.ndarray] = []
        self.parts_fp: List[np.ndarray] = []
        self.count = 0

    def update(self, value: np.ndarray, fp32: Optional[np.ndarray] = None) -> None:
        left = self.max_rows - self.count
        if left <= 0:
            return
        k = min(left, self.per_batch)
        seed = int(self.rng.integers(1 << 62))
        rows = self.view.rows(np.asarray(value, dtype=np.float32), k, np.random.default_rng(seed))
        self.parts.append(rows)
        if fp32 is not None:
            self.parts_fp.append(self.view.rows(np.asarray(fp32, dtype=np.float32), k, np.random.default_rng(seed)))
        self.count += rows.shape[1]

    def rows(self) -> np.ndarray:
        return np.concatenate(self.parts, axis=1) if self.parts else np.zeros((self.view.groups, 0, 0), np.float32)

    def rows_fp32(self) -> Optional[np.ndarray]:
        return np.concatenate(self.parts_fp, axis=1) if self.parts_fp else None


def fake_quant_model(model, act_qparams: Dict[str, object], weights: Dict[str, np.ndarray], suffix: str = "__fq"):
    """A copy of an FP32 model whose activations in `act_qparams` pass through
    QuantizeLinear -> DequantizeLinear (every consumer reads `name + suffix`) and whose
    initializers in `weights` are replaced (by their dequantized integer values)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for init in g.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(np.asarray(weights[init.name], dtype=np.float32), init.name))
    new_nodes = []
    for name, qp in act_qparams.items():
        zp = np.asarray(qp.zero_point)
        if qp.dtype in ("int4", "uint4"):
            import ml_dtypes

            zp = zp.astype(ml_dtypes.int4 if qp.dtype == "int4" else ml_dtypes.uint4)
        sc = numpy_helper.from_array(np.asarray(qp.scale, dtype=np.float32), name + suffix + "_scale")
        zpt = numpy_helper.from_array(zp, name + suffix + "_zp")
        g.initializer.extend([sc, zpt])
        new_nodes.append(helper.make_node("QuantizeLinear", [name, sc.name, zpt.name], [name + suffix + "_q"],
                                          name=name + suffix + "_Q"))
        new_nodes.append(helper.make_node("DequantizeLinear", [name + suffix + "_q", sc.name, zpt.name],
                                          [name + suffix], name=name + suffix + "_DQ"))
    for node in g.node:
        for i, inp in enumerate(node.input):
            if inp in act_qparams:
                node.input[i] = inp + suffix
    # producers come before their Q/DQ: put each pair right after the tensor is made
    made_by = {}
    for idx, node in enumerate(g.node):
        for o in node.output:
            made_by[o] = idx
    order: Dict[int, list] = {}
    for i in range(0, len(new_nodes), 2):
        src = new_nodes[i].input[0]
        order.setdefault(made_by.get(src, -1), []).extend(new_nodes[i:i + 2])
    nodes = list(order.get(-1, []))
    for idx, node in enumerate(g.node):
        nodes.append(node)
        nodes.extend(order.get(idx, []))
    del g.node[:]
    g.node.extend(nodes)
    return m


def summarize(results: Dict[str, LayerResult]) -> Dict[str, float]:
    if not results:
        return {}
    gains = [r.rec_nearest / r.rec_adaround for r in results.values() if r.improved and r.rec_adaround > 0]
    return {"layers": len(results), "improved": sum(r.improved for r in results.values()),
            "median_error_ratio": round(float(np.median(gains)), 3) if gains else None}
