"""`mode: auto` for float models: static when it holds, dynamic when static collapses.

    result = build_auto(model, target, calib=..., options={"mode": "auto", ...}, ...)

A model that already holds Q/DQ is imported, as before (qcompiler.pipeline.modes). A float
model is built static first; its report's held-out output SQNR decides. At or above the
`warn_sqnr` threshold (default 20 dB) the static build is the answer. Below it, and when
the model has something dynamic quantization can take (a MatMul/Gemm with a constant
weight, an LSTM), the dynamic build is made too, measured on the same held-out batches, and
the one with the higher SQNR is returned. The report's `mode_auto` says what was measured
and why the choice fell where it did. Dynamic activations cannot be lowered to a program
or C, so `--emit program|c` stays static.
"""

from __future__ import annotations

from typing import Dict

DYNAMIC_OPS = ("MatMul", "Gemm", "LSTM")


def dynamic_applies(model) -> bool:
    """Whether quantize-dynamic has anything to take: a MatMul/Gemm with a constant weight, or an LSTM."""
    g = model.graph
    consts = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return any(n.op_type == "LSTM" or (n.op_type in DYNAMIC_OPS and len(n.input) > 1 and n.input[1] in consts)
               for n in g.node)


def build_auto(build, split_holdout, model, target, calib, options: Dict, **kwargs):
    """`build` and `split_holdout` are qcompiler.driver.build's (passed in: this module sits
    below it)."""
    from qcompiler.analysis import report as rpt
    from qcompiler.ir import read_model
    from qcompiler.pipeline.modes import detect_mode

    # lazy: op types and initializer names decide; the weights are read only to compare dynamic
    proto = model if hasattr(model, "graph") else read_model(model, lazy=True)
    if detect_mode(proto) != "static":
        return build(model, target, calib=calib, options={**options, "mode": "import"}, **kwargs)
    static = build(model, target, calib=calib, options={**options, "mode": "static"}, **kwargs)
    threshold = float(options.get("warn_sqnr", 20.0))
    s_sqnr = rpt.worst_sqnr(static.report.get("accuracy"))
    choice = {"threshold_db": threshold, "static": {"sqnr_db": s_sqnr}}
    if s_sqnr is None:
        choice.update(chosen="static", why="no held-out error measured (evaluate is off or emit is program/c)")
    elif s_sqnr >= threshold:
        choice.update(chosen="static", why=f"static holds: {s_sqnr:.2f} dB >= {threshold:g} dB")
    elif not dynamic_applies(proto):
        choice.update(chosen="static", why="below the threshold, but dynamic quantization has no MatMul/Gemm/LSTM to take")
    else:
        dynamic = build(model, target, calib=None, options={**options, "mode": "dynamic"}, **kwargs)
        source = static.calib if callable(static.calib) else None
        eval_part = split_holdout(source)[1] if source is not None else None
        batches = (eval_part or source)()
        fp32 = model if hasattr(model, "graph") else read_model(model)
        d = rpt.output_error(fp32, dynamic.model, batches)
        d_sqnr = rpt.worst_sqnr(d)
        choice["dynamic"] = {"sqnr_db": d_sqnr}
        if d_sqnr is not None and d_sqnr > s_sqnr:
            choice.update(chosen="dynamic", why=f"static collapses ({s_sqnr:.2f} dB < {threshold:g} dB); "
                                                f"dynamic keeps {d_sqnr:.2f} dB on the same held-out batches")
            dynamic.report["accuracy"] = d
            dynamic.report["mode_auto"] = choice
            return dynamic
        choice.update(chosen="static", why=f"below the threshold, but dynamic is no better ({d_sqnr} dB)")
    static.report["mode_auto"] = choice
    return static

