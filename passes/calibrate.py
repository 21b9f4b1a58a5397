"""calibrate: stream calibration batches through one ONNX Runtime session and turn the
observed ranges into quantization parameters.

The session's outputs are the observed tensors (under min/max, only those whose range
does not follow from another's: qcompiler.quant.derived) and, when a later pass wants
"input-means" (bias-correction), the weighted kernels' inputs, whose means it accumulates.
A graph input's range is widened by a few steps where that takes its grid off the data's
lattice (input_grid.py).
Each batch goes into the observers and is dropped, so memory stays flat in the number of
samples. Weights get per-channel (or per-tensor) parameters from their values, as the
target says.
"""

from __future__ import annotations

import time

import numpy as np

from qcompiler.rounding.bias_correction import InputMeans, weighted_inputs
from qcompiler.errors import CalibrationError
from qcompiler.pipeline.options import METHOD_OPTION, PROGRESS_OPTION, Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.derived import affine_source, derivations, derived_ranges
from qcompiler.quant.input_grid import ValueSample, widened_range
from qcompiler.quant import clip_choice
from qcompiler.quant.observers import MSEObserver, default_clip_weight, make_observer
from qcompiler.quant.plan import group_qparams, require_plan, to_quant_scheme, weight_qparams
from qcompiler.quant.session import observe_session

# Ops whose output range the op itself bounds: a gate or a probability near its bound is
# common and carries the result, so a histogram method's clipping (made for rare outliers)
# only costs accuracy there (entropy clipped PP-OCR cls's HardSigmoid gates to 0.18 of their
# range). These tensors and the graph outputs are observed by min/max whatever the method.
BOUNDED_OPS = ("Sigmoid", "HardSigmoid", "Softmax", "Tanh")


@register_pass("calibrate", requires={"observed"}, provides={"calibrated"}, offers={"input-means"})
class Calibrate(Pass):
    """Run calibration data through ONNX Runtime and compute scales and zero points."""

    config = {"calib_method": METHOD_OPTION,
              "percentile": Option(float, 99.99, "the percentile of the percentile method"),
              "mse_clip_weight": Option(float, None, "mse: how many times a clipped value's error counts "
                                        "(default: 4 or 1, whichever gives the smaller output error)"),
              "progress": PROGRESS_OPTION}

    def run(self, ir, ctx) -> bool:
        plan = require_plan(ir, self.name)
        rep = ctx.pass_report(self.name)
        cfg = self.settings(ctx)
        method = cfg.calib_method or ctx.target.calibration
        opts = {"percentile": cfg.percentile} if method == "percentile" else {}
        if method == "mse" and cfg.mse_clip_weight is not None:
            opts = {"clip_weight": cfg.mse_clip_weight}
        act = to_quant_scheme(ctx.target.scheme("activation"))
        t0 = time.perf_counter()
        ranges = {}
        if plan.tensors:
            full = _full_range_tensors(ir, plan.tensors) if method not in ("minmax", "moving_average") else set()
            # per-tensor methods (transformer-placement: mse on MatMul inputs) unless the user chose one
            per_tensor = {} if cfg.calib_method else dict(ir.ann.notes.get("calib_methods") or {})
            derived = derivations(ir, plan.tensors) if method == "minmax" else {}
            derived = {n: d for n, d in derived.items() if n not in per_tensor}
            means, affine = _means_for_bias_correction(ir, ctx, plan, derived)
            derived = {n: d for n, d in derived.items() if n not in means}
            observed = [name for name in plan.tensors if name not in derived]
            observers = {}
            for name in observed:
                m = "minmax" if name in full else per_tensor.get(name, method)
                observers[name] = make_observer(m, **(opts if m == method and name not in full else {}))
            if per_tensor:
                rep["per_tensor_methods"] = len([n for n in observed if n in per_tensor and n not in full])
            rep["full_range_tensors"] = len(full)
            source = ctx.require_calibration(self.name)
            choosing = [n for n, o in observers.items() if isinstance(o, MSEObserver) and o.clip_weight is None]
            why_not = clip_choice.applicable(ir, act) if choosing else None
            compare = bool(choosing) and why_not is None
            outs = {n: clip_choice.FirstValues() for n in clip_choice.taps(ir)} if compare else {}
            fetched = observed + [n for n in list(means) + list(outs) if n not in observers]
            samples = {t.name: ValueSample() for t in ir.graph.inputs if t.name in observers}
            feeds = {n: _Fanout(*[d[n] for d in (observers, means, samples, outs) if n in d]) for n in fetched}
            kept = clip_choice.FirstBatches(source()) if compare else source()
            batches = observe_session(ir, fetched, kept, feeds, progress=cfg.progress)
            if means:
                measured = {n: m.result() for n, m in means.items() if m.result() is not None}
                measured.update({n: a * measured[root] + b for n, (root, a, b) in affine.items() if root in measured})
                ir.ann.notes["input_means"] = measured
            observers.update(_derived_observers(derived, observers))
            for name, obs in observers.items():
                stats = obs.stats
                if stats.count == 0:
                    raise CalibrationError(f"tensor '{name}' saw no finite values during calibration",
                                           "check the calibration data for NaN/Inf")
                if stats.nan_count or stats.inf_count:
                    ctx.log.warning("tensor '%s' had %d NaN and %d Inf values during calibration; they were ignored",
                                    name, stats.nan_count, stats.inf_count)
                lo, hi = obs.range(act)
                if not hi > lo:
                    ctx.log.warning("tensor '%s' is constant (%g) on the calibration data; a minimal safe scale is used",
                                    name, lo)
                ranges[name] = (float(lo), float(hi))
            if choosing:
                rep["mse_clip_weight"] = _choose_clip_weight(ir, observers, choosing, ranges, act, kept, outs, why_not)
            for name, sample in samples.items():  # graph inputs: the grid off the data's lattice
                ranges[name], steps = widened_range(sample.values(), *ranges[name], act)
                if steps:
                    rep.setdefault("inputs_widened", {})[name] = steps
            rep["batches"] = batches
            rep["derived_tensors"] = len(derived)
        ir.ann.notes["ranges"] = ranges
        ir.ann.qparams.update(group_qparams(ir, ranges, act))
        n_w = weight_qparams(ir, ctx.target, plan)
        rep.update(method=method, tensors=len(ranges), weights=n_w, seconds=round(time.perf_counter() - t0, 4))
        ctx.report["calibration"] = {"method": method, "seconds": rep["seconds"], "batches": rep.get("batches", 0)}
        return bool(ranges) or n_w > 0


def _choose_clip_weight(ir, observers, names, ranges, act, kept, outs, why_not) -> dict:
    """Keep the default clip weight's ranges, or replace them by the plain squared error's
    when the fake-quantized float model's outputs are closer to FP32 with them
    (qcompiler.quant.clip_choice). Returns the pass report's entry."""
    default = default_clip_weight(act)
    if why_not is not None:
        return {"chosen": default, "why_not_compared": why_not}
    plain = {name: tuple(float(v) for v in observers[name].range(act, clip_weight=1.0)) for name in names}
    if all(plain[n] == ranges[n] for n in names):
        return {"chosen": default, "why_not_compared": "both weights give the same ranges"}
    errors = clip_choice.choose(ir, {default: dict(ranges), 1.0: {**ranges, **plain}}, act, kept.kept,
                                {n: r.values for n, r in outs.items()})
    chosen = 1.0 if errors[1.0] < (1.0 - clip_choice.MARGIN) * errors[default] else default
    if chosen != default:
        ranges.update(plain)
    return {"chosen": chosen, "output_noise_ratio": {f"{w:g}": round(e, 6) for w, e in errors.items()},
            "batches": len(kept.kept)}


def _means_for_bias_correction(ir, ctx, plan, derived):
    """E[x] accumulators for the weighted kernels' inputs when a later pass wants
    "input-means" (bias-correction: the same batches through the same float model, so this
    run measures them and it needs no second pass over the data), and the inputs whose mean
    follows from another tensor's, as (root, a, b) with E[x] = a E[root] + b."""
    if "input-means" not in ctx.wanted_later:
        return {}, {}
    means, affine = {}, {}
    for name in weighted_inputs(ir, plan):
        chain = affine_source(derived, name)
        if chain is not None:
            affine[name] = chain
            name = chain[0]
        means.setdefault(name, InputMeans())
    return means, affine


class _Fanout:
    """One fetched tensor feeding its range observer, E[x] accumulator and value sample."""

    def __init__(self, *parts):
        self.parts = parts

    def update(self, value):
        for p in self.parts:
            p.update(value)
        return self


def _derived_observers(derived, observers) -> dict:
    """Min/max observers for the derived tensors, fed the two ends of their derived range
    (the observed sources have warned about NaN/Inf already; one that saw no finite value
    fails the calibration below, before a derived range is needed)."""
    if any(obs.stats.count == 0 for obs in observers.values()):
        return {}
    raw = {name: (obs.stats.min, obs.stats.max) for name, obs in observers.items()}
    return {name: make_observer("minmax").update(np.array(r, dtype=np.float64))
            for name, r in derived_ranges(derived, raw).items()}


def _full_range_tensors(ir, names) -> set:
    """The observed tensors that keep their whole observed range: outputs of BOUNDED_OPS and
    graph outputs (and the pass-through copies of either, which share their scale group)."""
    tensors = ir.tensors()
    keep = {t.name for t in ir.graph.outputs}
    for node in ir.graph.nodes:
        if node.op in BOUNDED_OPS and node.domain in ("", None):
            keep.update(t.name for t in node.outputs)
    roots = {ir.ann.groups.find(n) for n in keep if n in tensors}
    return {n for n in names if n in keep or ir.ann.groups.find(n) in roots}
