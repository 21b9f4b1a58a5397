"""The build driver: model -> IR -> pipeline -> export. `qcompiler build` is a thin shell over
`build()`; every option the CLI has is a keyword or an `options` key here, so a script gets
the same bytes as the command line. Nothing under passes/ or the analysis tools imports this.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import onnx

from qcompiler.errors import ModelError, VerifyError
from qcompiler.formats.shared_constants import share_small_constants
from qcompiler.ir import IR, ir_to_model, load_ir, read_model
from qcompiler.ir.io import model_size
from qcompiler.pipeline import Context, PassManager, build_pipeline, load_plugin
from qcompiler.pipeline.dumps import DumpInstrument, ProgressInstrument
from qcompiler.target import resolve_target

FP32_PIPELINE = ("canonicalize", "fold-bn", "fuse-conv-bias-act")
#: options that need the accuracy preparation (overrides, the mixed-precision search, data-free edits)
ACCURACY_OPTIONS = ("data_free", "equalize", "bias_correction", "input_stats", "bn_sigmas", "min_sqnr",
                    "max_drop", "metric", "eval_data", "analysis", "overrides", "keep_float")
#: options of the advanced preparation (mode, bit widths, AdaRound, import)
ADVANCED_OPTIONS = ("mode", "weight_dtype", "activation_dtype", "layer_dtypes", "weight_range", "adaround",
                    "adaround_seconds", "adaround_iters", "import_strict")

log = logging.getLogger("qcompiler")


@dataclass
class BuildResult:
    model: onnx.ModelProto
    ir: IR
    report: Dict[str, Any] = field(default_factory=dict)
    target: Any = None
    calib: Optional[Callable[[], Iterable[dict]]] = None
    emit: str = "qdq"

    def save(self, path, force: bool = False, report_path=None) -> None:
        """Write the model (a C library folder for emit "c") and, renamed only once the model
        is saved, the report as JSON."""
        from qcompiler.ir.io import save_model
        from qcompiler.outputs import staged

        report = [Path(report_path)] if report_path else []
        with staged(*report, what="report") as tmps:
            if report:
                tmps[0].write_text(json.dumps(self.report, indent=2, sort_keys=True, default=_jsonable) + "\n")
            if self.emit == "c":
                self._write_c_library(Path(path))
            else:
                save_model(self.model, path, force=force)

    def _write_c_library(self, out: Path) -> None:
        from qcompiler.codegen import generate, write_library
        from qcompiler.codegen.shapes import open_dims_from
        from qcompiler.lowering.program import program_from_onnx

        prog = program_from_onnx(self.model)
        sample = next(iter(self.calib()), None) if self.calib is not None else None
        write_library(generate(prog, open_dims_from(prog, sample)), out, force=True)


def build(
    model: Union[str, os.PathLike, onnx.ModelProto],
    target=None,
    *,
    calib=None,
    calib_samples: Optional[int] = None,
    batch_size: Optional[int] = None,
    preprocess=None,
    pipeline: Optional[Sequence[str]] = None,
    add_passes: Sequence[str] = (),
    plugins: Sequence[str] = (),
    dump_dir: Optional[str] = None,
    options: Optional[Dict[str, Any]] = None,
    pass_options: Optional[Dict[str, dict]] = None,
    keep_going: bool = False,
    echo: Optional[Callable[[str], None]] = None,
) -> BuildResult:
    """Run a pipeline on a model and return the exported model, the final IR and the report.

    `target`: a name, a .qtarget path or a Target; without one, x86 when there is calibration
    data (or data_free / mode is set), else the FP32 pipeline. `pipeline` overrides the
    target's pipeline. `calib`: calibration data as `qcompiler build --calib` takes it (a
    path; with `calib_samples`, `batch_size`, `preprocess`), an array dict, or a
    zero-argument callable returning a fresh iterator of input batches.
    `options` keys: calib_method, percentile, mse_clip_weight, emit, evaluate (default True: hold out every
    10th calibration batch and report the output error on those), warn_sqnr, progress, and
    those of ACCURACY_OPTIONS and ADVANCED_OPTIONS (docs/accuracy.md, docs/advanced.md).
    """
    for plugin in plugins:
        load_plugin(plugin)
    options = dict(options or {})
    if (options.get("mode") == "auto" and calib is not None and pipeline is None
            and options.get("emit", "qdq") in ("qdq", "qop")):
        from .auto_mode import build_auto  # static, or dynamic where static collapses

        return build_auto(build, split_holdout, model, target, calib, options, calib_samples=calib_samples,
                          batch_size=batch_size, preprocess=preprocess, add_passes=add_passes,
                          dump_dir=dump_dir, pass_options=pass_options, keep_going=keep_going, echo=echo)
    if target is None and (calib is not None or options.get("data_free") or options.get("mode")):
        target = "x86"
    if target == "x86":
        from qcompiler.target.host import X86_HINT, avx2_without_vnni

        if avx2_without_vnni():
            log.warning(X86_HINT)
    if calib is not None and not callable(calib):
        from qcompiler.calib.source import calibration_source

        calib = calibration_source(model, calib, calib_samples, batch_size, preprocess)
    tgt = resolve_target(target)
    names = list(pipeline) if pipeline is not None else None
    extra: Dict[str, Any] = {}
    if any(options.get(k) not in (None, False, (), []) for k in ACCURACY_OPTIONS):
        from .prepare import prepare_build

        names = names if names is not None else list(getattr(tgt, "pipeline", ()))
        names, options, extra = prepare_build(model, tgt, names, calib, options, echo)
    if any(options.get(k) not in (None, False) for k in ADVANCED_OPTIONS) or (tgt is not None and not names):
        from qcompiler.pipeline.modes import prepare_build as prepare_advanced

        names = names or list(getattr(tgt, "pipeline", ()))
        names, options = prepare_advanced(model, names, options, explicit=pipeline is not None)
    if names is None:
        names = list(getattr(tgt, "pipeline", None) or FP32_PIPELINE)
    result = _run(model, tgt, names, add_passes, pass_options, calib, dump_dir, options, keep_going, echo)
    result.report.update(extra)
    return result


def _run(model, tgt, names, add_passes, pass_options, calib, dump_dir, options, keep_going, echo) -> BuildResult:
    passes = build_pipeline(names, add_passes, pass_options)
    # lazy: the weights stay in their external data files until a pass reads them
    source = model if isinstance(model, onnx.ModelProto) else read_model(model, lazy=True)
    ir = load_ir(source)
    _verify_input(ir)
    # every 10th batch is held out for the report's output error; a build that does not
    # evaluate (options evaluate=False) calibrates on all of them
    calib_part, eval_part = split_holdout(calib) if options.get("evaluate", True) else (calib, None)
    ctx = Context(target=tgt, options=options, calib=calib_part)
    ctx.report["pipeline"] = [p.name for p in passes]
    if tgt is not None:
        ctx.report["target"] = getattr(tgt, "name", str(tgt))
    instruments = []
    if dump_dir:
        instruments.append(DumpInstrument(dump_dir))
    if echo is not None:
        instruments.append(ProgressInstrument(echo))
    PassManager(passes, instruments, keep_going=keep_going).run(ir, ctx)
    exporter = ctx.option("exporter")
    if exporter is None and ctx.option("emit") in ("program", "c"):  # "c": generated from the program
        from qcompiler.lowering.lower import program_exporter

        exporter = program_exporter
    out = exporter(ir, ctx) if exporter else _export_onnx(ir, ctx)
    if ir.ann.plan is not None:
        _quant_report(ctx, ir, source, out, eval_part if eval_part is not None else calib_part,
                      exported_ir=not exporter)
    return BuildResult(model=out, ir=ir, report=ctx.report, target=tgt, calib=calib,
                       emit=ctx.option("emit") or "qdq")


def _export_onnx(ir: IR, ctx) -> onnx.ModelProto:
    """The IR as an ONNX model whose nodes share one initializer per distinct small constant
    (the zero points and scales place-qdq gives every pair): ONNX Runtime's session creation
    grows faster than linearly in the number of initializers."""
    model = ir_to_model(ir)
    shared = share_small_constants(model)
    if shared:
        ctx.report["export"] = {"shared_constants": shared}
    return model


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def _verify_input(ir: IR) -> None:
    """A broken input graph (a cycle, ...) is the model's fault, not the first pass's."""
    try:
        ir.verify()
    except VerifyError as e:
        raise ModelError(f"the input model is not a valid graph: {e.message}", e.hint) from None


def split_holdout(calib, every: int = 10):
    """Hold out every `every`-th batch for the accuracy report when there are enough;
    with fewer batches, evaluation reuses calibration batches (the report says so)."""
    if calib is None:
        return None, None
    batches = sum(1 for _ in itertools.islice(calib(), every))
    if batches < every:
        return calib, None

    def calib_part():
        return (b for i, b in enumerate(calib()) if i % every != every - 1)

    def eval_part():
        return (b for i, b in enumerate(calib()) if i % every == every - 1)

    return calib_part, eval_part


def _quant_report(ctx, ir, fp32: onnx.ModelProto, int8: onnx.ModelProto, eval_source,
                  exported_ir: bool) -> None:
    from qcompiler.analysis import report as rpt

    plan = ir.ann.plan
    r = ctx.report
    r["quantization"] = {"kernels": len(plan.kernels), "float_nodes": len(plan.float_reasons),
                         "quantized_tensors": len(plan.tensors), "qdq": rpt.qdq_counts(int8)}
    r["float_reasons"] = dict(sorted(plan.float_reasons.items()))
    r["size"] = {"before": model_size(fp32), "after": model_size(int8)}  # ByteSize() fails over 2 GB
    if eval_source is None or ctx.option("emit", "qdq") in ("program", "c"):
        return
    first = next(iter(eval_source()), None)
    from .prepare import add_bitops

    add_bitops(r, ir, first, model=int8 if exported_ir else None)
    if ctx.option("evaluate", True):
        ref = _unique_node_names(fp32)
        acc = rpt.output_error(ref, int8, eval_source())
        acc["held_out"] = eval_source is not ctx.calib
        r["accuracy"] = acc
        _flag_low_sqnr(ctx, ir, int8, acc, first)


def _flag_low_sqnr(ctx, ir, int8: onnx.ModelProto, acc: dict, batch) -> None:
    """Below the `warn_sqnr` threshold (dB, default 20) the report names the quantized
    tensors that lose most on their own; the CLI prints it as one warning."""
    from qcompiler.analysis import report as rpt

    threshold = float(ctx.option("warn_sqnr", 20.0))
    worst_db = rpt.worst_sqnr(acc)
    if worst_db is None or worst_db >= threshold or batch is None:
        return
    producers = {o.name: n.name for n in ir.graph.nodes for o in n.outputs}
    worst = rpt.tensor_losses(int8, ir.ann.qparams, batch, producers)
    acc["low_sqnr"] = {"sqnr_db": worst_db, "threshold": threshold, "worst_tensors": worst}


def _unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX allows repeated node names but ONNX Runtime refuses them: give the FP32
    reference run a copy with unique names (the IR renames its nodes the same way)."""
    names = [n.name for n in model.graph.node if n.name]
    if len(names) == len(set(names)):
        return model
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    seen = set(names)
    kept = set()
    for i, node in enumerate(ref.graph.node):
        if node.name and node.name in kept:
            k = i
            while f"{node.name}_{k}" in seen:
                k += 1
            node.name = f"{node.name}_{k}"
            seen.add(node.name)
        kept.add(node.name)
    return ref
