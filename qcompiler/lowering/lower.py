"""Lowering a QDQ model to a target Program: the driver.

Three steps, each usable alone:

1. recognise (qcompiler.lowering.recognise): walk the QDQ graph in order and turn every
   `DQ -> op -> [Relu|Clip] -> Q` group into one integer kernel (conv with folded int32
   bias and per-channel fixed-point requant, gemm, add, mul, concat, pooling, nearest
   resize, lookup tables for unary ops, integer data movement); a `DQ -> Q` pair becomes a
   Requant or nothing; everything else stays a float op with Dequantize / Quantize at its
   boundary.
2. plan (layout_plan): pick a layout for every conv from the target's layout rules
   (padding channels where the target allows, else the fallback layout) with a reason, let
   layout-agnostic kernels (add, mul, requant, lut, pooling, resize, concat) follow their
   inputs, keep everything else in NCHW.
3. emit: insert conversions only where a region changes layout, pack weights and
   per-channel constants, write the Program.

Every target fact (layout rules, padding, fallback, rounding, requant style) is read from
the resolved `Target`.

    prog = lower_to_program(ir_or_model_or_path, "arm64")
    plan = plan_layouts(ir_or_model, "arm64")      # step 1+2 only (the lower-layout pass)
"""

from __future__ import annotations

import os

import onnx

from .conv_layout import resolve_target
from .emit import emit_program
from .layout_plan import LayoutPlan, plan_kernel_layouts
from .program import Program, program_to_onnx
from .recognise import LoweringState, recognise

__all__ = ["lower_to_program", "plan_layouts", "LayoutPlan", "program_exporter"]


def _to_model(source) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (str, os.PathLike)):
        from ..ir.io import read_model

        return read_model(source)
    if hasattr(source, "graph") and hasattr(source, "ann"):
        from ..ir.io import ir_to_model

        return ir_to_model(source)
    raise TypeError(f"cannot lower a {type(source).__name__}; pass an IR, an ONNX model or a path")


def plan_layouts(source, target=None) -> LayoutPlan:
    """Recognise the integer kernels of a QDQ model and plan their layouts for `target`."""
    lw = LoweringState(_to_model(source), resolve_target(target), plan_only=True)
    recognise(lw)
    plan = plan_kernel_layouts(lw)
    # conversions are counted the same way emission inserts them
    emit_program(lw, plan)
    return plan


def lower_to_program(source, target=None) -> Program:
    """Lower a QDQ model (IR, ONNX model or path) to a Program for `target`.

    A layout plan stored by the lower-layout pass in an IR's notes is honoured for the
    convs it names (when it was made for the same target).
    """
    target = resolve_target(target)
    stored = None
    if hasattr(source, "ann"):
        stored = source.ann.notes.get("layout_plan")
    lw = LoweringState(_to_model(source), target)
    recognise(lw)
    plan = plan_kernel_layouts(lw, stored)
    prog = emit_program(lw, plan)
    prog.meta["source_graph"] = lw.model.graph.name or ""
    return prog


def program_exporter(ir, ctx) -> onnx.ModelProto:
    """The `exporter` option of qcompiler.driver.build.build for `--emit program`: the IR (after the
    target's pipeline) lowered for ctx.target, as the ONNX form of the program. The
    lowering summary lands in ctx.report["program"]."""
    prog = lower_to_program(ir, ctx.target)
    ctx.report["program"] = {"target": prog.target, "requant": prog.requant, "rounding": prog.rounding,
                             "kernels": prog.op_counts(), "conv_layouts": prog.plan.get("conv_layouts", {}),
                             "layout_conversions": prog.plan.get("num_conversions", 0),
                             "conv_decisions": {d["node"]: f"{d['layout']} ({d['reason']})"
                                                for d in prog.plan.get("convs", [])}}
    return program_to_onnx(prog)
