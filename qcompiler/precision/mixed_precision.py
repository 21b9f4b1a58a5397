"""Automatic mixed precision: keep the fewest layers float that bring the INT8 model
within an accuracy budget.

Budget (one of):
- `min_sqnr`: output SQNR against FP32 (dB, over all outputs) at least this;
- `max_drop` with a task `metric(outputs_list, batches) -> float` (higher is better):
  metric(FP32) - metric(INT8) at most this;
- `max_drop` without a metric: 1 - cosine(FP32, INT8 outputs) at most this.

Search, from full INT8:
1. rank the layers by sensitivity (qcompiler.analysis.sensitivity: the larger of a
   layer's own error and the error keeping it float removes);
2. greedy: keep the most sensitive layers float, one at a time, until the budget holds;
3. prune: try to re-quantize each kept layer (least sensitive first) and keep it INT8
   when the budget still holds.
Each candidate is built from one calibration (VariantBuilder) and evaluated on the same
batches: the first calibration batches, or `eval_data` (for a task metric: labelled
samples, separate from the calibration set). The ranking can come from an earlier
`qcompiler analyze` of the same model and target (`sensitivity`: its result or its
analysis.json), which saves the 2 x layers + 1 evaluations of a new analysis. The report
lists every kept layer, why (its sensitivity), and its cost in bit-operations (a float
layer costs 32 x 32 per MAC instead of 8 x 8).

Manual control: `keep_float` (node-name patterns) and a per-layer override file
(qcompiler.precision.overrides).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional

from qcompiler.analysis.bitops import mac_counts
from qcompiler.analysis.evaluate import finite_or_none
from qcompiler.precision.variants import VariantBuilder


class Budget:
    def __init__(self, min_sqnr: Optional[float] = None, max_drop: Optional[float] = None,
                 metric: Optional[Callable] = None):
        if min_sqnr is None and max_drop is None:
            raise ValueError("give min_sqnr or max_drop")
        self.min_sqnr, self.max_drop, self.metric = min_sqnr, max_drop, metric

    def ok(self, res: Dict) -> bool:
        if self.min_sqnr is not None and not (res["sqnr_db"] >= self.min_sqnr):
            return False
        if self.max_drop is not None:
            drop = res["metric_drop"] if self.metric is not None else 1.0 - res["cosine"]
            if not (drop <= self.max_drop):
                return False
        return True

    def describe(self) -> str:
        parts = []
        if self.min_sqnr is not None:
            parts.append(f"output SQNR >= {self.min_sqnr:g} dB")
        if self.max_drop is not None:
            parts.append(f"metric drop <= {self.max_drop:g}" if self.metric is not None
                         else f"1 - cosine <= {self.max_drop:g}")
        return " and ".join(parts)


def _summary(res: Dict) -> Dict:
    out = {"sqnr_db": finite_or_none(res["sqnr_db"]), "cosine": res["cosine"], "mse": res["mse"]}
    if "metric" in res:
        out.update(metric=res["metric"], metric_fp32=res["metric_fp32"], metric_drop=res["metric_drop"])
    return out


def mixed_precision(model, target, calib, min_sqnr: Optional[float] = None, max_drop: Optional[float] = None,
                    metric: Optional[Callable] = None, options: Optional[Dict] = None, eval_batches: int = 4,
                    calib_batches: Optional[int] = None, sensitivity: Optional[Dict] = None,
                    builder: Optional[VariantBuilder] = None, layers: str = "all",
                    progress: Optional[Callable[[str], None]] = None, max_kept: Optional[int] = None,
                    eval_data=None) -> Dict:
    """Search the smallest set of layers to keep float; returns the report (with
    `keep_float`: node names to pass to build(options={"keep_float": ...})).

    `sensitivity`: an analysis of the same model and target (the dict `analyze` returns,
    or the path of its analysis.json) to take the ranking from. `eval_data`: batches to
    evaluate every candidate on (all of them; a task metric sees their extra arrays)."""
    t0 = time.perf_counter()
    budget = Budget(min_sqnr, max_drop, metric)
    vb = builder or VariantBuilder(model, target, calib, options=options, eval_batches=eval_batches,
                                   calib_batches=calib_batches, metric=metric, eval_data=eval_data)
    if sensitivity is not None:
        from qcompiler.analysis.sensitivity import check_analysis, load_analysis

        sensitivity = load_analysis(sensitivity)
        check_analysis(sensitivity, vb)
    say = progress or (lambda s: None)
    base = vb.evaluate([])
    macs = mac_counts(vb.fp32_model(), vb.eval_data[0])
    kmacs = {k.name: int(sum(macs.get(n, 0) for n in k.nodes)) for k in vb.kernels}
    total_macs = sum(macs.values())
    report = {"budget": budget.describe(), "target": getattr(vb.target, "name", str(vb.target)),
              "full_int8": _summary(base), "eval_batches": len(vb.eval_data),
              "eval_samples": _samples(vb.eval_data),
              "ranking_from": "given analysis" if sensitivity is not None else None}
    if budget.ok(base):
        say("full INT8 already meets the budget")
        return _finish(report, vb, [], {}, base, kmacs, total_macs, True, t0)
    if sensitivity is None:
        from qcompiler.analysis.sensitivity import analyze

        say("ranking layers by sensitivity")
        sensitivity = analyze(model, target, calib, options=options, builder=vb, layers=layers, progress=progress)
        report["ranking_from"] = "new analysis"
    scores = {r["kernel"]: r for r in sensitivity["layers"]}
    ranking = [k for k in sensitivity["ranking"] if k in scores and scores[k]["score"] > 0]
    kept: List[str] = []
    res = base
    reached = False
    for k in ranking:
        if max_kept is not None and len(kept) >= max_kept:
            break
        kept.append(k)
        res = vb.evaluate(kept)
        say(f"keep {k} float: SQNR {res['sqnr_db']:.2f} dB")
        if budget.ok(res):
            reached = True
            break
    if reached:
        for k in sorted(kept, key=lambda n: scores[n]["score"]):
            trial = [x for x in kept if x != k]
            r = vb.evaluate(trial)
            if budget.ok(r):
                say(f"re-quantize {k}: SQNR {r['sqnr_db']:.2f} dB, still within budget")
                kept, res = trial, r
    return _finish(report, vb, kept, scores, res, kmacs, total_macs, reached, t0)


def _finish(report, vb, kept, scores, res, kmacs, total_macs, reached, t0) -> Dict:
    rows = []
    for k in kept:
        s = scores.get(k, {})
        m = kmacs.get(k, 0)
        rows.append({"kernel": k, "nodes": list(vb.kernel(k).nodes), "op": vb.kernel(k).op,
                     "why": (f"sensitivity rank {s.get('rank')}: only-this-layer SQNR "
                             f"{_db(s.get('only', {}).get('sqnr_db'))} dB, keeping it float gains "
                             f"{_db(s.get('gain_db'))} dB") if s else "",
                     "sensitivity_db": s.get("sensitivity_db"), "macs": m,
                     "bitops_float": m * 32 * 32, "bitops_int8": m * 8 * 8,
                     "extra_bitops": m * (32 * 32 - 8 * 8)})
    float_macs = sum(r["macs"] for r in rows)
    weighted_total = sum(kmacs.values()) or total_macs
    report.update({
        "reached": reached,
        "kept_float": rows,
        "keep_float": [n for r in rows for n in r["nodes"]],
        "result": _summary(res),
        "int8_mac_share": round(1.0 - float_macs / weighted_total, 6) if weighted_total else None,
        "bitops": {"int8_only": weighted_total * 64, "mixed": (weighted_total - float_macs) * 64 + float_macs * 1024,
                   "fp32": weighted_total * 1024},
        "evaluations": vb.evaluations,
        "seconds": round(time.perf_counter() - t0, 2),
    })
    return report


def _samples(batches) -> Optional[int]:
    try:
        return int(sum(len(next(iter(b.values()))) for b in batches))
    except (TypeError, StopIteration):
        return None


def _db(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "inf"
    return f"{v:.2f}"


def format_mixed(rep: Dict) -> str:
    fi = rep["full_int8"]
    lines = [f"budget: {rep['budget']}   full INT8: SQNR {_db(fi['sqnr_db'])} dB, cosine {fi['cosine']:.5f}"
             + (f", metric {fi['metric']:.4g} (FP32 {fi['metric_fp32']:.4g})" if "metric" in fi else "")
             + (f"; {rep['eval_samples']} evaluation samples" if rep.get("eval_samples") else "")
             + (f"; ranking from the {rep['ranking_from']}" if rep.get("ranking_from") else "")]
    if not rep["reached"]:
        lines.append("budget NOT reached with the layers tried")
    r = rep["result"]
    lines.append(f"mixed: {len(rep['kept_float'])} layers kept float -> SQNR {_db(r['sqnr_db'])} dB, "
                 f"cosine {r['cosine']:.5f}" + (f", metric {r['metric']:.4g} (drop {r['metric_drop']:.4g})"
                                                 if 'metric_drop' in r else "")
                 + f"; INT8 MAC share {100 * (rep['int8_mac_share'] or 0):.1f}%")
    for k in rep["kept_float"]:
        lines.append(f"  float {k['kernel']}: {k['why']}; {k['macs']:,} MACs, +{k['extra_bitops']:,} bit-ops")
    b = rep["bitops"]
    if b["fp32"]:
        lines.append(f"bit-ops: {b['mixed'] / 1e9:.3f} G mixed vs {b['int8_only'] / 1e9:.3f} G all INT8 "
                     f"({100 * b['mixed'] / b['fp32']:.1f}% of FP32)")
    return "\n".join(lines)
