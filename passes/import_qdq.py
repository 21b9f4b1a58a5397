"""import-qdq: take a model that is already quantized in Q/DQ form (ONNX Runtime's
quantize_static in QDQ format, a QAT export) and re-target it without calibration.

1. The form is recognised first: a QOperator model (QLinearConv ...) or a dynamically
   quantized one (DynamicQuantizeLinear + MatMulInteger ...) stops the build with a
   message saying what it is and what qcompiler can do with it.
2. Every activation Q->DQ pair and every DQ(constant) weight or bias is read back
   (qcompiler.formats.qdq_import.strip_qdq): the graph becomes FP32, the pairs' scales
   and zero points and the weights' integer codes are kept aside.
3. Kernels come from the target's patterns, as insert-observers finds them; a kernel is
   INT8 when the imported model quantized its weight and every tensor the target's
   placement needs (else it stays float, with the reason).
4. Parameters are checked against the target's rules. What already fits is kept exactly
   (weights keep their integer codes; a per-tensor weight scale becomes per-channel by
   repetition where the target wants per-channel). What does not fit is re-derived from
   the imported ranges, with a warning: an activation imported as u8 asymmetric becomes
   s8 symmetric on arm64 over the range [(qmin - zp) * s, (qmax - zp) * s]; a weight
   re-derives from its dequantized values. Tensors that must share a scale (Concat on a
   share_scale target) get one covering all their ranges.

Then place-qdq, fold-requant and lower-layout run as after calibrate. Pipeline:
    canonicalize, import-qdq, place-qdq, fold-requant[, lower-layout]
(qcompiler.pipeline.modes.advanced_pipeline builds it for `mode: import`).

Options: keep_float (node names or globs), import_strict (true: a parameter that does
not fit the target is an error instead of a warning).
"""

from __future__ import annotations

from typing import Dict, List, Set

import numpy as np

from qcompiler.precision.dtypes import allowed_dtypes, store_weight_codes, weight_qparams
from qcompiler.formats.qdq_import import detect_form, strip_qdq
from qcompiler.errors import ModelError, PipelineError
from qcompiler.pipeline.options import KEEP_FLOAT_OPTION, Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.kernels import find_kernels, keep_float_nodes, make_plan
from qcompiler.quant.plan import WEIGHTED, Kernel, group_qparams, to_quant_scheme, weight_axis
from qcompiler.quant.qparams import QParams, compute_qparams
from qcompiler.quant.scheme import QuantScheme


@register_pass("import-qdq", requires={"canonical"}, provides={"observed", "calibrated", "imported"})
class ImportQDQ(Pass):
    """Import a Q/DQ model's scales and integer weights, check and re-target them (no calibration)."""

    config = {"keep_float": KEEP_FLOAT_OPTION,
              "import_strict": Option(bool, False, "a parameter that does not fit the target is an error")}

    def run(self, ir, ctx) -> bool:
        target = ctx.target
        if target is None:
            raise PipelineError("pass 'import-qdq' needs a target", "pass --target x86|arm64|cuda or a .qtarget file")
        form = detect_form(ir)
        rep = ctx.pass_report(self.name)
        rep["form"] = form.form
        ctx.report["import"] = {"form": form.form, "ops": dict(form.counts)}
        if form.form != "qdq":
            raise ModelError(form.message, "see docs/advanced.md, 'Pre-quantized models'")
        imp = strip_qdq(ir)
        clamps = _explicit_clamps(ir, target, imp)
        cfg = self.settings(ctx)
        strict = cfg.import_strict
        notes: List[str] = list(imp.warnings)
        kernels, reasons = _kernels(ir, target, imp, cfg.keep_float)
        needed = _needed(ir, target, kernels, imp)
        quantized = set().union(*needed.values()) if needed else set()
        quantized |= _passthrough(ir, target, quantized, imp)
        act_qp, ranges, act_notes = _activations(ir, target, imp, quantized, kernels)
        notes += act_notes
        w_notes, kept_w = _weights(ir, target, imp, kernels)
        notes += w_notes
        if strict and notes:
            raise ModelError(f"import-qdq: {notes[0]}", "drop import_strict to re-derive such parameters")
        for n in notes:
            ctx.log.warning("import-qdq: %s", n)
        ir.ann.qparams.update(act_qp)
        ir.ann.notes["ranges"] = ranges
        plan = make_plan(ir, target, kernels, quantized, reasons)
        ir.ann.plan = plan
        summary = {"activation_pairs": imp.pairs, "relu_made_explicit": clamps, "activations": len(imp.activations), "weights": len(imp.weights),
                   "biases": len(imp.biases), "kernels": len(kernels), "weights_kept_exactly": kept_w,
                   "quantized_tensors": len(plan.tensors), "warnings": notes}
        rep.update(summary)
        ctx.report["import"].update(summary)
        return True


NONNEGATIVE_OPS = ("Relu", "Sigmoid", "Softmax", "Abs", "Sqrt", "Exp", "HardSigmoid")


def _explicit_clamps(ir, target, imp) -> int:
    """A Q/DQ pair whose range starts at 0 (zero point at the grid's bottom, e.g. ONNX
    Runtime's u8 model after it dropped a Relu) clamps negative values: a ReLU the graph no
    longer shows. A symmetric target's grid keeps negatives, so the ReLU becomes a node
    again (before kernels are matched, so that Conv -> Relu fuses)."""
    if not target.scheme("activation").symmetric:
        return 0
    count = 0
    tensors = ir.tensors()  # the Relus inserted below add tensors that are never looked up here
    for name in list(imp.activations):
        qp = imp.activations[name]
        if qp.axis is not None or int(qp.zero_point) != qp.qmin:
            continue
        t = tensors.get(name)
        if t is None or ir.is_graph_input(t):
            continue
        prod = ir.producer(t)
        if prod is None or prod.op in NONNEGATIVE_OPS or (prod.op == "Clip" and _clip_min(ir, prod) >= 0):
            continue
        relu_out = ir.insert_on_edge(
            t, lambda src: ir.add_node("Relu", [src], name=f"{name}_relu", out_dtype=src.dtype,
                                       out_shape=src.shape).outputs[0],
            include_graph_output=ir.is_graph_output(t))
        imp.activations[relu_out.name] = imp.activations.pop(name)
        count += 1
    return count


def _clip_min(ir, node) -> float:
    if "min" in node.attrs:
        return float(node.attrs["min"])
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = ir.const_value(node.inputs[1])
        return float(v) if v is not None else -np.inf
    return -np.inf


def _kernels(ir, target, imp, keep_float):
    found, reasons = find_kernels(ir, target, keep_float_nodes(ir, keep_float))
    kernels = []
    for k in found:
        if k.weight is not None and k.weight not in imp.weights:
            why = f"the imported model keeps the weight of {k.op} '{k.nodes[0]}' float"
        else:
            # inputs must be imported quantized; an output the model leaves float stays float
            # (an int8-in / float-out kernel, as the imported model runs it)
            need = _needed_one(ir, target, k, {}) - {k.output}
            missing = [t for t in need if t not in imp.activations]
            why = f"the imported model does not quantize '{missing[0]}'" if missing else ""
        if why:
            for n in k.nodes:
                reasons[n] = why
            continue
        kernels.append(k)
    return kernels, reasons


def _needed_one(ir, target, k: Kernel, producer_kernel: Dict[str, Kernel]) -> Set[str]:
    placement = target.placement
    need = set(k.inputs)
    if placement.quantize_weighted_outputs or k.op not in WEIGHTED:
        need.add(k.output)
    if k.op == "Add" and placement.residual_add == "quantize_skip_only" and len(k.inputs) == 2:
        tensors = ir.tensors()
        fused = [i for i in k.inputs if i in producer_kernel and producer_kernel[i].op in WEIGHTED
                 and len(tensors[i].outputs) == 1]
        if fused:
            need.discard(fused[0])
    return need


def _needed(ir, target, kernels, imp) -> Dict[str, Set[str]]:
    producer = {k.output: k for k in kernels}
    out = {}
    for k in kernels:
        need = _needed_one(ir, target, k, producer)
        if k.output not in imp.activations:
            need.discard(k.output)
        out[k.name] = need
    return out


def _passthrough(ir, target, quantized: Set[str], imp) -> Set[str]:
    """Outputs of pass-through ops (Reshape, MaxPool...) whose input is quantized and that
    the imported model quantized too; equal parameters share one scale group."""
    extra: Set[str] = set()
    for node in ir.graph.nodes:
        if not target.is_passthrough(node.op) or not node.inputs or not node.outputs:
            continue
        src, dst = node.inputs[0].name, node.outputs[0].name
        if (src in quantized or src in extra) and dst in imp.activations:
            extra.add(dst)
            if imp.activations.get(src) == imp.activations[dst]:
                ir.ann.groups.union(src, dst)
    return extra


def _imported_range(qp: QParams):
    return (float((qp.qmin - int(qp.zero_point)) * float(qp.scale)),
            float((qp.qmax - int(qp.zero_point)) * float(qp.scale)))


def _symmetric(qp: QParams) -> bool:
    return int(qp.zero_point) == QuantScheme(qp.dtype).symmetric_zero_point


def _fits(qp: QParams, scheme: QuantScheme) -> bool:
    if qp.axis is not None or qp.dtype != scheme.dtype:
        return False
    if scheme.symmetric and int(qp.zero_point) != scheme.symmetric_zero_point:
        return False
    return True


def _activations(ir, target, imp, quantized: Set[str], kernels):
    notes: List[str] = []
    base = to_quant_scheme(target.scheme("activation"))
    consumer_ops: Dict[str, Set[str]] = {}
    for k in kernels:
        for t in list(k.inputs) + [k.output]:
            consumer_ops.setdefault(t, set()).add(k.op)
    # share_scale ops (Concat): inputs and output join one group
    for node in ir.graph.nodes:
        if target.shares_scale(node.op) and node.outputs and node.outputs[0].name in quantized:
            for t in node.inputs:
                if t.name in quantized:
                    ir.ann.groups.union(node.outputs[0].name, t.name)
    ranges: Dict[str, tuple] = {}
    out: Dict[str, QParams] = {}
    rederived: Dict[str, int] = {}
    kept = 0
    roots: Dict[object, List[str]] = {}
    for t in quantized:
        qp = imp.activations.get(t)
        if qp is None:
            continue
        if qp.axis is not None:
            raise ModelError(f"activation '{t}' is quantized per channel (axis {qp.axis})",
                             "qcompiler quantizes activations per tensor; re-export with per-tensor activations")
        ranges[t] = _imported_range(qp)
        roots.setdefault(ir.ann.groups.find(t), []).append(t)
    for members in roots.values():
        qps = [imp.activations[m] for m in members]
        ops = set().union(*(consumer_ops.get(m, set()) for m in members))
        allowed = set.intersection(*(set(allowed_dtypes(target, "activation", op)) for op in ops)) if ops else {
            base.dtype}
        first = qps[0]
        same = all(q == first for q in qps)
        scheme = base if first.dtype not in allowed or first.dtype == base.dtype else QuantScheme(
            first.dtype, base.symmetric, None, base.narrow, base.reduce_range)
        if same and _fits(first, scheme):
            for m in members:
                out[m] = first
                ir.ann.qspec[m] = scheme
            kept += len(members)
            continue
        why = (f"{first.dtype} {'symmetric' if _symmetric(first) else 'asymmetric'}"
               if same else "different scales where the target shares one")
        rederived[why] = rederived.get(why, 0) + len(members)
        for m, qp in group_qparams(ir, {m: ranges[m] for m in members}, scheme).items():
            out[m] = qp
            ir.ann.qspec[m] = scheme
    for why, n in rederived.items():
        notes.append(f"{n} activation tensors imported as {why}; {target.name} wants {base}: their parameters "
                     "are re-derived from the imported ranges")
    return out, ranges, notes


def _weights(ir, target, imp, kernels):
    notes: List[str] = []
    tensors = ir.tensors()
    nodes = {n.name: n for n in ir.graph.nodes}
    kept = 0
    reasons: Dict[str, int] = {}
    done = set()
    for k in kernels:
        if k.weight is None or k.weight in done:
            continue
        done.add(k.weight)
        iw = imp.weights[k.weight]
        w = ir.const_value(tensors[k.weight])
        anchor = nodes[k.nodes[0]]
        ts = target.scheme("weight", k.op)
        axis = weight_axis(k.op, anchor.attrs, w.ndim) if ts.per_channel else None
        base = to_quant_scheme(ts, axis)
        qp = iw.qparams
        dtype = qp.dtype if qp.dtype in allowed_dtypes(target, "weight", k.op) else base.dtype
        scheme = QuantScheme(dtype, base.symmetric, base.axis, base.narrow, base.reduce_range)
        fitted, why = _fit_weight(qp, iw.codes, scheme, w.shape)
        if fitted is not None:
            ir.ann.qspec[k.weight] = scheme
            ir.ann.qparams[k.weight] = fitted
            store_weight_codes(ir, k.weight, iw.codes, fitted, w, "imported")
            kept += 1
            continue
        reasons[why] = reasons.get(why, 0) + 1
        new = weight_qparams(w, scheme, "minmax")
        ir.ann.qspec[k.weight] = scheme
        ir.ann.qparams[k.weight] = new
    for why, n in reasons.items():
        wanted = to_quant_scheme(target.scheme("weight"), 0 if target.scheme("weight").per_channel else None)
        notes.append(f"{n} weights imported as {why}; {target.name} wants {wanted}: re-quantized from their "
                     "dequantized values")
    return notes, kept


def _fit_weight(qp: QParams, codes: np.ndarray, scheme: QuantScheme, shape):
    """The imported weight parameters as the target's scheme, if the codes can stay; else
    (None, why not)."""
    if qp.dtype != scheme.dtype:
        return None, f"{qp.dtype}"
    zp = np.asarray(qp.zero_point).reshape(-1)
    if scheme.symmetric and np.any(zp != scheme.symmetric_zero_point):
        return None, "asymmetric"
    if codes.size and (codes.min() < scheme.qmin or codes.max() > scheme.qmax):
        return None, f"codes outside [{scheme.qmin}, {scheme.qmax}]"
    if scheme.axis is None:
        if qp.axis is not None:
            if np.all(qp.scale == qp.scale.reshape(-1)[0]) and np.all(zp == zp[0]):
                return QParams(qp.scale.reshape(-1)[0], zp[0], None, qp.dtype), ""
            return None, "per-channel"
        return qp, ""
    ax = scheme.axis % len(shape)
    n = shape[ax]
    if qp.axis is None:  # one scale for all channels is a per-channel scale set
        return QParams(np.full(n, float(qp.scale), np.float32), np.full(n, int(zp[0])), ax, qp.dtype), ""
    if qp.axis % len(shape) != ax:
        return None, f"per-channel on axis {qp.axis}"
    return QParams(qp.scale, qp.zero_point, ax, qp.dtype), ""
