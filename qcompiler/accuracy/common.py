"""Small helpers shared by the accuracy tools and their passes.

- `apply_ranges`: activation ranges -> QParams (per scale group) and weight QParams, the
  way `calibrate` does it, for the data-free calibration and the sensitivity variants;
- weight/channel geometry of weighted layers (which slice of a weight an input or output
  channel owns), used by equalization and bias correction;
- output-error accumulation (SQNR, cosine, MSE) over batches.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from qcompiler.quant.plan import Plan, group_qparams, to_quant_scheme, weight_qparams  # noqa: F401 (re-exported)


def node_map(ir) -> Dict[str, object]:
    return {n.name: n for n in ir.graph.nodes}


def apply_ranges(ir, target, ranges: Dict[str, Tuple[float, float]]) -> None:
    """Write activation ranges and the QParams they imply (scale groups respected), and
    the weights' QParams: what `calibrate` leaves behind, without running data."""
    plan = Plan.from_json(ir.ann.notes["quant_plan"])
    act = to_quant_scheme(target.scheme("activation"))
    ranges = {k: (float(v[0]), float(v[1])) for k, v in ranges.items() if k in set(plan.tensors)}
    ir.ann.notes["ranges"] = ranges
    ir.ann.qparams.update(group_qparams(ir, ranges, act))
    weight_qparams(ir, target, plan)


def bn_stats(ir) -> Dict[str, Dict[str, np.ndarray]]:
    """The BN statistics that record-bn-stats kept, for producers whose BN was folded
    into them (so that their output now is the BN output): name -> {mean, std} arrays."""
    raw = ir.ann.notes.get("bn_stats") or {}
    if not raw:
        return {}
    nodes = node_map(ir)
    out = {}
    for name, rec in raw.items():
        node = nodes.get(name)
        if node is None or not node.outputs:
            continue
        bn = rec.get("bn")
        readers = {c.name for c in node.outputs[0].outputs}
        if bn and (bn in nodes or f"{bn}_mul" in readers):
            continue  # not folded into this producer: its output is not the BN output
        out[name] = {"mean": np.asarray(rec["mean"], np.float64), "std": np.asarray(rec["std"], np.float64)}
    return out


def store_bn_stats(ir, name: str, mean: np.ndarray, std: np.ndarray) -> None:
    rec = ir.ann.notes.setdefault("bn_stats", {}).setdefault(name, {})
    rec["mean"] = np.asarray(mean, np.float64).tolist()
    rec["std"] = np.abs(np.asarray(std, np.float64)).tolist()


# ---------------------------------------------------------------------------------------
# weighted-layer geometry


def channel_vector_shift(op: str, w: np.ndarray, v: np.ndarray, group: int = 1, in_axis: int = 1) -> np.ndarray:
    """Per output channel of a Conv (weight [out, in/group, k...]) or Gemm/MatMul weight `w`:
    sum over the weights reading input channel i, times v[i] (what the layer adds to its
    outputs when every input channel i is the constant v[i] everywhere; exact away from zero
    padding). `in_axis`: the input axis of a 2-D weight."""
    if op == "Conv":
        cin_g = w.shape[1]
        ws = w.reshape(group, w.shape[0] // group, cin_g, -1).sum(axis=3)  # [g, cout_g, cin_g]
        return np.einsum("goi,gi->go", ws, v.reshape(group, cin_g)).reshape(-1)
    return v @ (w if in_axis == 0 else w.T)


class Layer:
    """A Conv / Gemm / MatMul with a constant weight, seen as a map from input channels to
    output channels. `out_axis` is the weight axis of output channels; `in_slices(i)`
    the weight index expressions that read input channel i."""

    def __init__(self, ir, node):
        self.node = node
        self.op = node.op
        self.w = np.asarray(ir.const_value(node.inputs[1]), dtype=np.float64)
        self.group = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
        if node.op == "Conv":
            self.out_axis, self.in_axis = 0, 1
        elif node.op == "Gemm":
            tb = int(node.attrs.get("transB", 0))
            self.out_axis, self.in_axis = (0, 1) if tb else (1, 0)
        else:  # MatMul, 2-D weight {K, N}
            self.out_axis, self.in_axis = 1, 0

    @staticmethod
    def supported(ir, node) -> bool:
        if node.domain not in ("", None) or len(node.inputs) < 2:
            return False
        w = ir.const_value(node.inputs[1])
        if w is None:
            return False
        if node.op == "Conv":
            return w.ndim >= 3
        if node.op == "Gemm":
            return w.ndim == 2 and not int(node.attrs.get("transA", 0))
        if node.op == "MatMul":
            return w.ndim == 2
        return False

    @property
    def cout(self) -> int:
        return int(self.w.shape[self.out_axis])

    @property
    def cin(self) -> int:
        return int(self.w.shape[self.in_axis]) * self.group

    def in_index(self, i: int):
        """Index tuple into the weight selecting everything that reads input channel i."""
        if self.op == "Conv":
            cin_g = self.w.shape[1]
            cout_g = self.w.shape[0] // self.group
            g, j = divmod(i, cin_g)
            return (slice(g * cout_g, (g + 1) * cout_g), j)
        idx = [slice(None)] * 2
        idx[self.in_axis] = i
        return tuple(idx)

    def out_ranges(self, w: Optional[np.ndarray] = None) -> np.ndarray:
        """max |w| per output channel."""
        w = self.w if w is None else w
        a = np.moveaxis(np.abs(w), self.out_axis, 0).reshape(w.shape[self.out_axis], -1)
        return a.max(axis=1)

    def in_ranges(self, w: Optional[np.ndarray] = None) -> np.ndarray:
        """max |w| per input channel (over every output channel that reads it)."""
        w = self.w if w is None else w
        if self.op == "Conv":
            g, cin_g = self.group, w.shape[1]
            cout_g = w.shape[0] // g
            a = np.abs(w).reshape(g, cout_g, cin_g, -1).max(axis=(1, 3))  # [g, cin_g]
            return a.reshape(-1)
        a = np.moveaxis(np.abs(w), self.in_axis, 0).reshape(w.shape[self.in_axis], -1)
        return a.max(axis=1)

    def scale_in(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Weight with input channel i multiplied by s[i]."""
        if self.op == "Conv":
            g, cin_g = self.group, w.shape[1]
            cout_g = w.shape[0] // g
            sg = s.reshape(g, 1, cin_g)
            shp = w.shape
            return (w.reshape(g, cout_g, cin_g, -1) * sg[..., None]).reshape(shp)
        shape = [1, 1]
        shape[self.in_axis] = -1
        return w * s.reshape(shape)

    def scale_out(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Weight with output channel o multiplied by s[o]."""
        shape = [1] * w.ndim
        shape[self.out_axis] = -1
        return w * s.reshape(shape)

    def apply_to_channel_vector(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """channel_vector_shift for this layer's op, groups and weight layout."""
        return channel_vector_shift(self.op, w, v, self.group, self.in_axis)

    def has_padding(self) -> bool:
        if self.op != "Conv":
            return False
        if any(int(p) for p in self.node.attrs.get("pads", [])):
            return True
        return self.node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID")


def bias_vector(ir, node, size: int) -> np.ndarray:
    if len(node.inputs) > 2 and node.inputs[2].name:
        v = ir.const_value(node.inputs[2])
        if v is not None:
            v = np.asarray(v, dtype=np.float64).reshape(-1)
            beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
            return np.broadcast_to(v, (size,)).astype(np.float64) * beta
    return np.zeros(size, dtype=np.float64)


def set_bias(ir, node, b: np.ndarray, dtype=np.float32):
    """Give `node` a new per-output-channel bias constant (Gemm: beta becomes 1)."""
    if node.op == "MatMul":
        raise ValueError("MatMul has no bias input")
    if node.op == "Gemm":
        node.attrs["beta"] = 1.0
    c = ir.constant(f"{node.name}_bias_acc", np.asarray(b, dtype=dtype))
    ir.set_input(node, 2, c)
    return c


def set_weight(ir, node, w: np.ndarray, dtype=np.float32):
    c = ir.constant(f"{node.name}_weight_acc", np.asarray(w, dtype=dtype))
    ir.set_input(node, 1, c)
    return c


# ---------------------------------------------------------------------------------------
# output error


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

    def error(self, model, outs=None) -> Dict:
        outs = self.outputs(model) if outs is None else outs
        acc = ErrorAccumulator(self.names)
        for r, o in zip(self.refs, outs):
            acc.add(r, o)
        res = acc.result()
        if self.metric is not None:
            res["metric"] = float(self.metric(outs, self.batches))
            res["metric_fp32"] = float(self.ref_metric)
            res["metric_drop"] = float(self.ref_metric - res["metric"])
        return res


def clone_ir(ir):
    """An independent copy of an IR (graph nodes and tensors copied, constant arrays shared
    - passes never edit them in place - and annotations deep-copied). copy.deepcopy does
    not work on onnx-graphsurgeon graphs."""
    import copy

    from qcompiler.ir.graph import IR

    new = IR(ir.graph.copy(), copy.deepcopy(ir.model_meta))
    new.ann = copy.deepcopy(ir.ann)
    return new
