"""The build driver: model -> IR -> pipeline -> export. The library entry point behind
`qcompiler build`; data flows one way and nothing here reaches back into the CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import onnx

from .errors import PipelineError
from .ir import IR, ir_to_model, load_ir
from .pipeline import Context, PassManager, build_pipeline, load_plugin
from .pipeline.dumps import DumpInstrument, ProgressInstrument

FP32_PIPELINE = ("canonicalize", "fold-bn", "fuse-conv-bias-act")


@dataclass
class BuildResult:
    model: onnx.ModelProto
    ir: IR
    report: Dict[str, Any] = field(default_factory=dict)
    target: Any = None


def resolve_target(target):
    if target is None or not isinstance(target, (str, os.PathLike)):
        return target
    from .target import load_target

    return load_target(str(target))


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
    """
    for plugin in plugins:
        load_plugin(plugin)
    tgt = resolve_target(target)
    names = list(pipeline) if pipeline else list(getattr(tgt, "pipeline", None) or FP32_PIPELINE)
    passes = build_pipeline(names, add_passes, pass_options)
    ir = load_ir(model)
    ctx = Context(target=tgt, options=dict(options or {}), calib=calib)
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
    out = exporter(ir, ctx) if exporter else ir_to_model(ir)
    return BuildResult(model=out, ir=ir, report=ctx.report, target=tgt)


def require_calibration(ctx: Context, who: str) -> Callable[[], Iterable[dict]]:
    if ctx.calib is None:
        raise PipelineError(f"pass '{who}' needs calibration data", "pass --calib PATH (a .npy/.npz file or folder)")
    return ctx.calib
