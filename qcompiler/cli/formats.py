"""Click commands and `qcompiler build` options of the advanced tools.

    from qcompiler.cli.formats import register, build_options, build_options_to_dict
    register(cli)        # adds `qcompiler qformat` and `qcompiler dtypes`

`BUILD_OPTIONS` lists the options `qcompiler build` needs (click decorators, applied by
`build_options(f)`); `build_options_to_dict(**kwargs)` maps their values to
build(options=...) keys (the table below); `qcompiler.pipeline.modes.prepare_build`
then picks the pipeline (adaround placement, dynamic mode, import of Q/DQ models) and
raises min_opset for int4/int16.

    flag                       build option key     value
    --mode static|dynamic|import|auto  mode         str (auto: import a model that holds Q/DQ)
    --weight-dtype int8|int4   weight_dtype         str
    --activation-dtype D       activation_dtype     str (int16; or the target's own)
    --layer-dtypes JSON|FILE   layer_dtypes         {node or glob: {"weight": d, "activation": d}}
    --weight-range minmax|mse  weight_range         str
    --adaround                 adaround             True
    --adaround-seconds S       adaround_seconds     float (time budget of the pass)
    --adaround-iters N         adaround_iters       int (per layer, default 1000)
    --import-strict            import_strict        True (misfit imported parameters are errors)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import click

from qcompiler.errors import UsageError

BUILD_OPTIONS = [
    click.option("--mode", type=click.Choice(["static", "dynamic", "import", "auto"]), default=None,
                 help="static: calibrated Q/DQ (default); dynamic: int8 MatMul/Gemm/LSTM weights, activations "
                      "quantized at run time (no --calib); import: keep the scales of a model that already holds "
                      "Q/DQ nodes and re-target it (no --calib); auto: import when the model holds Q/DQ, else "
                      "static, or dynamic where static's held-out SQNR is below --warn-sqnr and dynamic's is higher."),
    click.option("--weight-dtype", type=click.Choice(["int8", "int4"]), default=None,
                 help="Weight type of every Conv/Gemm/MatMul kernel (int4: opset 21; where the target allows).",),
    click.option("--activation-dtype", type=click.Choice(["int8", "uint8", "int16"]), default=None,
                 help="Activation type (int16: opset 21; where the target allows)."),
    click.option("--layer-dtypes", metavar="JSON|FILE", default=None,
                 help='Per-layer types: {"conv3": {"weight": "int4"}, "head*": {"activation": "int16"}} '
                      "(node names or globs), inline or in a JSON file."),
    click.option("--weight-range", type=click.Choice(["minmax", "mse"]), default=None,
                 help="How weight scales are chosen for int4 and other re-derived weights (default: mse for 4-bit)."),
    click.option("--adaround", is_flag=True, default=False,
                 help="Learn up/down rounding of weights by layer-wise reconstruction (AdaRound); needs --calib."),
    click.option("--adaround-seconds", type=click.FloatRange(min=0), default=None, metavar="S",
                 help="Time budget of AdaRound; layers it cannot reach keep nearest rounding."),
    click.option("--adaround-iters", type=click.IntRange(min=1), default=None, metavar="N",
                 help="AdaRound iterations per layer (default 1000)."),
    click.option("--import-strict", is_flag=True, default=False,
                 help="With --mode import: an imported parameter that does not fit the target is an error."),
]


def build_options(f):
    for opt in reversed(BUILD_OPTIONS):
        f = opt(f)
    return f


def _layer_dtypes(text: Optional[str]):
    if text is None:
        return None
    src = text
    p = Path(text)
    if not text.lstrip().startswith("{"):
        if not p.is_file():
            raise UsageError(f"--layer-dtypes '{text}' is neither JSON nor a file", 'e.g. \'{"conv3": {"weight": "int4"}}\'')
        src = p.read_text()
    try:
        value = json.loads(src)
    except json.JSONDecodeError as e:
        raise UsageError(f"--layer-dtypes: line {e.lineno}: {e.msg}", "fix the JSON") from None
    if not isinstance(value, dict):
        raise UsageError("--layer-dtypes must be a JSON object", '{"node": {"weight": "int4"}}')
    return value


def build_options_to_dict(mode=None, weight_dtype=None, activation_dtype=None, layer_dtypes=None, weight_range=None,
                          adaround=False, adaround_seconds=None, adaround_iters=None, import_strict=False,
                          **_ignored) -> Dict:
    """build(options=...) entries for the values of BUILD_OPTIONS."""
    opts: Dict = {}
    if mode is not None:
        opts["mode"] = mode
    if weight_dtype is not None:
        opts["weight_dtype"] = weight_dtype
    if activation_dtype is not None:
        opts["activation_dtype"] = activation_dtype
    ld = _layer_dtypes(layer_dtypes)
    if ld:
        opts["layer_dtypes"] = ld
    if weight_range is not None:
        opts["weight_range"] = weight_range
    if adaround:
        opts["adaround"] = True
    if adaround_seconds is not None:
        opts["adaround_seconds"] = float(adaround_seconds)
    if adaround_iters is not None:
        opts["adaround_iters"] = int(adaround_iters)
    if import_strict:
        opts["import_strict"] = True
    if (adaround_seconds is not None or adaround_iters is not None) and not adaround:
        raise UsageError("--adaround-seconds/--adaround-iters are only used with --adaround", "add --adaround")
    return opts


# ---------------------------------------------------------------------------- commands


def qformat_command(model: str, echo=click.echo) -> Dict:
    """`qcompiler qformat MODEL`: whether a model is already quantized, in which form, and
    what qcompiler can do with it."""
    from qcompiler.ir import read_model

    from qcompiler.formats.qdq_import import detect_form

    form = detect_form(read_model(model))
    echo(f"form: {form.form}")
    if form.counts:
        echo("ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(form.counts.items())))
    if form.form == "qdq":
        echo("build it for a target with: qcompiler build MODEL --target T --mode import (scales kept, no --calib)")
    else:
        echo(form.message)
    return {"form": form.form, "counts": form.counts, "message": form.message}


def dtypes_command(target: Optional[str] = None, echo=click.echo) -> Dict:
    """`qcompiler dtypes [--target T]`: the weight and activation types each target allows."""
    from qcompiler.target import list_targets, load_target

    from qcompiler.precision.dtypes import allowed_dtypes

    names = [target] if target else [n for n, _ in list_targets()]
    out = {}
    for name in names:
        t = load_target(name)
        row = {"weight": list(allowed_dtypes(t, "weight")), "activation": list(allowed_dtypes(t, "activation"))}
        out[t.name] = row
        echo(f"{t.name:<12} weight: {', '.join(row['weight']):<12} activation: {', '.join(row['activation'])}")
    return out


def register(cli_group) -> None:
    """Add `qformat` and `dtypes` to the qcompiler command group."""

    @cli_group.command("qformat")
    @click.argument("model", type=click.Path(dir_okay=False))
    def qformat(model):
        """Tell whether MODEL is already quantized (Q/DQ, QOperator, dynamic) and what qcompiler can do with it."""
        qformat_command(model)

    @cli_group.command("dtypes")
    @click.option("--target", metavar="NAME|FILE", default=None, help="One target (default: the shipped ones).")
    def dtypes(target):
        """List the weight and activation types each target allows (int4/int16 where it can run them)."""
        dtypes_command(target)
