"""adaround: learn the up/down rounding of Conv/Gemm/MatMul weights by layer-wise
reconstruction on calibration data (AdaRound, Nagel et al. 2020; the math is in
qcompiler.rounding.adaround).

Runs after calibrate (and unify-concat-scales), before place-qdq. For every weighted
kernel of the plan it samples the layer's FP32 inputs from a few calibration batches
(im2col rows for a conv, capped), optimises the soft rounding against the FP32 output,
freezes it and records the integer weights; place-qdq writes them instead of rounding to
nearest. int4 weights (option weight_dtype / layer_dtypes) are set up first, so the
rounding is learned on the final grid.

Options (build options):
    adaround          false turns the pass into a no-op when it is in the pipeline
    adaround_seconds  time budget for the whole pass; layers it cannot reach keep nearest
                      rounding and the report lists them
    adaround_iters    Adam iterations per layer (default 1000)
    adaround_rows     input rows sampled per layer (default 4096)
    adaround_batches  calibration batches read (default 8)
    adaround_lambda   weight of the rounding regulariser (default 3.0)
    adaround_inputs   "quantized" (default): layer inputs from the model quantized so far
                      (activations fake-quantized, earlier weights as rounded), target the
                      FP32 output; "fp32": FP32 inputs (one calibration run, faster)
    progress          a tqdm bar per layer
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from qcompiler.rounding.adaround import (AdaRoundConfig, RowCollector, adaround_codes, fake_quant_model,
                                         layer_view, summarize)
from qcompiler.precision.dtypes import apply_precision, store_weight_codes
from qcompiler.ir.io import ir_to_model
from qcompiler.pipeline.options import PROGRESS_OPTION, Option
from qcompiler.precision.dtypes import PRECISION_OPTIONS
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.plan import require_plan
from qcompiler.quant.qparams import dequantize
from qcompiler.quant.session import session_with_outputs

MEMORY_PER_CHUNK = 256 << 20  # bytes of sampled rows held at once


@register_pass("adaround", requires={"calibrated"}, provides={"adarounded"})
class AdaRound(Pass):
    """Learn up/down rounding of weights by layer-wise reconstruction (AdaRound)."""

    config = {"adaround": Option(bool, True, "false turns the pass into a no-op"),
              "adaround_seconds": Option(float, None, "time budget for the whole pass"),
              "adaround_iters": Option(int, 1000, "Adam iterations per layer"),
              "adaround_lambda": Option(float, 3.0, "weight of the rounding regulariser"),
              "adaround_lr": Option(float, 0.03, "Adam learning rate"),
              "adaround_rows": Option(int, 4096, "input rows sampled per layer"),
              "adaround_batches": Option(int, 8, "calibration batches read"),
              "adaround_inputs": Option(str, "quantized", "layer inputs from the model quantized so far, or fp32",
                                        choices=("quantized", "fp32")),
              "progress": PROGRESS_OPTION, **PRECISION_OPTIONS}

    def run(self, ir, ctx) -> bool:
        settings = self.settings(ctx)
        if settings.adaround is False:
            return False
        t0 = time.perf_counter()
        budget = settings.adaround_seconds
        deadline = t0 + budget if budget else None
        cfg = AdaRoundConfig(iters=settings.adaround_iters, lam=settings.adaround_lambda, lr=settings.adaround_lr)
        max_rows = settings.adaround_rows
        n_batches = settings.adaround_batches
        inputs_mode = settings.adaround_inputs
        progress = settings.progress
        plan = require_plan(ir, self.name)
        apply_precision(ir, ctx, plan, options=settings)  # learn on the final grids (int4 weights, int16 activations)
        layers, skipped = _layers(ir, plan)
        rep = ctx.pass_report(self.name)
        if not layers:
            rep.update(layers=0, skipped=skipped)
            return False
        source = ctx.require_calibration(self.name)
        model = ir_to_model(ir)
        fp_sess = session_with_outputs(model, sorted({lay.input for lay in layers}))
        act_qp = {t: ir.ann.qparams[t] for t in plan.tensors if t in ir.ann.qparams}
        results, not_reached, rows_used = {}, [], {}
        bar_mod = None
        if progress and sys.stderr.isatty():  # bars on a terminal only: in a log they leave fragments
            from tqdm import tqdm as bar_mod
        for group in _groups(ir, layers, max_rows):
            if deadline is not None and time.perf_counter() > deadline:
                not_reached += [lay.node for lay in group]
                continue
            collectors = _collect(ir, model, fp_sess, group, act_qp, inputs_mode, source, n_batches, max_rows)
            for lay in group:
                if deadline is not None and time.perf_counter() > deadline:
                    not_reached.append(lay.node)
                    continue
                qp = ir.ann.qparams[lay.weight]
                scheme = ir.ann.qspec.get(lay.weight)
                qmin = scheme.qmin if scheme is not None else qp.qmin
                qmax = scheme.qmax if scheme is not None else qp.qmax
                col = collectors.pop(lay.node)
                x, xf = col.rows(), col.rows_fp32()
                rows_used[lay.node] = int(x.shape[1])
                bar = bar_mod(total=cfg.iters, desc=f"adaround {lay.node}", leave=False) if bar_mod else None
                try:
                    res = adaround_codes(lay.view.to_god(lay.w), lay.view.channel_params(qp.scale, qp.axis),
                                         lay.view.channel_params(qp.zero_point, qp.axis), qmin, qmax, x, cfg,
                                         deadline=deadline, progress=bar, x_fp32=xf)
                finally:
                    if bar is not None:
                        bar.close()
                codes = lay.view.from_god(res.codes)
                store_weight_codes(ir, lay.weight, codes, qp, lay.w, "adaround" if res.improved else "nearest")
                results[lay.node] = res
        per_layer = {name: {"error_nearest": float(f"{r.rec_nearest:.4g}"),
                            "error_adaround": float(f"{r.rec_adaround:.4g}"),
                            "kept": "adaround" if r.improved else "nearest", "iters": r.iters,
                            "flipped": round(r.flipped, 4), "rows": rows_used.get(name, 0)}
                     for name, r in results.items()}
        seconds = round(time.perf_counter() - t0, 3)
        rep.update(seconds=seconds, inputs=inputs_mode, not_reached=not_reached, skipped=skipped,
                   per_layer=per_layer, **summarize(results))
        ctx.report["adaround"] = {"layers": len(results), "improved": sum(r.improved for r in results.values()),
                                  "not_reached": not_reached, "skipped": skipped, "seconds": seconds}
        if not_reached:
            ctx.log.warning("adaround: time budget spent; %d layers keep nearest rounding: %s",
                            len(not_reached), ", ".join(not_reached[:8]) + (" ..." if len(not_reached) > 8 else ""))
        return any(r.improved for r in results.values())


@dataclass
class _Layer:
    node: str  # anchor node name
    weight: str
    input: str  # the anchor's activation input
    w: np.ndarray
    view: object
    features: int  # input features over all groups (memory per row)


def _layers(ir, plan):
    tensors = ir.tensors()
    nodes = {n.name: n for n in ir.graph.nodes}
    layers, skipped, seen = [], {}, set()
    for k in plan.kernels:
        if k.weight is None or k.weight not in ir.ann.qparams or k.weight in seen:
            continue
        anchor = nodes[k.nodes[0]]
        w = ir.const_value(tensors[k.weight])
        view, why = layer_view(anchor, w)
        if view is None:
            skipped[anchor.name] = why
            continue
        if not anchor.inputs or ir.is_const(anchor.inputs[0]) or not anchor.inputs[0].name:
            skipped[anchor.name] = "the layer input is a constant"
            continue
        seen.add(k.weight)
        god = view.to_god(w).shape
        layers.append(_Layer(anchor.name, k.weight, anchor.inputs[0].name, w, view, int(god[0] * god[2])))
    return layers, skipped


def _groups(ir, layers, max_rows):
    """Layers in graph order, grouped so that no layer's input depends on a layer of its
    own group (their quantized inputs are final when the group is collected) and one
    group's sampled rows fit in memory."""
    index = {lay.node: i for i, lay in enumerate(layers)}
    mask = {}  # tensor name -> bitmask of layers upstream of it
    for node in ir.graph.nodes:
        m = 0
        for t in node.inputs:
            m |= mask.get(t.name, 0)
        if node.name in index:
            m |= 1 << index[node.name]
        for t in node.outputs:
            mask[t.name] = m
    out, cur, bits, size = [], [], 0, 0
    for i, lay in enumerate(layers):
        nbytes = 2 * max_rows * lay.features * 4
        if cur and ((mask.get(lay.input, 0) & bits) or size + nbytes > MEMORY_PER_CHUNK):
            out.append(cur)
            cur, bits, size = [], 0, 0
        cur.append(lay)
        bits |= 1 << i
        size += nbytes
    if cur:
        out.append(cur)
    return out


def _collect(ir, model, fp_sess, group, act_qp, inputs_mode, source, n_batches, max_rows):
    """Row collectors for a group, fed with the quantized model's inputs (weights rounded
    as chosen so far) and the FP32 model's, on the same rows."""
    per_batch = max(1, math.ceil(max_rows / n_batches))
    collectors = {lay.node: RowCollector(lay.view, max_rows, per_batch, seed=i) for i, lay in enumerate(group)}
    fp_names = sorted({lay.input for lay in group})
    q_sess, q_names = None, []
    if inputs_mode == "quantized":
        weights = {}
        for k_name, qp in ir.ann.qparams.items():
            codes = ir.ann.notes.get("weight_codes", {}).get(k_name)
            if codes is not None and codes["qparams"] == qp:
                weights[k_name] = dequantize(codes["codes"], qp)
        fq = fake_quant_model(model, act_qp, weights, suffix=FQ)
        q_names = [n + FQ if n in act_qp else n for n in fp_names]
        q_sess = session_with_outputs(fq, q_names)
    fp_inputs = [i.name for i in fp_sess.get_inputs()]
    for batch in _first(source, n_batches):
        feeds = {k: v for k, v in batch.items() if k in fp_inputs}
        fp_vals = dict(zip(fp_names, fp_sess.run(fp_names, feeds)))
        q_vals = dict(zip(fp_names, q_sess.run(q_names, feeds))) if q_sess is not None else None
        for lay in group:
            if q_vals is None:
                collectors[lay.node].update(fp_vals[lay.input])
            else:
                collectors[lay.node].update(q_vals[lay.input], fp_vals[lay.input])
    return collectors


FQ = "__adaround_fq"


def _first(source, n: int):
    for i, batch in enumerate(source()):
        if i >= n:
            break
        yield batch
