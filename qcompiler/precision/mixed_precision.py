"""Automatic mixed precision: keep the fewest layers float that bring the INT8 model
within an accuracy budget.

Budget (one of):
- `min_sqnr`: output SQNR against FP32 (dB, over all outputs) at least this;
- `max_drop` with a task `metric(outputs_list, batches) -> float` (higher is better):
  metric(FP32) - metric(INT8) at most this;
- `max_drop` without a metric: 1 - cosine(FP32, INT8 outputs) at most this.

Search, from full INT8:
1. rank the layers: by default by their own quantization noise (one FP32 run, no variant
   builds: qcompiler.analysis.sensitivity.local_ranking); or from a sensitivity analysis
   (given, or `ranking="analysis"`: the larger of a layer's own error and the error
   keeping it float removes, 2 x layers + 1 variant builds);
2. the shortest prefix of the ranking whose layers, kept float, meet the budget:
   galloping (1, 2, 4, ... layers) then bisection, about 2 log2(n) candidates;
3. prune: re-quantize kept layers (least sensitive first) where the budget still holds,
   in groups that split in halves when they fail, at most `prune_trials` candidates.
A candidate whose SQNR on the first half of the batches is far below the budget is
rejected without the second half; the result is always measured on every batch.
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
        if res.get("partial"):
            return False  # rejected on part of the batches
        if self.min_sqnr is not None and not (res["sqnr_db"] >= self.min_sqnr):
            return False
        if self.max_drop is not None:
            drop = res["metric_drop"] if self.metric is not None else 1.0 - res["cosine"]
            if not (drop <= self.max_drop):
                return False
        return True

    def clearly_fails(self, partial: Dict) -> bool:
        """A decision on part of the evaluation batches: the candidate misses the budget by
        more than the batches left could make up (SQNR REJECT_MARGIN_DB below the bound, or
        twice the allowed 1 - cosine). Task metrics are always measured on every batch
        (a metric of a few samples says little)."""
        if self.metric is not None:
            return False
        if self.min_sqnr is not None and partial["sqnr_db"] < self.min_sqnr - REJECT_MARGIN_DB:
            return True
        if self.max_drop is not None and 1.0 - partial["cosine"] > 2.0 * self.max_drop:
            return True
        return False

    def describe(self) -> str:
        parts = []
        if self.min_sqnr is not None:
            parts.append(f"output SQNR >= {self.min_sqnr:g} dB")
        if self.max_drop is not None:
            parts.append(f"metric drop <= {self.max_drop:g}" if self.metric is not None
                         else f"1 - cosine <= {self.max_drop:g}")
        return " and ".join(parts)


#: a candidate whose SQNR on the first half of the evaluation batches is this far below
#: the budget is rejected without the other half
REJECT_MARGIN_DB = 3.0
#: re-quantization trials of the prune step (after the prefix search), at most
PRUNE_TRIALS = 32


def _summary(res: Dict) -> Dict:
    out = {"sqnr_db": finite_or_none(res["sqnr_db"]), "cosine": res["cosine"], "mse": res["mse"]}
    if "metric" in res:
        out.update(metric=res["metric"], metric_fp32=res["metric_fp32"], metric_drop=res["metric_drop"])
    return out


def smallest_prefix(n: int, test: Callable[[int], bool]) -> Optional[int]:
    """The smallest k in 1..n with test(k) true, for a test that is false at 0 and
    monotone in k (true from some k on); None when test(n) is false. Galloping (1, 2, 4,
    ...) then bisection: about 2 log2(k) tests, few when k is small."""
    if n <= 0:
        return None
    lo, hi = 0, 1  # test(lo) false (0: known); hi: next to try
    while True:
        if test(hi):
            break
        if hi >= n:
            return None
        lo, hi = hi, min(2 * hi, n)
    while hi - lo > 1:  # invariant: test(lo) false, test(hi) true
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    return hi


def prune(kept: List[str], candidates: List[str], test: Callable[[List[str]], bool],
          max_trials: Optional[int] = None) -> List[str]:
    """Re-quantize what can be: candidates (a subset of kept, in the order to try) leave
    the kept list in groups, halves of a group that fails tried in turn (adaptive group
    testing: a run of candidates that all hold costs one test). `test(kept_list)` says
    whether a kept list meets the budget; at most `max_trials` tests."""
    kept = list(kept)
    trials = 0
    stack = [list(candidates)]
    while stack:
        group = [c for c in stack.pop() if c in kept]
        if not group:
            continue
        if max_trials is not None and trials >= max_trials:
            break
        trial = [k for k in kept if k not in group]
        trials += 1
        if test(trial):
            kept = trial
        elif len(group) > 1:
            mid = len(group) // 2
            stack.append(group[mid:])
            stack.append(group[:mid])  # tried first
    return kept


def mixed_precision(model, target, calib, min_sqnr: Optional[float] = None, max_drop: Optional[float] = None,
                    metric: Optional[Callable] = None, options: Optional[Dict] = None, eval_batches: int = 4,
                    calib_batches: Optional[int] = None, sensitivity: Optional[Dict] = None,
                    builder: Optional[VariantBuilder] = None, layers: str = "all",
                    progress: Optional[Callable[[str], None]] = None, max_kept: Optional[int] = None,
                    eval_data=None, ranking: str = "local", prune_trials: Optional[int] = PRUNE_TRIALS) -> Dict:
    """Search a small set of layers to keep float; returns the report (with
    `keep_float`: node names to pass to build(options={"keep_float": ...})).

    `sensitivity`: an analysis of the same model and target (the dict `analyze` returns,
    or the path of its analysis.json) to take the ranking from. Without one, `ranking`
    says how to rank: "local" (each layer's own quantization noise from one FP32 run, no
    variant builds) or "analysis" (a full sensitivity analysis, 2 x layers + 1 variant
    builds). `eval_data`: batches to evaluate every candidate on (all of them; a task
    metric sees their extra arrays). `prune_trials`: at most this many re-quantization
    tests after the prefix search (None: no limit)."""
    if ranking not in ("local", "analysis"):
        raise ValueError(f"ranking must be 'local' or 'analysis', not {ranking!r}")
    t0 = time.perf_counter()
    budget = Budget(min_sqnr, max_drop, metric)
    vb = builder or VariantBuilder(model, target, calib, options=options, eval_batches=eval_batches,
                                   calib_batches=calib_batches, metric=metric, eval_data=eval_data)
    if sensitivity is not None:
        from qcompiler.analysis.sensitivity import check_analysis, load_analysis

        sensitivity = load_analysis(sensitivity)
        check_analysis(sensitivity, vb)
    say = progress or (lambda s: None)
    evals0 = vb.evaluations
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
        return _finish(report, vb, [], {}, base, kmacs, total_macs, True, t0, evals0)
    if sensitivity is None and ranking == "analysis":
        from qcompiler.analysis.sensitivity import analyze

        say("ranking layers by sensitivity")
        sensitivity = analyze(model, target, calib, options=options, builder=vb, layers=layers, progress=progress)
        report["ranking_from"] = "new analysis"
    elif sensitivity is None:
        from qcompiler.analysis.sensitivity import local_ranking

        say("ranking layers by their own quantization noise")
        sensitivity = local_ranking(vb, layers=layers)
        report["ranking_from"] = "local noise"
    scores = {r["kernel"]: r for r in sensitivity["layers"]}
    ranked = [k for k in sensitivity["ranking"] if k in scores and scores[k]["score"] > 0]
    if max_kept is not None:
        ranked = ranked[:max_kept]

    def evaluate(keep: List[str]) -> Dict:
        return vb.evaluate(keep, early_reject=budget.clearly_fails)

    def prefix_ok(n: int) -> bool:
        r = evaluate(ranked[:n])
        say(f"keep the {n} most sensitive float: SQNR {r['sqnr_db']:.2f} dB"
            + (" (rejected on part of the batches)" if r.get("partial") else ""))
        return budget.ok(r)

    # 1. the shortest prefix of the ranking that meets the budget
    n = smallest_prefix(len(ranked), prefix_ok)
    reached = n is not None
    kept = ranked[: n if reached else len(ranked)]
    # 2. re-quantize what the budget allows, the least sensitive first (in groups); among
    # equally sensitive layers the one with more MACs first (what a float layer costs)
    if reached and prune_trials != 0:
        order = sorted(kept, key=lambda k: (scores[k]["score"], -kmacs.get(k, 0)))

        def holds(trial: List[str]) -> bool:
            ok = budget.ok(evaluate(trial))
            if ok:
                say(f"re-quantized down to {len(trial)} float layers, still within budget")
            return ok

        kept = prune(kept, order, holds, max_trials=prune_trials)
    res = vb.evaluate(kept)  # measured on every batch (cached unless it was rejected early)
    return _finish(report, vb, kept, scores, res, kmacs, total_macs, reached, t0, evals0)


def _finish(report, vb, kept, scores, res, kmacs, total_macs, reached, t0, evals0=0) -> Dict:
    rows = []
    for k in kept:
        s = scores.get(k, {})
        m = kmacs.get(k, 0)
        rows.append({"kernel": k, "nodes": list(vb.kernel(k).nodes), "op": vb.kernel(k).op,
                     "why": _why(s),
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
        "evaluations": vb.evaluations - evals0,
        "early_rejections": vb.early_rejections,
        "seconds": round(time.perf_counter() - t0, 2),
    })
    return report


def _why(s: Dict) -> str:
    if not s:
        return ""
    if "only" in s:  # a sensitivity analysis
        return (f"sensitivity rank {s.get('rank')}: only-this-layer SQNR {_db(s['only'].get('sqnr_db'))} dB, "
                f"keeping it float gains {_db(s.get('gain_db'))} dB")
    return f"noise rank {s.get('rank')}: its own quantization noise {_db(s.get('sensitivity_db'))} dB"


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
