"""One calibration, many quantized variants.

The sensitivity analysis and the mixed-precision search build the same model many times
with different layers kept float. Calibration ranges do not depend on which layers are
quantized (they are FP32 activation statistics), so a `VariantBuilder` runs the FP32
passes and the calibration once and then makes each variant from a copy of the FP32 IR:
insert-observers with `keep_float`, the stored ranges, the passes between calibration
and place-qdq (scale unification), and place-qdq. Variants are evaluated on a few fixed
batches against FP32 outputs computed once (qcompiler.quant.layers.Evaluator): the
first `eval_batches` calibration batches, or all of `eval_data` when it is given (its
batches may carry arrays that are not model inputs, labels for instance: the task metric
sees them, the model does not).
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import onnx

from qcompiler.errors import PipelineError
from qcompiler.ir import ir_to_model, load_ir, read_model
from qcompiler.pipeline import Context, PassManager
from qcompiler.pipeline.registry import get_pass
from qcompiler.quant.plan import require_plan

from qcompiler.analysis.evaluate import Evaluator
from qcompiler.ir.clone import clone_ir
from qcompiler.quant.layers import apply_ranges
from qcompiler.pipeline.edits import adjust_pipeline

CALIBRATORS = ("calibrate", "calibrate-data-free")
SLOW_MID = ("bias-correction",)  # need data per variant: left out of variants unless asked


def _materialize(calib, n: Optional[int]) -> List[Dict[str, np.ndarray]]:
    it = calib() if callable(calib) else iter(calib)
    return list(itertools.islice(it, n) if n else it)


class VariantBuilder:
    """FP32 passes and calibration once; `build(keep)` for any set of kernels kept float."""

    def __init__(self, model, target, calib=None, options: Optional[Dict] = None,
                 pipeline: Optional[Sequence[str]] = None, eval_batches: int = 4,
                 calib_batches: Optional[int] = None, metric: Optional[Callable] = None,
                 fused_eval: bool = False, eval_data=None, include_slow_passes: bool = False):
        from qcompiler.target import resolve_target

        t0 = time.perf_counter()
        self.options = dict(options or {})
        self.target = resolve_target(target)
        if self.target is None:
            raise PipelineError("accuracy tools need a target", "pass --target x86|arm64|cuda")
        self.source = model if isinstance(model, onnx.ModelProto) else read_model(model)
        names = list(pipeline) if pipeline else adjust_pipeline(self.target.pipeline, self.options)
        if "insert-observers" not in names or "place-qdq" not in names:
            raise PipelineError("the pipeline has no insert-observers / place-qdq", "use a quantizing target pipeline")
        cal = next((n for n in names if n in CALIBRATORS), None)
        if cal is None:
            raise PipelineError("the pipeline has no calibration pass", "add calibrate")
        i_obs, i_cal, i_qdq = names.index("insert-observers"), names.index(cal), names.index("place-qdq")
        self.pre = names[:i_obs]
        self.mid = [n for n in names[i_cal + 1:i_qdq] if include_slow_passes or n not in SLOW_MID]
        self.calibrator = cal
        self.data_free = cal == "calibrate-data-free"
        self.calib_data = None if calib is None else _materialize(calib, calib_batches)
        if self.calib_data is not None and not self.calib_data:
            raise PipelineError("the calibration data holds no batches", "give at least one batch")
        if eval_data is not None:  # given explicitly (labelled data for a task metric): all of it
            self.eval_data = _materialize(eval_data, None)
            if not self.eval_data:
                raise PipelineError("the evaluation data holds no batches", "give at least one batch")
        elif self.calib_data is not None:
            self.eval_data = self.calib_data[:eval_batches]
        else:
            raise PipelineError("evaluation needs data", "pass --calib (a few batches are enough)")
        self.ctx_calib = (lambda: iter(self.calib_data)) if self.calib_data is not None else None
        # FP32 passes
        ir = load_ir(self.source)
        self._run(ir, self.pre)
        self.fp32_ir = clone_ir(ir)
        # the full plan and its calibration
        self._run(ir, ["insert-observers", cal])
        self.full_ir = ir
        self.plan = require_plan(ir, "mixed precision")
        self.ranges: Dict[str, tuple] = dict(ir.ann.notes.get("ranges", {}))
        self.evaluator = Evaluator(self.source, self.eval_data, fused=fused_eval, metric=metric)
        self.evaluations = 0
        self.early_rejections = 0
        self.setup_seconds = time.perf_counter() - t0
        self._cache: Dict[frozenset, Dict] = {}

    # ---------------------------------------------------------------- internals
    def _ctx(self, extra: Optional[Dict] = None) -> Context:
        opts = dict(self.options)
        opts.update(extra or {})
        return Context(target=self.target, options=opts, calib=self.ctx_calib)

    def _run(self, ir, names: Sequence[str], extra: Optional[Dict] = None) -> Context:
        ctx = self._ctx(extra)
        PassManager([get_pass(n)() for n in names]).run(ir, ctx)
        return ctx

    @property
    def kernels(self):
        return self.plan.kernels

    def kernel(self, name: str):
        return next(k for k in self.plan.kernels if k.name == name)

    def keep_nodes(self, kernels: Iterable[str]) -> List[str]:
        by = {k.name: k for k in self.plan.kernels}
        nodes: List[str] = []
        for k in kernels:
            nodes.extend(by[k].nodes)
        return nodes

    def _missing_ranges(self, ir, names: List[str]) -> None:
        """Calibrate tensors the full plan did not observe (rare: a kernel kept float can
        leave a pass-through output quantized on its own)."""
        if self.data_free:
            from qcompiler.calib.bn_moments import data_free_stats

            stats, _ = data_free_stats(ir, k=float(self.options.get("bn_sigmas", 6.0)),
                                       input_stats=self.options.get("input_stats"))
            for n in names:
                if n in stats:
                    self.ranges[n] = stats[n].range()
            return
        from qcompiler.quant.observers import make_observer
        from qcompiler.quant.plan import to_quant_scheme
        from qcompiler.quant.session import observe_session

        act = to_quant_scheme(self.target.scheme("activation"))
        obs = {n: make_observer(self.options.get("calib_method", "minmax")) for n in names}
        observe_session(ir_to_model(ir), names, iter(self.calib_data), obs)
        for n, o in obs.items():
            lo, hi = o.range(act)
            self.ranges[n] = (float(lo), float(hi))

    # ---------------------------------------------------------------- API
    def build_ir(self, keep_float_kernels: Iterable[str] = (), extra_keep_nodes: Iterable[str] = ()):
        keep = self.keep_nodes(keep_float_kernels) + list(extra_keep_nodes)
        ir = clone_ir(self.fp32_ir)
        prior = list(self.options.get("keep_float", ()) or ())
        self._run(ir, ["insert-observers"], {"keep_float": prior + keep})
        plan = require_plan(ir, "mixed precision")
        missing = [t for t in plan.tensors if t not in self.ranges]
        if missing:
            self._missing_ranges(ir, missing)
        apply_ranges(ir, self.target, {t: self.ranges[t] for t in plan.tensors})
        self._run(ir, self.mid + ["place-qdq"], {"keep_float": prior + keep})
        return ir

    def build(self, keep_float_kernels: Iterable[str] = ()) -> onnx.ModelProto:
        return ir_to_model(self.build_ir(keep_float_kernels))

    def evaluate(self, keep_float_kernels: Iterable[str] = (), early_reject: Optional[Callable] = None) -> Dict:
        """The variant's error on the evaluation batches (cached per kept set). With
        `early_reject(partial) -> bool`, the second half of the batches is only run when
        the first half does not already reject the variant; such a result is marked
        `partial` (and is measured in full when asked again without `early_reject`)."""
        key = frozenset(keep_float_kernels)
        hit = self._cache.get(key)
        if hit is not None and (early_reject is not None or not hit.get("partial")):
            return hit
        res = self.evaluator.error(self.build(key), early_reject=early_reject)
        self.evaluations += 1
        self.early_rejections += bool(res.get("partial"))
        self._cache[key] = res
        return res

    def fp32_model(self) -> onnx.ModelProto:
        return ir_to_model(self.fp32_ir)
