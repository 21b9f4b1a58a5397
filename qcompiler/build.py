"""The build driver: model -> IR -> pipeline -> export. The library entry point behind
`qcompiler build`; data flows one way and nothing here reaches back into the CLI.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import onnx

from .errors import ModelError, VerifyError
from .ir import IR, ir_to_model, load_ir, read_model
from .ir.io import model_size
from .pipeline import Context, PassManager, build_pipeline, load_plugin
from .pipeline.dumps import DumpInstrument, ProgressInstrument
from .target import resolve_target

FP32_PIPELINE = ("canonicalize", "fold-bn", "fuse-conv-bias-act")


@dataclass
class BuildResult:
    model: onnx.ModelProto
    ir: IR
    report: Dict[str, Any] = field(default_factory=dict)
    target: Any = None


def build(
    model: Union[str, os.PathLike, onnx.ModelProto],
    target=None,
    pipeline: Optional[Sequence[str]] = None,
    add_passes: Sequence[str] = (),
    plugins: Sequence[str] = (),
    calib: Optional[Callable[[], Iterable[dict]]] = None,
    dump_dir: Optional[str] = None,
    options: Optional[Dict[str, Any]] = None,
    pass_options: Optional[Dict[str, dict]] = None,
    keep_going: bool = False,
    echo: Optional[Callable[[str], None]] = None,
) -> BuildResult:
    """Run a pipeline on a model and return the exported model, the final IR and the report.

    `pipeline` overrides the target's pipeline; without both, the FP32 pipeline runs.
    `calib` is a zero-argument callable that returns a fresh iterator of input batches.
    Options include calib_method, emit, keep_float and evaluate (default True: hold out
    every 10th calibration batch and report the output error on those).
    """
    for plugin in plugins:
        load_plugin(plugin)
    tgt = resolve_target(target)
    names = list(pipeline) if pipeline else list(getattr(tgt, "pipeline", None) or FP32_PIPELINE)
    passes = build_pipeline(names, add_passes, pass_options)
    # lazy: the weights stay in their external data files until a pass reads them
    source = model if isinstance(model, onnx.ModelProto) else read_model(model, lazy=True)
    ir = load_ir(source)
    _verify_input(ir)
    # every 10th batch is held out for the report's output error; a build that does not
    # evaluate (options evaluate=False) calibrates on all of them
    calib_part, eval_part = split_holdout(calib) if (options or {}).get("evaluate", True) else (calib, None)
    ctx = Context(target=tgt, options=dict(options or {}), calib=calib_part)
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
    if exporter is None and ctx.option("emit") in ("program", "c"):  # "c": the CLI generates C from it
        from .lowering.lower import program_exporter

        exporter = program_exporter
    out = exporter(ir, ctx) if exporter else ir_to_model(ir)
    if "quant_plan" in ir.ann.notes:
        _quant_report(ctx, ir, source, out, eval_part if eval_part is not None else calib_part,
                      exported_ir=not exporter)
    return BuildResult(model=out, ir=ir, report=ctx.report, target=tgt)


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
    from . import report as rpt

    plan = ir.ann.notes["quant_plan"]
    r = ctx.report
    r["quantization"] = {"kernels": len(plan["kernels"]), "float_nodes": len(plan["float_reasons"]),
                         "quantized_tensors": len(plan["tensors"]), "qdq": rpt.qdq_counts(int8)}
    r["float_reasons"] = dict(sorted(plan["float_reasons"].items()))
    r["size"] = {"before": model_size(fp32), "after": model_size(int8)}  # ByteSize() fails over 2 GB
    if eval_source is None or ctx.option("emit", "qdq") in ("program", "c"):
        return
    first = next(iter(eval_source()), None)
    from .accuracy.hooks import add_bitops

    add_bitops(r, ir, first, model=int8 if exported_ir else None)
    if ctx.option("evaluate", True):
        ref = _unique_node_names(fp32)
        acc = rpt.output_error(ref, int8, eval_source())
        acc["held_out"] = eval_source is not ctx.calib
        r["accuracy"] = acc
        _flag_low_sqnr(ctx, ir, ref, acc, first)


def _flag_low_sqnr(ctx, ir, fp32: onnx.ModelProto, acc: dict, batch) -> None:
    """Below the `warn_sqnr` threshold (dB, default 20) the report names the quantized
    tensors that lose most on their own; the CLI prints it as one warning."""
    from . import report as rpt

    threshold = float(ctx.option("warn_sqnr", 20.0))
    sq = [o["sqnr_db"] for o in acc.get("outputs", {}).values() if o.get("sqnr_db") is not None]
    if not sq or min(sq) >= threshold or batch is None:
        return
    producers = {o.name: n.name for n in ir.graph.nodes for o in n.outputs}
    worst = rpt.tensor_losses(fp32, ir.ann.qparams, batch, producers)
    acc["low_sqnr"] = {"sqnr_db": min(sq), "threshold": threshold, "worst_tensors": worst}


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
