"""Sensitivity analysis: which layers hurt when quantized, and why.

For every kernel of the quantization plan (a layer: Conv+Relu, Add, Concat, ...):

- only:    the output error (MSE, cosine, SQNR against FP32) when only that kernel is
           quantized and every other kernel stays float;
- all-but: the error when every kernel but that one is quantized, and the gain in
           SQNR over the full INT8 model that keeping it float would bring.

Both come from one calibration (VariantBuilder) and a few evaluation batches. The
sensitivity score of a layer is the larger of its own relative error power (only) and the
error power that keeping it float removes (all-but), shown in dB as
`sensitivity_db` = -10 log10(score): lower is more sensitive. Layers are ranked by it.

Range statistics of every quantized activation (and of the inputs of Add/Concat) come
from one pass over the calibration batches: min, max, mean, std, the 99.99th percentile
of |x| and a histogram. Flags for abnormal layers (thresholds in THRESHOLDS):

- weight_channel_range: a weighted layer's per-output-channel weight range
  (max |w| per channel, after BN folding) has max/median above 32 (trained nets we
  measured stay below 28: PP-LCNet orientation 27.8, PP-OCR cls 10.6): a per-tensor weight
  grid wastes most of its codes on a few channels; per-channel grids cope, but the
  activation downstream usually carries the same imbalance (equalization fixes both);
- activation_outliers: max |x| over the 99.99th percentile of |x| above 8: a few values
  stretch the range; a percentile or MSE calibration clips them;
- activation_channel_range: one channel of an activation reaches far more than the others
  (max |x| per channel: the largest over the median of the non-zero channels, above 32;
  the real nets we measured stay below 20 on 64 calibration samples: PP-LCNet orientation
  19.0, PP-OCRv4 det 15.1, PP-OCR cls 9.4):
  the per-tensor activation grid is set by that channel and leaves the others a few codes.
  Keeping the layers on both sides of the tensor float fixes it (mixed precision), and so
  does cross-layer equalization where only a Relu (or nothing) separates two weighted
  layers. The channel axis is 1 (NCHW) for tensors of rank 4 and more, and for rank 3 in
  graphs with 1-d convolutions; otherwise the last axis ([batch, tokens, channels]);
- input_range_mismatch: the inputs of an Add or Concat differ in range (max |x|) by more
  than 8x: a shared scale drowns the small input's resolution.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from qcompiler.analysis.evaluate import finite_or_none
from qcompiler.quant.layers import Layer, node_map
from qcompiler.precision.variants import VariantBuilder

THRESHOLDS = {"weight_channel_range": 32.0, "activation_outliers": 8.0, "activation_channel_range": 32.0,
              "input_range_mismatch": 8.0}
#: channels a tensor needs (with a non-zero range) before its channel spread is judged
MIN_CHANNELS = 4


def _rel_noise(sqnr_db: float) -> float:
    if sqnr_db is None or math.isinf(sqnr_db) and sqnr_db > 0:
        return 0.0
    if math.isinf(sqnr_db):
        return float("inf")
    return 10.0 ** (-sqnr_db / 10.0)


def _db(noise: float) -> float:
    if noise <= 0:
        return float("inf")
    return -10.0 * math.log10(noise)


def _short(m: Dict) -> Dict:
    return {"sqnr_db": finite_or_none(m["sqnr_db"]), "cosine": m["cosine"], "mse": m["mse"],
            **({"metric": m["metric"], "metric_drop": m["metric_drop"]} if "metric" in m else {})}


# ----------------------------------------------------------------------------- statistics


def _channel_axis(ndim: int, ncl: bool) -> Optional[int]:
    """The channel axis of an activation of rank `ndim`: 1 for NCHW-like tensors (rank 4
    and more; rank 3 when the graph has 1-d convolutions, `ncl`), else the last axis."""
    if ndim >= 4 or (ndim == 3 and ncl):
        return 1
    if ndim in (2, 3):
        return ndim - 1
    return None


class _TensorStats:
    def __init__(self, ncl: bool = False):
        from qcompiler.quant.observers import HistogramObserver

        self.h = HistogramObserver(bins=2048)
        self.n = 0
        self.s = 0.0
        self.ss = 0.0
        self.ncl = ncl
        self.chan: Optional[np.ndarray] = None  # max |x| per channel
        self.chan_ok = True

    def update(self, v):
        v = np.asarray(v, np.float64)
        fin = v[np.isfinite(v)]
        self.h.update(fin)
        self.n += fin.size
        self.s += float(fin.sum())
        self.ss += float((fin * fin).sum())
        axis = _channel_axis(v.ndim, self.ncl)
        if self.chan_ok and axis is not None and v.size and v.shape[axis] >= 2:
            a = np.moveaxis(np.where(np.isfinite(v), np.abs(v), 0.0), axis, 0).reshape(v.shape[axis], -1).max(axis=1)
            if self.chan is None:
                self.chan = a
            elif self.chan.shape == a.shape:
                self.chan = np.maximum(self.chan, a)
            else:  # the channel count changes between batches: no per-channel view
                self.chan, self.chan_ok = None, False

    def channel_result(self) -> Dict:
        c = self.chan
        if c is None:
            return {}
        live = c[c > 0]
        if live.size < MIN_CHANNELS:
            return {"channels": int(c.size)}
        med = float(np.median(live))
        return {"channels": int(c.size), "channel_max": float(c.max()), "channel_median": med,
                "channel_argmax": int(np.argmax(c)), "channel_ratio": float(c.max() / med)}

    def result(self) -> Dict:
        st = self.h.stats
        if not self.n:
            return {"count": 0}
        counts, edges = self.h.histogram()
        absmax = max(abs(st.min), abs(st.max))
        p = _abs_quantile(counts, edges, 0.9999)
        mean = self.s / self.n
        return {"count": self.n, "min": st.min, "max": st.max, "mean": mean,
                "std": math.sqrt(max(self.ss / self.n - mean * mean, 0.0)), "absmax": absmax,
                "p9999_abs": p, "outlier_ratio": (absmax / p) if p > 0 else (1.0 if absmax == 0 else float("inf")),
                **self.channel_result(), "hist": (counts, edges)}


def _abs_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    if counts.size == 0 or counts.sum() == 0:
        return 0.0
    centers = 0.5 * (edges[:-1] + edges[1:])
    a = np.abs(centers)
    order = np.argsort(a)
    cum = np.cumsum(counts[order])
    i = int(np.searchsorted(cum, q * cum[-1], side="left"))
    i = min(i, len(order) - 1)
    return float(a[order[i]] + 0.5 * (edges[1] - edges[0]))


def tensor_statistics(vb: VariantBuilder, names: List[str], batches: int = 8) -> Dict[str, Dict]:
    from qcompiler.ir import ir_to_model
    from qcompiler.quant.session import session_with_outputs

    names = [n for n in dict.fromkeys(names)]
    if not names or vb.calib_data is None:
        return {}
    sess = session_with_outputs(ir_to_model(vb.fp32_ir), names)
    inputs = {i.name for i in sess.get_inputs()}
    ncl = _has_conv1d(vb.fp32_ir)
    acc = {n: _TensorStats(ncl) for n in names}
    for b in vb.calib_data[:batches]:
        outs = sess.run(names, {k: v for k, v in b.items() if k in inputs})
        for n, v in zip(names, outs):
            acc[n].update(v)
    return {n: a.result() for n, a in acc.items()}


def _has_conv1d(ir) -> bool:
    for n in ir.graph.nodes:
        if n.op in ("Conv", "ConvTranspose") and len(n.inputs) > 1:
            w = n.inputs[1]
            shape = getattr(w, "shape", None)
            if shape is not None and len(shape) == 3:
                return True
    return False


def weight_statistics(vb: VariantBuilder) -> Dict[str, Dict]:
    ir = vb.fp32_ir
    nodes = node_map(ir)
    out = {}
    for k in vb.kernels:
        if k.weight is None:
            continue
        node = nodes.get(k.nodes[0])
        if node is None or not Layer.supported(ir, node):
            continue
        r = Layer(ir, node).out_ranges()
        med = float(np.median(r))
        out[k.name] = {"channels": int(r.size), "max": float(r.max()), "median": med, "min": float(r.min()),
                       "ratio": float(r.max() / med) if med > 0 else float("inf"), "ranges": r}
    return out


# ----------------------------------------------------------------------------- analysis


def analyze(model, target, calib, options: Optional[Dict] = None, eval_batches: int = 4,
            calib_batches: Optional[int] = None, layers: str = "all", metric: Optional[Callable] = None,
            progress: Optional[Callable[[str], None]] = None, thresholds: Optional[Dict] = None,
            builder: Optional[VariantBuilder] = None, eval_data=None) -> Dict:
    """Per-layer sensitivity, range statistics and abnormal-layer flags. Returns a dict
    (see module docstring); `write_reports` turns it into JSON, Markdown and plots.
    Variants are evaluated on `eval_data` (a list or iterable of batches, all used) when
    given, else on the first `eval_batches` calibration batches."""
    t0 = time.perf_counter()
    th = dict(THRESHOLDS)
    th.update(thresholds or {})
    vb = builder or VariantBuilder(model, target, calib, options=options, eval_batches=eval_batches,
                                   calib_batches=calib_batches, metric=metric, eval_data=eval_data)
    kernels = [k for k in vb.kernels if layers == "all" or k.weight is not None]
    all_names = [k.name for k in vb.kernels]
    base = vb.evaluate([])
    fp32_noise = 0.0
    base_noise = _rel_noise(base["sqnr_db"])
    from qcompiler.analysis.bitops import mac_counts

    macs = mac_counts(vb.fp32_model(), vb.eval_data[0])
    rows = []
    for i, k in enumerate(kernels):
        if progress:
            progress(f"[{i + 1}/{len(kernels)}] {k.name}")
        only = vb.evaluate([n for n in all_names if n != k.name])
        allbut = vb.evaluate([k.name])
        n_only = _rel_noise(only["sqnr_db"])
        n_gain = max(base_noise - _rel_noise(allbut["sqnr_db"]), 0.0)
        score = max(n_only - fp32_noise, n_gain)
        rows.append({"kernel": k.name, "op": k.op, "pattern": k.pattern, "nodes": list(k.nodes),
                     "tensors": list(k.inputs) + [k.output],
                     "macs": int(sum(macs.get(n, 0) for n in k.nodes)),
                     "only": _short(only), "all_but": _short(allbut),
                     "gain_db": finite_or_none(allbut["sqnr_db"] - base["sqnr_db"])
                     if math.isfinite(allbut["sqnr_db"]) and math.isfinite(base["sqnr_db"]) else None,
                     "score": score, "sensitivity_db": finite_or_none(_db(score)), "flags": []})
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["score"])
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank

    # ---- statistics and flags
    ir = vb.fp32_ir
    stat_names = list(vb.plan.tensors)
    mixers = [n for n in ir.graph.nodes if n.op in ("Add", "Concat", "Sum")]
    for n in mixers:
        stat_names.extend(t.name for t in n.inputs if t.name and not ir.is_const(t))
    tstats = tensor_statistics(vb, stat_names, batches=max(eval_batches, 8))
    wstats = weight_statistics(vb)
    flags = []
    by_kernel = {r["kernel"]: r for r in rows}
    for kname, ws in wstats.items():
        if ws["ratio"] > th["weight_channel_range"]:
            f = {"kind": "weight_channel_range", "where": kname, "value": ws["ratio"],
                 "threshold": th["weight_channel_range"],
                 "message": f"per-channel weight ranges of {kname} span {ws['ratio']:.0f}x (max/median)"}
            flags.append(f)
            if kname in by_kernel:
                by_kernel[kname]["flags"].append("weight_channel_range")
    kernel_of_tensor: Dict[str, List[str]] = {}
    for k in vb.kernels:
        for t in list(k.inputs) + [k.output]:
            kernel_of_tensor.setdefault(t, []).append(k.name)
    for tname in vb.plan.tensors:
        st = tstats.get(tname)
        if not st or not st.get("count"):
            continue
        if st["outlier_ratio"] > th["activation_outliers"]:
            flags.append({"kind": "activation_outliers", "where": tname, "value": st["outlier_ratio"],
                          "threshold": th["activation_outliers"],
                          "message": f"{tname}: max |x| {st['absmax']:.3g} is {st['outlier_ratio']:.1f}x its "
                                     f"99.99th percentile {st['p9999_abs']:.3g}"})
            for kn in kernel_of_tensor.get(tname, []):
                if kn in by_kernel and "activation_outliers" not in by_kernel[kn]["flags"]:
                    by_kernel[kn]["flags"].append("activation_outliers")
        if st.get("channel_ratio", 0.0) > th["activation_channel_range"]:
            users = kernel_of_tensor.get(tname, [])
            flags.append({"kind": "activation_channel_range", "where": tname, "value": st["channel_ratio"],
                          "threshold": th["activation_channel_range"], "kernels": list(users),
                          "message": f"{tname}: channel {st['channel_argmax']} of {st['channels']} reaches "
                                     f"{st['channel_max']:.3g}, {st['channel_ratio']:.0f}x the median channel "
                                     f"({st['channel_median']:.3g})" + (f"; written/read by {', '.join(users)}"
                                                                          if users else "")})
            for kn in users:
                if kn in by_kernel and "activation_channel_range" not in by_kernel[kn]["flags"]:
                    by_kernel[kn]["flags"].append("activation_channel_range")
    for n in mixers:
        ins = [t.name for t in n.inputs if t.name in tstats and tstats[t.name].get("count")]
        if len(ins) < 2:
            continue
        r = [tstats[t]["absmax"] for t in ins]
        lo, hi = min(r), max(r)
        ratio = hi / lo if lo > 0 else float("inf")
        if ratio > th["input_range_mismatch"]:
            flags.append({"kind": "input_range_mismatch", "where": n.name, "value": ratio,
                          "threshold": th["input_range_mismatch"],
                          "message": f"{n.op} {n.name}: input ranges differ {ratio:.1f}x "
                                     + ", ".join(f"{t}={v:.3g}" for t, v in zip(ins, r))})
            for k in vb.kernels:
                if n.name in k.nodes and k.name in by_kernel:
                    by_kernel[k.name]["flags"].append("input_range_mismatch")
    result = {
        "model": getattr(model, "name", None) if not isinstance(model, (str, Path)) else str(model),
        "target": getattr(vb.target, "name", str(vb.target)),
        "calibration": "data-free (BN statistics)" if vb.data_free else vb.options.get("calib_method", "minmax"),
        "eval_batches": len(vb.eval_data),
        "evaluation": "ONNX Runtime, basic optimizations (Q/DQ simulated in float)",
        "baseline": _short(base),
        "layers": rows,
        "ranking": [rows[i]["kernel"] for i in order],
        "flags": flags,
        "thresholds": th,
        "tensors": {k: {kk: vv for kk, vv in v.items() if kk != "hist"} for k, v in tstats.items()},
        "weights": {k: {kk: vv for kk, vv in v.items() if kk != "ranges"} for k, v in wstats.items()},
        "float_reasons": dict(vb.plan.float_reasons),
        "evaluations": vb.evaluations,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    result["_hist"] = {k: v["hist"] for k, v in tstats.items() if "hist" in v}
    result["_wranges"] = {k: v["ranges"] for k, v in wstats.items()}
    result["_ranges"] = dict(vb.ranges)
    return result


def _channel_gains(ir, node, t_name: str):
    """For a Conv / MatMul / Gemm reading activation `t_name` with a constant weight: the
    axis of the input channels in the activation, the axis of the output channels in the
    node's output, and per input channel c the energy gain sum_o,k W[o, c, k]^2 (white
    noise of variance v_c in channel c leaves v_c * gain_c in every output position)."""
    if not node.inputs or node.inputs[0].name != t_name or len(node.inputs) < 2:
        return None
    w = ir.const_value(node.inputs[1])
    if w is None or w.ndim < 2:
        return None
    w = np.asarray(w, np.float64)
    if node.op == "Conv":
        g = int(node.attrs.get("group", 1))
        o, ig = w.shape[0], w.shape[1]
        gains = np.square(w).reshape(g, o // g, ig, -1).sum(axis=(1, 3)).reshape(-1)
        return 1, 1, gains
    if node.op == "MatMul" and w.ndim == 2:
        return -1, -1, np.square(w).sum(axis=1)
    if node.op == "Gemm" and not int(node.attrs.get("transA", 0)):
        wt = w.T if int(node.attrs.get("transB", 0)) else w
        return -1, -1, np.square(wt).sum(axis=1)
    return None


def local_ranking(vb: VariantBuilder, layers: str = "all") -> Dict:
    """A ranking without variant builds, for the mixed-precision search: each kernel's
    quantization noise measured where it arises, one weighted layer on. One FP32 run over
    the evaluation batches gives every quantized tensor x; its noise d = fake_quant(x) - x
    (calibrated QParams) counts relative to the signal, |d|^2 / |x|^2, and, where a
    Conv / MatMul / Gemm reads x, as that layer's output sees it: per input channel the
    noise energy times the channel's weight energy, over the layer's output energy (an
    outlier channel that the next layer divides back down makes the other channels'
    noise count, which |d|^2 / |x|^2 hides). A weighted kernel adds |W_q - W|^2 / |W|^2.
    A kernel's score is the sum over the tensors it quantizes (inputs, output) and its
    weight: the noise an only-this-layer variant injects, before it propagates to the
    outputs. It only orders the candidates: the search measures every candidate."""
    from qcompiler.quant.qparams import fake_quant
    from qcompiler.quant.session import session_with_outputs

    t0 = time.perf_counter()
    ir = vb.full_ir
    fir = vb.fp32_ir
    qps = ir.ann.qparams
    quantized = set(vb.plan.tensors)
    names = [t for t in vb.plan.tensors if t in qps]
    ftensors = fir.tensors()
    readers = {}  # tensor -> [(output name, in axis, out axis, gains)]
    for t in names:
        ft = ftensors.get(t)
        for node in (list(ft.outputs) if ft is not None else []):
            cg = _channel_gains(fir, node, t) if node.op in ("Conv", "MatMul", "Gemm") else None
            if cg is not None and node.outputs:
                readers.setdefault(t, []).append((node.outputs[0].name,) + cg)
    extra = [r[0] for rs in readers.values() for r in rs if r[0] not in names]
    fetch = names + list(dict.fromkeys(extra))
    sig = dict.fromkeys(names, 0.0)
    err = dict.fromkeys(names, 0.0)
    prop_err: Dict[tuple, float] = {}
    prop_sig: Dict[tuple, float] = {}
    if names:
        sess = session_with_outputs(fir, fetch)
        inputs = {i.name for i in sess.get_inputs()}
        for b in vb.eval_data:
            vals = dict(zip(fetch, sess.run(fetch, {k: x for k, x in b.items() if k in inputs})))
            for n in names:
                v = np.asarray(vals[n], np.float32)
                d = fake_quant(v, qps[n]).astype(np.float64) - v
                sig[n] += float(np.sum(np.square(v, dtype=np.float64)))
                err[n] += float(np.sum(d * d))
                for out, ax_in, ax_out, gains in readers.get(n, ()):
                    if d.ndim < 2 or d.shape[ax_in] != gains.size:
                        continue
                    e_c = np.moveaxis(d * d, ax_in, 0).reshape(gains.size, -1)
                    v_c = e_c.sum(axis=1) / e_c.shape[1]  # noise variance per input channel
                    y = np.asarray(vals[out], np.float64)
                    positions = y.size / y.shape[ax_out]
                    key = (n, out)
                    prop_err[key] = prop_err.get(key, 0.0) + positions * float(np.dot(v_c, gains))
                    prop_sig[key] = prop_sig.get(key, 0.0) + float(np.sum(y * y))
    rel = {n: (err[n] / sig[n] if sig[n] > 0 else (0.0 if err[n] == 0 else float("inf"))) for n in names}
    for (n, _), e in prop_err.items():
        ps = prop_sig[(n, _)]
        rel[n] = max(rel[n], e / ps if ps > 0 else float("inf"))
    tensors = ir.tensors()
    rows = []
    for k in vb.kernels:
        if layers != "all" and k.weight is None:
            continue
        own = [t for t in dict.fromkeys(list(k.inputs) + [k.output]) if t in quantized and t in rel]
        noise = sum(rel[t] for t in own)
        w_noise = None
        if k.weight is not None and k.weight in qps and k.weight in tensors:
            w = ir.const_value(tensors[k.weight])
            if w is not None and np.any(w):
                w = np.asarray(w, np.float32)
                d = fake_quant(w, qps[k.weight]).astype(np.float64) - w
                w_noise = float(np.sum(d * d) / np.sum(np.square(w, dtype=np.float64)))
                noise += w_noise
        rows.append({"kernel": k.name, "op": k.op, "score": noise, "sensitivity_db": finite_or_none(_db(noise)),
                     "local": {t: finite_or_none(_db(rel[t])) for t in own},
                     "weight_db": None if w_noise is None else finite_or_none(_db(w_noise))})
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["score"])
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank
    return {"layers": rows, "ranking": [rows[i]["kernel"] for i in order], "method": "local",
            "seconds": round(time.perf_counter() - t0, 2)}


def load_analysis(src) -> Dict:
    """An analysis to reuse: the dict `analyze` returned, or the path of the analysis.json
    that `write_reports` / `qcompiler analyze --out` wrote (scores that JSON could not hold,
    infinite ones, come back as infinite)."""
    from qcompiler.errors import UsageError

    if isinstance(src, dict):
        res = src
    else:
        p = Path(src)
        if p.is_dir():
            p = p / "analysis.json"
        try:
            res = json.loads(p.read_text())
        except OSError as e:
            raise UsageError(f"cannot read the analysis '{p}': {e.strerror or e}",
                             "give the analysis.json written by 'qcompiler analyze --out DIR'") from None
        except ValueError as e:
            raise UsageError(f"the analysis '{p}' is not JSON: {e}",
                             "give the analysis.json written by 'qcompiler analyze --out DIR'") from None
    if not isinstance(res, dict) or not isinstance(res.get("layers"), list) or not isinstance(res.get("ranking"), list):
        raise UsageError("the analysis has no 'layers' and 'ranking'",
                         "give the analysis.json written by 'qcompiler analyze --out DIR'")
    for r in res["layers"]:
        if r.get("score") is None:
            r["score"] = float("inf")
    return res


def check_analysis(res: Dict, vb: VariantBuilder) -> None:
    """Refuse an analysis of another quantization plan (layers that are not layers here).
    One made for another target with the same layers is used, with a warning: the ranking
    only orders the candidates, every candidate is still measured against the budget."""
    import logging

    from qcompiler.errors import UsageError

    tname = getattr(vb.target, "name", str(vb.target))
    kernels = {k.name for k in vb.kernels}
    foreign = [r["kernel"] for r in res["layers"] if r.get("kernel") not in kernels]
    if foreign:
        raise UsageError(f"the analysis does not match this model's quantization plan: {len(foreign)} of its "
                         f"{len(res['layers'])} layers are not layers here (e.g. '{foreign[0]}')",
                         "run qcompiler analyze on the same model, target and options")
    if res.get("target") not in (None, tname):
        logging.getLogger("qcompiler").warning(
            "the analysis was made for target '%s', this build is for '%s': its layer ranking is used as it is",
            res["target"], tname)


# ----------------------------------------------------------------------------- output


def _fmt(v, nd=2):
    if v is None:
        return "inf"
    return f"{v:.{nd}f}"


def format_table(res: Dict, top: Optional[int] = 20) -> str:
    b = res["baseline"]
    lines = [f"full INT8 ({res['target']}): SQNR {_fmt(b['sqnr_db'])} dB, cosine {b['cosine']:.5f} "
             f"on {res['eval_batches']} batches"]
    hdr = f"{'rank':>4}  {'layer':<44} {'op':<6} {'only SQNR':>9} {'all-but':>8} {'gain':>6} {'cos only':>9}  flags"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    rows = sorted(res["layers"], key=lambda r: r["rank"])
    for r in rows[: top or len(rows)]:
        lines.append(f"{r['rank']:>4}  {r['kernel'][:44]:<44} {r['op'][:6]:<6} {_fmt(r['only']['sqnr_db']):>9} "
                     f"{_fmt(r['all_but']['sqnr_db']):>8} {_fmt(r['gain_db']):>6} {r['only']['cosine']:>9.5f}  "
                     f"{','.join(r['flags'])}")
    if top and len(rows) > top:
        lines.append(f"... {len(rows) - top} more layers in the JSON report")
    if res["flags"]:
        lines.append("abnormal layers:")
        for f in res["flags"][:20]:
            lines.append(f"  [{f['kind']}] {f['message']}")
    return "\n".join(lines)


def public(res: Dict) -> Dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def to_json(res: Dict) -> str:
    return json.dumps(_clean(public(res)), indent=2, default=_json_default)


# What `write_reports` may write into its folder (fnmatch patterns), for the output check.
REPORT_FILES = ("analysis.json", "analysis.md", "sensitivity.png", "ranges_[0-9][0-9].png")


def write_reports(res: Dict, out_dir, plots: bool = True, worst: int = 4) -> Dict[str, str]:
    """analysis.json, analysis.md and (with matplotlib) PNG plots in out_dir."""
    from qcompiler.outputs import write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "analysis.json"), "markdown": str(out / "analysis.md")}
    write_text(out / "analysis.json", to_json(res) + "\n")
    images: List[str] = []
    if plots:
        from qcompiler.analysis.plots import plot_histograms, plot_sensitivity

        images.append(plot_sensitivity(res, out / "sensitivity.png"))
        images.extend(plot_histograms(res, out, worst=worst))
        files["plots"] = images
    write_text(out / "analysis.md", markdown(res, [Path(i).name for i in images]))
    return files


def markdown(res: Dict, images: List[str] = ()) -> str:
    b = res["baseline"]
    lines = [f"# Quantization sensitivity: {res.get('model') or 'model'}", "",
             f"- target: `{res['target']}`, calibration: {res['calibration']}",
             f"- evaluation: {res['evaluation']}, {res['eval_batches']} batches",
             f"- full INT8: SQNR **{_fmt(b['sqnr_db'])} dB**, cosine {b['cosine']:.5f}, MSE {b['mse']:.3g}",
             f"- {len(res['layers'])} layers, {res['evaluations']} variant builds, {res['seconds']} s", "",
             "Per layer: *only* = only this layer quantized; *all-but* = every layer but this one "
             "quantized; *gain* = SQNR gained over full INT8 by keeping it float. Ranked by "
             "sensitivity (the larger of its own error and the error it removes when kept float).", ""]
    for img in images:
        if img.startswith("sensitivity"):
            lines += [f"![per-layer sensitivity]({img})", ""]
    lines += ["| rank | layer | op | MACs | only SQNR (dB) | only cosine | all-but SQNR (dB) | gain (dB) | flags |",
              "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in sorted(res["layers"], key=lambda r: r["rank"]):
        lines.append(f"| {r['rank']} | `{r['kernel']}` | {r['op']} | {r['macs']:,} | {_fmt(r['only']['sqnr_db'])} | "
                     f"{r['only']['cosine']:.5f} | {_fmt(r['all_but']['sqnr_db'])} | {_fmt(r['gain_db'])} | "
                     f"{', '.join(r['flags'])} |")
    lines += ["", "## Abnormal layers", ""]
    th = res["thresholds"]
    lines += [f"Thresholds: weight channel range max/median > {th['weight_channel_range']:g}; activation "
              f"max |x| / p99.99 |x| > {th['activation_outliers']:g}; activation channel range max/median > "
              f"{th.get('activation_channel_range', THRESHOLDS['activation_channel_range']):g}; Add/Concat input "
              f"ranges differing > {th['input_range_mismatch']:g}x.", ""]
    if res["flags"]:
        for f in res["flags"]:
            lines.append(f"- **{f['kind']}** `{f['where']}`: {f['message']}")
    else:
        lines.append("None.")
    hist = [i for i in images if not i.startswith("sensitivity")]
    if hist:
        lines += ["", "## Ranges of the most sensitive layers", ""]
        for img in hist:
            lines += [f"![{img}]({img})", ""]
    lines += ["", "## Activation ranges", "",
              "| tensor | min | max | mean | std | p99.99 abs | max/p99.99 | channel max/median |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t, s in res["tensors"].items():
        if not s.get("count"):
            continue
        cr = s.get("channel_ratio")
        lines.append(f"| `{t}` | {s['min']:.4g} | {s['max']:.4g} | {s['mean']:.4g} | {s['std']:.4g} | "
                     f"{s['p9999_abs']:.4g} | {s['outlier_ratio']:.2f} | {'' if cr is None else f'{cr:.1f}'} |")
    return "\n".join(lines) + "\n"
