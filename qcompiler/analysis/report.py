"""The build report: what became INT8 and what stayed float (and why), Q/DQ counts,
sizes, the share of multiply-accumulates that run in INT8, and output error of the
INT8 model against FP32 (SQNR, cosine) on held-out calibration batches.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List

import numpy as np
import onnx
import onnxruntime as ort


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    err = ref - np.asarray(out, dtype=np.float64)
    p_sig, p_err = float(np.sum(ref * ref)), float(np.sum(err * err))
    if p_err == 0.0:
        return float("inf")
    if p_sig == 0.0:
        return float("-inf")
    return 10.0 * np.log10(p_sig / p_err)


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    a = np.asarray(ref, dtype=np.float64).reshape(-1)
    b = np.asarray(out, dtype=np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def session(model: onnx.ModelProto, threads: int = 0, reference: bool = False) -> ort.InferenceSession:
    """reference=True: graph optimizations off, every op as written: plain Q/DQ semantics, no
    fused integer kernels (for models built for another target than ONNX Runtime x86, whose
    s8 kernels saturate on CPUs without VNNI), and for an FP32 model no fusions."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if reference:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    from qcompiler.quant.session import ort_session

    return ort_session(model, so)


def output_error(fp32: onnx.ModelProto, int8: onnx.ModelProto, batches: Iterable[Dict[str, np.ndarray]],
                 reference: bool = False) -> Dict:
    """SQNR (dB) and cosine similarity per model output, accumulated over all batches.

    The FP32 model runs op by op as written (graph optimizations off): ONNX Runtime's
    fusions only round differently, and an optimized session of a large graph costs
    several times more to build (bench/results/spine.md)."""
    s_ref, s_q = session(fp32, reference=True), session(int8, reference=reference)
    names = [o.name for o in s_ref.get_outputs()]
    ins = {i.name for i in s_ref.get_inputs()}
    sig: Dict[str, float] = {n: 0.0 for n in names}
    err: Dict[str, float] = {n: 0.0 for n in names}
    dot: Dict[str, float] = {n: 0.0 for n in names}
    nq: Dict[str, float] = {n: 0.0 for n in names}
    count = 0
    for batch in batches:
        feeds = {k: v for k, v in batch.items() if k in ins}
        ref = s_ref.run(names, feeds)
        out = s_q.run(names, feeds)
        for n, r, o in zip(names, ref, out):
            r = np.asarray(r, np.float64)
            o = np.asarray(o, np.float64)
            sig[n] += float(np.sum(r * r))
            err[n] += float(np.sum((r - o) ** 2))
            dot[n] += float(np.sum(r * o))
            nq[n] += float(np.sum(o * o))
        count += 1
    result = {}
    for n in names:
        s = 10 * np.log10(sig[n] / err[n]) if err[n] > 0 and sig[n] > 0 else float("inf")
        c = dot[n] / np.sqrt(sig[n] * nq[n]) if sig[n] > 0 and nq[n] > 0 else 1.0
        result[n] = {"sqnr_db": round(float(s), 3), "cosine": round(float(c), 6)}
    return {"batches": count, "outputs": result,
            "runtime": "onnxruntime, Q/DQ reference semantics" if reference else "onnxruntime CPU kernels"}


def qdq_counts(model: onnx.ModelProto) -> Dict[str, int]:
    c = Counter(n.op_type for n in model.graph.node)
    return {"QuantizeLinear": c.get("QuantizeLinear", 0), "DequantizeLinear": c.get("DequantizeLinear", 0)}


def tensor_losses(int8: onnx.ModelProto, qparams: Dict, batch: Dict[str, np.ndarray],
                  producers: Dict[str, str], worst: int = 3) -> List[Dict]:
    """The quantized activations that lose most on their own: each tensor's values in the
    built model (before its QuantizeLinear) on one held-out batch, against the same values
    quantized with its parameters (SQNR). The built model, not the FP32 one, because the
    FP32 passes reuse names (a folded Conv keeps its name but now carries the BN's output).
    A quick per-layer estimate, one ONNX Runtime run; `qcompiler analyze` ranks layers by
    their effect on the output instead."""
    from qcompiler.quant.qparams import fake_quant
    from qcompiler.quant.session import session_with_outputs

    produced = {o for n in int8.graph.node for o in n.output}
    names = [t for t in qparams if t in produced and t in producers]
    if not names:
        return []
    sess = session_with_outputs(int8, names)
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, batch)))
    rows = []
    for t in names:
        x = values.get(t)
        if x is None or x.dtype.kind != "f" or x.size == 0:
            continue
        rows.append({"tensor": t, "node": producers[t],
                     "sqnr_db": round(float(sqnr_db(x, fake_quant(x, qparams[t]))), 2)})
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows[:worst]


def worst_sqnr(acc: Dict | None) -> float | None:
    """The lowest output SQNR of an accuracy entry (output_error's result), None without one."""
    sq = [o["sqnr_db"] for o in ((acc or {}).get("outputs") or {}).values() if o.get("sqnr_db") is not None]
    return min(sq) if sq else None


def low_sqnr_warning(report: Dict, model: str = "MODEL") -> str | None:
    """One warning line when the build's output SQNR fell below the threshold."""
    low = report.get("accuracy", {}).get("low_sqnr")
    if not low:
        return None
    worst = ", ".join(f"{w['node']} ({w['sqnr_db']:.1f} dB)" for w in low["worst_tensors"])
    return (f"warning: output SQNR {low['sqnr_db']:.1f} dB is below {low['threshold']:g} dB"
            + (f"; quantized tensors that lose most on their own: {worst}" if worst else "")
            + f"; rank layers with `qcompiler analyze {model} ...`, keep them float with --keep-float PATTERN,"
              " or let --min-sqnr 30 choose (--warn-sqnr sets the threshold)")


def summarize(report: Dict) -> List[str]:
    lines = []
    auto = report.get("mode_auto")
    if auto:
        lines.append(f"mode auto: {auto['chosen']} ({auto['why']})")
    q = report.get("quantization", {})
    if q:
        lines.append(f"INT8 kernels: {q.get('kernels', 0)}   float nodes: {q.get('float_nodes', 0)}   "
                     f"Q/DQ: {q.get('qdq', {}).get('QuantizeLinear', 0)}/{q.get('qdq', {}).get('DequantizeLinear', 0)}")
    macs = report.get("macs")
    if macs and macs.get("int8_share") is not None:
        lines.append(f"INT8 MAC share: {100 * macs['int8_share']:.1f}% of {macs['total_macs'] / 1e6:.1f} M MACs")
    size = report.get("size")
    if size:
        lines.append(f"size: {size['before'] / 1e6:.2f} MB -> {size['after'] / 1e6:.2f} MB")
    err = report.get("accuracy", {}).get("outputs", {})
    for name, e in err.items():
        lines.append(f"output {name}: SQNR {e['sqnr_db']:.2f} dB, cosine {e['cosine']:.5f}")
    reasons = report.get("float_reasons", {})
    if reasons:
        top = Counter(reasons.values()).most_common(5)
        lines.append("why not INT8 (most common): " + "; ".join(f"{r} x{c}" for r, c in top))
    return lines
