"""quantize-dynamic: int8 weights offline, activations quantized at run time; no
calibration data.

The form ONNX Runtime runs (and fuses into DynamicQuantizeMatMul / MatMulIntegerToFloat):

    MatMul(A, W) / Gemm(A, W, C)  ->
        DynamicQuantizeLinear(A) -> a_q (uint8), a_scale, a_zero_point
        MatMulInteger(a_q, W_q, a_zero_point, w_zero_point) -> int32
        Cast(float) -> Mul(a_scale * w_scale) [-> Add(beta * C)]

W_q is int8 symmetric (narrow [-127, 127]), one scale per output column unless the
target's weight scheme or the option `per_channel: false` says per tensor. Gemm's alpha
is folded into the weight scale, transB into the stored weight, beta into the bias.

LSTM with constant W and R becomes com.microsoft DynamicQuantizeLSTM (ONNX Runtime's
kernel: int8 W [dirs, input, 4*hidden] and R [dirs, hidden, 4*hidden], per-channel
scales). GRU has no integer kernel in ONNX Runtime and stays float, with that reason.

Options: mode: dynamic (selects this pipeline, see qcompiler.pipeline.modes.advanced_pipeline),
per_channel (default true), keep_float (node names or globs), dynamic_min_elements
(weights smaller than this stay float; default 0).
"""

from __future__ import annotations

import fnmatch

import numpy as np
import onnx_graphsurgeon as gs

from qcompiler.pipeline.options import KEEP_FLOAT_OPTION, Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import Kernel, Plan
from qcompiler.quant.qparams import compute_qparams, quantize
from qcompiler.quant.scheme import QuantScheme

MS_DOMAIN = "com.microsoft"


@register_pass("quantize-dynamic", requires={"canonical"}, provides={"dynamic-quantized"})
class QuantizeDynamic(Pass):
    """Dynamic quantization: int8 MatMul/Gemm (and LSTM) weights, activations quantized at run time."""

    config = {"keep_float": KEEP_FLOAT_OPTION,
              "per_channel": Option(bool, True, "per-channel weight scales where the target has them"),
              "dynamic_min_elements": Option(int, 0, "weights with fewer elements stay float")}

    def run(self, ir, ctx) -> bool:
        cfg = self.settings(ctx)
        per_channel = cfg.per_channel
        narrow = True
        if ctx.target is not None:
            ts = ctx.target.scheme("weight", "MatMul")
            per_channel = per_channel and ts.per_channel
            narrow = bool(ts.narrow) if ts.dtype == "int8" else True
        keep = cfg.keep_float
        min_elems = cfg.dynamic_min_elements
        kernels, reasons = [], {}
        counts = {"MatMul": 0, "Gemm": 0, "LSTM": 0}
        shared = {}  # activation name -> its DynamicQuantizeLinear outputs (one per tensor)
        for node in list(ir.graph.nodes):
            if node.domain not in ("", None, "ai.onnx") or node.op not in ("MatMul", "Gemm", "LSTM", "GRU"):
                continue
            if any(node.name == p or fnmatch.fnmatchcase(node.name, p) for p in keep):
                reasons[node.name] = "kept float by --keep-float"
                continue
            if node.op == "GRU":
                reasons[node.name] = "ONNX Runtime has no integer GRU kernel; GRU stays float"
                continue
            w = ir.const_value(node.inputs[1]) if len(node.inputs) > 1 else None
            if w is None or np.asarray(w).dtype != np.float32:
                reasons[node.name] = f"{node.op} weight is not a float32 constant"
                continue
            if w.size < min_elems:
                reasons[node.name] = f"weight has {w.size} elements, fewer than dynamic_min_elements"
                continue
            in_name = node.inputs[0].name
            out_name = node.outputs[0].name if node.outputs else ""
            w_name = node.inputs[1].name
            if node.op == "LSTM":
                why = _lstm(ir, node, w, per_channel)
            else:
                why = _matmul(ir, node, w, per_channel, narrow, shared)
            if why:
                reasons[node.name] = why
                continue
            counts[node.op] += 1
            kernels.append(Kernel(name=f"dynamic:{node.name}", pattern="dynamic", op=node.op, nodes=[node.name],
                                  inputs=[in_name], output=out_name, weight=w_name))
        for node in ir.graph.nodes:
            if node.name not in reasons and node.op not in ("DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul",
                                                            "Add", "DynamicQuantizeLSTM"):
                reasons.setdefault(node.name, f"dynamic mode quantizes MatMul, Gemm and LSTM; {node.op} stays float")
        ir.ann.plan = Plan(kernels=kernels, tensors=[], float_reasons=reasons)
        ir.ann.notes["quant_mode"] = "dynamic"
        rep = ctx.pass_report(self.name)
        rep.update(per_channel=per_channel, **{k.lower(): v for k, v in counts.items()},
                   float=len([r for r in reasons if ir_has(ir, r)]))
        ctx.report["dynamic"] = {"kernels": sum(counts.values()), **counts, "per_channel": per_channel}
        return bool(kernels)


def ir_has(ir, name: str) -> bool:
    return any(n.name == name for n in ir.graph.nodes)


def _weight_q(w2: np.ndarray, per_channel: bool, narrow: bool):
    """int8 symmetric codes of a [K, N] weight, scales per column N (or per tensor)."""
    scheme = QuantScheme("int8", True, 1 if per_channel else None, narrow)
    if per_channel:
        lo, hi = w2.min(axis=0), w2.max(axis=0)
    else:
        lo, hi = float(w2.min()), float(w2.max())
    qp = compute_qparams(lo, hi, scheme)
    return quantize(w2, qp, qmin=scheme.qmin, qmax=scheme.qmax), qp


def _matmul(ir, node, w: np.ndarray, per_channel: bool, narrow: bool, shared: dict) -> str:
    a = node.attrs
    if node.op == "MatMul":
        if w.ndim != 2:
            return "batched MatMul weights are not quantized dynamically"
        w2, alpha, bias = w, 1.0, None
    else:
        if int(a.get("transA", 0)):
            return "Gemm with transA stays float in dynamic mode"
        w2 = w.T if int(a.get("transB", 0)) else w
        alpha = float(a.get("alpha", 1.0))
        beta = float(a.get("beta", 1.0))
        bias = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = ir.const_value(node.inputs[2])
            if c is not None:
                bias = ir.constant(f"{node.name}_bias", (np.asarray(c, dtype=np.float32) * beta).astype(np.float32))
            elif beta == 1.0:
                bias = node.inputs[2]
            else:
                return "Gemm with a computed C and beta != 1 stays float in dynamic mode"
    x = node.inputs[0]
    out = node.outputs[0]
    codes, qp = _weight_q(np.asarray(w2, dtype=np.float32), per_channel, narrow)
    base = node.name
    wq = ir.constant(f"{node.inputs[1].name}_quantized", codes.astype(np.int8))
    wzp = ir.constant(f"{node.inputs[1].name}_zero_point", np.asarray(0, dtype=np.int8))
    wscale = np.asarray(qp.scale, dtype=np.float32) * np.float32(alpha)
    ws = ir.constant(f"{node.inputs[1].name}_scale", wscale)
    if x.name not in shared:
        xq = ir.variable(f"{x.name}_quantized", dtype=np.uint8, shape=x.shape)
        xs = ir.variable(f"{x.name}_scale", dtype=np.float32, shape=())
        xz = ir.variable(f"{x.name}_zero_point", dtype=np.uint8, shape=())
        ir.add_node("DynamicQuantizeLinear", [x], outputs=[xq, xs, xz], name=f"{x.name}_dql")
        shared[x.name] = (xq, xs, xz)
    xq, xs, xz = shared[x.name]
    acc = ir.add_node("MatMulInteger", [xq, wq, xz, wzp], name=f"{base}_int", out_dtype=np.int32,
                      out_shape=out.shape).outputs[0]
    accf = ir.add_node("Cast", [acc], attrs={"to": 1}, name=f"{base}_cast", out_dtype=np.float32,
                       out_shape=out.shape).outputs[0]
    scale = ir.add_node("Mul", [xs, ws], name=f"{base}_scale", out_dtype=np.float32,
                        out_shape=tuple(wscale.shape)).outputs[0]
    y = ir.add_node("Mul", [accf, scale], name=f"{base}_rescale", out_dtype=np.float32, out_shape=out.shape).outputs[0]
    if bias is not None:
        y = ir.add_node("Add", [y, bias], name=f"{base}_bias", out_dtype=np.float32, out_shape=out.shape).outputs[0]
    ir.replace_uses(out, y)
    ir.remove_node(node)
    return ""


def _lstm(ir, node, w: np.ndarray, per_channel: bool) -> str:
    a = node.attrs
    if int(a.get("layout", 0)) != 0:
        return "LSTM with layout=1 stays float (DynamicQuantizeLSTM takes layout 0)"
    r = ir.const_value(node.inputs[2]) if len(node.inputs) > 2 else None
    if r is None:
        return "LSTM recurrence weight R is not a constant"
    ins = list(node.inputs) + [None] * (8 - len(node.inputs))

    def q(mat: np.ndarray, name: str):
        # ONNX [dirs, 4H, in] -> DynamicQuantizeLSTM [dirs, in, 4H], scales per (dir, gate unit)
        t = np.ascontiguousarray(np.transpose(np.asarray(mat, dtype=np.float32), (0, 2, 1)))
        if per_channel:
            absmax = np.abs(t).max(axis=1)  # [dirs, 4H]
        else:
            absmax = np.abs(t).reshape(t.shape[0], -1).max(axis=1)  # [dirs]
        scale = np.maximum(absmax / 127.0, np.finfo(np.float32).eps).astype(np.float32)
        s = scale[:, None, :] if per_channel else scale[:, None, None]
        codes = np.clip(np.rint(t / s), -127, 127).astype(np.int8)
        return (ir.constant(f"{name}_quantized", codes), ir.constant(f"{name}_scale", scale),
                ir.constant(f"{name}_zero_point", np.zeros(scale.shape, dtype=np.int8)))

    wq, wsc, wzp = q(w, node.inputs[1].name)
    rq, rsc, rzp = q(r, node.inputs[2].name)
    opt = [t if t is not None and t.name else gs.Variable.empty() for t in ins[3:8]]  # B, lens, h0, c0, P
    inputs = [node.inputs[0], wq, rq] + opt + [wsc, wzp, rsc, rzp]
    attrs = {k: v for k, v in a.items() if k in ("activation_alpha", "activation_beta", "activations", "clip",
                                                   "direction", "hidden_size", "input_forget")}
    outs = list(node.outputs)
    node.outputs.clear()
    ir.add_node("DynamicQuantizeLSTM", inputs, outputs=outs, attrs=attrs, name=f"{node.name}_dq", domain=MS_DOMAIN)
    ir.remove_node(node)
    return ""
