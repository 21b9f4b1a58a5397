"""Output error of candidate models against FP32 on fixed batches (SQNR, cosine, MSE, a task
metric): what the sensitivity analysis and the mixed-precision search compare."""

from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np

class ErrorAccumulator:
    """Signal, error, cross and output power summed over batches, per output and overall."""

    def __init__(self, names: List[str]):
        self.names = list(names)
        self.sig = {n: 0.0 for n in names}
        self.err = {n: 0.0 for n in names}
        self.dot = {n: 0.0 for n in names}
        self.outp = {n: 0.0 for n in names}
        self.count = {n: 0 for n in names}

    def add(self, refs, outs) -> None:
        for n, r, o in zip(self.names, refs, outs):
            r = np.asarray(r, np.float64)
            o = np.asarray(o, np.float64)
            d = r - o
            self.sig[n] += float(np.sum(r * r))
            self.err[n] += float(np.sum(d * d))
            self.dot[n] += float(np.sum(r * o))
            self.outp[n] += float(np.sum(o * o))
            self.count[n] += int(r.size)

    @staticmethod
    def _metrics(sig, err, dot, outp, count) -> Dict[str, float]:
        if err <= 0:
            sqnr = float("inf")
        elif sig <= 0:
            sqnr = float("-inf")
        else:
            sqnr = 10.0 * np.log10(sig / err)
        cos = dot / np.sqrt(sig * outp) if sig > 0 and outp > 0 else (1.0 if sig == outp else 0.0)
        return {"sqnr_db": float(sqnr), "cosine": float(cos), "mse": float(err / max(count, 1))}

    def result(self) -> Dict:
        per = {n: self._metrics(self.sig[n], self.err[n], self.dot[n], self.outp[n], self.count[n])
               for n in self.names}
        # Overall: every output weighs by its own signal power (an SQNR per output, averaged in
        # the linear domain), so a large-valued output does not drown a small one.
        rel = [self.err[n] / self.sig[n] for n in self.names if self.sig[n] > 0]
        if rel and max(rel) > 0:
            sqnr = float(10 * np.log10(1.0 / (sum(rel) / len(rel))))
        else:
            sqnr = float("inf")
        cos = float(min(p["cosine"] for p in per.values())) if per else 1.0
        mse = float(sum(p["mse"] for p in per.values()) / max(len(per), 1))
        return {"sqnr_db": sqnr, "cosine": cos, "mse": mse, "outputs": per}


def finite_or_none(x: float):
    return None if x is None or not np.isfinite(x) else float(x)


def chunks(it: Iterable, n: int) -> List:
    out = []
    for i, b in enumerate(it):
        if i >= n:
            break
        out.append(b)
    return out


def ort_session(model, fused: bool = False):
    """An ONNX Runtime CPU session. By default with basic graph optimizations only, so that
    Q/DQ pairs run as the reference float simulation of the quantized model: the same
    numbers on every CPU. (With `fused`, ORT fuses Q/DQ into its integer kernels, whose
    results depend on the CPU: u8 x s8 products saturate on AVX2 without VNNI.)"""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


class Evaluator:
    """FP32 reference outputs computed once on a fixed list of batches; `error(model)`
    gives the output error of a candidate model on the same batches, and `metric_drop`
    the drop of a task metric (metric(outputs_list, batches) -> float, higher is better)."""

    def __init__(self, fp32_model, batches, fused: bool = False, metric=None):
        self.batches = list(batches)
        self.fused = fused
        self.metric = metric
        sess = ort_session(fp32_model)
        self.names = [o.name for o in sess.get_outputs()]
        self.inputs = {i.name for i in sess.get_inputs()}
        self.refs = [sess.run(self.names, self._feeds(b)) for b in self.batches]
        self.ref_metric = metric(self.refs, self.batches) if metric is not None else None

    def _feeds(self, b):
        return {k: v for k, v in b.items() if k in self.inputs}

    def outputs(self, model):
        sess = ort_session(model, self.fused)
        return [sess.run(self.names, self._feeds(b)) for b in self.batches]

    def error(self, model, outs=None, early_reject=None) -> Dict:
        """The error on every batch; with `early_reject(partial_result) -> bool` and no
        task metric, the batches run one by one and the evaluation stops once the first
        half (and any batch after it) says reject: the result then has `partial: True`."""
        acc = ErrorAccumulator(self.names)
        if outs is None and early_reject is not None and self.metric is None and len(self.batches) > 1:
            sess = ort_session(model, self.fused)
            half = (len(self.batches) + 1) // 2
            for i, (r, b) in enumerate(zip(self.refs, self.batches)):
                acc.add(r, sess.run(self.names, self._feeds(b)))
                if half <= i + 1 < len(self.batches):
                    part = acc.result()
                    if early_reject(part):
                        part.update(partial=True, batches=i + 1)
                        return part
            return acc.result()
        outs = self.outputs(model) if outs is None else outs
        for r, o in zip(self.refs, outs):
            acc.add(r, o)
        res = acc.result()
        if self.metric is not None:
            res["metric"] = float(self.metric(outs, self.batches))
            res["metric_fp32"] = float(self.ref_metric)
            res["metric_drop"] = float(self.ref_metric - res["metric"])
        return res
