"""`qcompiler analyze | mixed-precision`, and the accuracy flags of `qcompiler build`.

`BUILD_OPTIONS` lists the options `qcompiler build` needs (click decorators, applied by
`build_options(f)`), and `build_options_to_dict(**kwargs)` maps their values to
build(options=...) keys; `qcompiler.driver.prepare.prepare_build` then adjusts the
pipeline and runs the mixed-precision search when asked.
"""

from __future__ import annotations

import json
from typing import Dict, Optional

import click

from qcompiler.errors import UsageError


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _parse_pair(text: Optional[str], what: str):
    if text is None:
        return None
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"cannot read {what} '{text}'", "write two numbers: LO,HI") from None
    return a, b


def data_free_options(data_free: bool, input_range, input_stats, bn_sigmas) -> Dict:
    opts: Dict = {}
    if data_free:
        opts["data_free"] = True
    spec = {}
    r = _parse_pair(input_range, "--input-range")
    if r is not None:
        if not r[0] < r[1]:
            raise UsageError(f"--input-range {input_range}: LO must be below HI", "e.g. --input-range -1,1")
        spec["range"] = list(r)
        spec.setdefault("mean", (r[0] + r[1]) / 2)
        spec.setdefault("std", (r[1] - r[0]) / 6)
    s = _parse_pair(input_stats, "--input-stats")
    if s is not None:
        spec["mean"], spec["std"] = s
    if spec:
        opts["input_stats"] = {"*": spec}
    if bn_sigmas is not None:
        opts["bn_sigmas"] = float(bn_sigmas)
    return opts


def check_budget(min_sqnr, max_drop) -> None:
    """nan or inf would make every comparison false: every layer float, or none."""
    import math

    for flag, value in (("--min-sqnr", min_sqnr), ("--max-drop", max_drop)):
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{flag} {value} is not a finite number", f"e.g. {flag} " +
                             ("30" if flag == "--min-sqnr" else "0.5"))


# ---------------------------------------------------------------------------- build options
BUILD_OPTIONS = [
    click.option("--data-free", is_flag=True,
                 help="No calibration data: activation ranges from BatchNorm statistics, with cross-layer "
                      "equalization and bias correction (Nagel et al. 2019)."),
    click.option("--equalize/--no-equalize", "equalize", default=None,
                 help="Cross-layer equalization of Conv->Relu->Conv pairs (default: on with --data-free)."),
    click.option("--bias-correction/--no-bias-correction", "bias_correction", default=None,
                 help="Correct biases for the expected error of quantized weights, with means measured in "
                      "the calibration run (default: on with --data-free)."),
    click.option("--input-range", metavar="LO,HI", help="Value range of the model inputs, for --data-free."),
    click.option("--input-stats", metavar="MEAN,STD", help="Mean and std of the model inputs, for --data-free."),
    click.option("--bn-sigmas", type=click.FloatRange(min=0.5), default=None,
                 help="--data-free activation ranges: beta +- k*gamma (default 6)."),
    click.option("--min-sqnr", type=float, default=None, metavar="DB",
                 help="Automatic mixed precision: keep the fewest layers float so that the output SQNR "
                      "against FP32 reaches DB."),
    click.option("--max-drop", type=click.FloatRange(min=0), default=None, metavar="D",
                 help="Automatic mixed precision: allowed drop of --metric (without it: of cosine similarity)."),
    click.option("--metric", metavar="MODULE:FUNCTION", default=None,
                 help="Task metric for --max-drop: metric(outputs_list, batches) -> float, higher is better "
                      "(top-1 accuracy in percent: qcompiler.analysis.metrics:top1)."),
    click.option("--eval-data", "eval_data", type=click.Path(dir_okay=False), default=None,
                 help="Data the --min-sqnr/--max-drop search evaluates on, instead of the first calibration "
                      "batches: a .npz with the model inputs and the labels the metric reads (e.g. 'label')."),
    click.option("--analysis", "analysis", type=click.Path(), default=None,
                 help="analysis.json of 'qcompiler analyze' (same model and target): the --min-sqnr/--max-drop "
                      "search takes its layer ranking from it instead of analyzing again."),
    click.option("--overrides", type=click.Path(dir_okay=False), default=None,
                 help='Per-layer precision JSON: {"keep_float": [...], "layers": {NAME: {"activation": '
                      '"int16"|"float"}}}.'),
    click.option("--keep-float", "keep_float", multiple=True, metavar="PATTERN",
                 help="Keep nodes matching PATTERN (fnmatch) float (repeatable)."),
]


def build_options(f):
    for opt in reversed(BUILD_OPTIONS):
        f = opt(f)
    return f


def build_options_to_dict(data_free=False, equalize=None, bias_correction=None, input_range=None, input_stats=None,
                          bn_sigmas=None, min_sqnr=None, max_drop=None, metric=None, overrides=None,
                          keep_float=(), eval_data=None, analysis=None, **_ignored) -> Dict:
    """build(options=...) entries for the values of BUILD_OPTIONS."""
    opts = data_free_options(data_free, input_range, input_stats, bn_sigmas)
    if equalize is not None:
        opts["equalize"] = bool(equalize)
    if bias_correction is not None:
        opts["bias_correction"] = bool(bias_correction)
    check_budget(min_sqnr, max_drop)
    if min_sqnr is not None:
        opts["min_sqnr"] = float(min_sqnr)
    if max_drop is not None:
        opts["max_drop"] = float(max_drop)
    if metric is not None:
        if max_drop is None:
            raise UsageError("--metric is only used with --max-drop", "add --max-drop D")
        opts["metric"] = metric
    for flag, value, key in (("--eval-data", eval_data, "eval_data"), ("--analysis", analysis, "analysis")):
        if value is not None:
            if min_sqnr is None and max_drop is None:
                raise UsageError(f"{flag} is only used with --min-sqnr or --max-drop", "add a budget")
            opts[key] = value
    if overrides is not None:
        opts["overrides"] = overrides
    if keep_float:
        opts["keep_float"] = list(keep_float)
    return opts


# ---------------------------------------------------------------------------- commands
_COMMON = [
    click.argument("model", type=click.Path(dir_okay=False)),
    click.option("--target", required=True, metavar="NAME|FILE", help="Target name or .qtarget file."),
    click.option("--calib", type=click.Path(), help="Calibration data: .npy, .npz, or a folder."),
    click.option("--calib-samples", type=click.IntRange(min=1), help="Use at most N calibration samples."),
    click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size."),
    click.option("--preprocess", type=click.Path(dir_okay=False), help="JSON image preprocessing for image folders."),
    click.option("--eval-batches", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Batches every variant is evaluated on (the first calibration batches)."),
    click.option("--eval-data", "eval_data", type=click.Path(dir_okay=False),
                 help="Evaluate on this .npz (model inputs + labels for --metric) instead of calibration batches."),
    click.option("--method", type=click.Choice(["minmax", "moving_average", "percentile", "entropy", "mse"]),
                 default="minmax", show_default=True, help="Activation calibration method."),
    click.option("--layers", type=click.Choice(["all", "weighted"]), default="all", show_default=True,
                 help="Analyze every kernel of the plan, or only Conv/Gemm/MatMul ones."),
    click.option("--data-free", is_flag=True, help="Ranges from BatchNorm statistics (data only evaluates)."),
    click.option("--input-range", metavar="LO,HI", help="Input value range, for --data-free."),
    click.option("--keep-float", "keep_float", multiple=True, metavar="PATTERN", help="Nodes kept float throughout."),
    click.option("-q", "--quiet", is_flag=True, help="No progress lines."),
]


def _common(f):
    for opt in reversed(_COMMON):
        f = opt(f)
    return f


def _setup(model, target, calib, calib_samples, batch_size, preprocess, method, data_free, input_range, keep_float):
    if calib is None:
        raise UsageError("the accuracy tools measure errors on data", "pass --calib (a few batches are enough)")
    from qcompiler.calib.source import calibration_source

    source = calibration_source(model, calib, calib_samples, batch_size, preprocess)
    options = {"calib_method": method}
    options.update(data_free_options(data_free, input_range, None, None))
    if keep_float:
        options["keep_float"] = list(keep_float)
    return source, options


def _eval_data(eval_data, model):
    if eval_data is None:
        return None
    from qcompiler.analysis.evaldata import load_eval_data

    return load_eval_data(eval_data, model)


def analyze_command(model, target, calib, calib_samples=None, batch_size=1, preprocess=None, eval_batches=4,
                    method="minmax", layers="all", data_free=False, input_range=None, keep_float=(), out=None,
                    top=20, plots=True, quiet=False, echo=click.echo, eval_data=None) -> Dict:
    """`qcompiler analyze`: prints the table, writes JSON/Markdown/plots to `out`."""
    from qcompiler.analysis.sensitivity import analyze, format_table, write_reports

    if out and plots:
        from qcompiler.analysis.plots import have_matplotlib

        if not have_matplotlib():  # said before the work, not after it
            _echo_err("warning: no plots: matplotlib is not installed (pip install 'qcompiler[plots]', "
                      "or pass --no-plots); the tables are written")
            plots = False
    source, options = _setup(model, target, calib, calib_samples, batch_size, preprocess, method, data_free,
                             input_range, keep_float)
    res = analyze(model, target, source, options=options, eval_batches=eval_batches, layers=layers,
                  progress=None if quiet else _echo_err, eval_data=_eval_data(eval_data, model))
    echo(format_table(res, top))
    if out:
        files = write_reports(res, out, plots=plots)
        _echo_err(f"wrote {files['json']} and {files['markdown']}" + (" with plots" if files.get("plots") else ""))
    return res


def mixed_precision_command(model, target, calib, min_sqnr=None, max_drop=None, metric=None, calib_samples=None,
                            batch_size=1, preprocess=None, eval_batches=4, method="minmax", layers="all",
                            data_free=False, input_range=None, keep_float=(), output=None, report=None, quiet=False,
                            echo=click.echo, eval_data=None, analysis=None) -> Dict:
    """`qcompiler mixed-precision`: search, print, write the override config (and report)."""
    from qcompiler.outputs import staged

    from qcompiler.driver.prepare import load_metric
    from qcompiler.precision.mixed_precision import format_mixed, mixed_precision
    from qcompiler.analysis.sensitivity import _clean

    if min_sqnr is None and max_drop is None:
        raise UsageError("give a budget", "--min-sqnr DB or --max-drop D")
    check_budget(min_sqnr, max_drop)
    source, options = _setup(model, target, calib, calib_samples, batch_size, preprocess, method, data_free,
                             input_range, keep_float)
    rep = mixed_precision(model, target, source, min_sqnr=min_sqnr, max_drop=max_drop, metric=load_metric(metric),
                          options=options, eval_batches=eval_batches, layers=layers,
                          progress=None if quiet else _echo_err, eval_data=_eval_data(eval_data, model),
                          sensitivity=analysis)
    echo(format_mixed(rep))
    files = [p for p in (output, report) if p]
    with staged(*files) as tmps:  # the override file and its report are written together
        if output:
            cfg = {"keep_float": list(keep_float) + rep["keep_float"], "layers": {}}
            tmps[0].write_text(json.dumps(cfg, indent=2) + "\n")
        if report:
            tmps[-1].write_text(json.dumps(_clean(rep), indent=2) + "\n")
    if output:
        _echo_err(f"wrote {output} (use it with: qcompiler build --overrides {output})")
    return rep


def _plan(command, force, model, *inputs):
    """The output check of a command: its inputs are never written."""
    import os

    from qcompiler.outputs import OutputPlan

    plan = OutputPlan(command, force)
    plan.input(model, "the input model")
    for path in inputs:
        if path and os.path.exists(path):
            plan.input(path)
    return plan


def register(cli_group) -> None:
    """Add `analyze` and `mixed-precision` to the qcompiler command group."""

    @cli_group.command("analyze")
    @_common
    @click.option("--out", "out", type=click.Path(file_okay=False),
                  help="Write analysis.json, analysis.md and plots (PNG) into this folder.")
    @click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Rows in the terminal table.")
    @click.option("--plots/--no-plots", default=True, show_default=True, help="PNG plots in --out (needs matplotlib).")
    @click.option("--force", is_flag=True, help="Replace analysis files already in --out.")
    def analyze_cmd(model, target, calib, calib_samples, batch_size, preprocess, eval_batches, eval_data, method,
                    layers, data_free, input_range, keep_float, quiet, out, top, plots, force):
        """Per-layer quantization sensitivity, range statistics and abnormal-layer flags of MODEL."""
        from qcompiler.analysis.sensitivity import REPORT_FILES

        if out is not None:
            _plan("analysis", force, model, target, calib, preprocess, eval_data).folder(out, REPORT_FILES)
        analyze_command(model, target, calib, calib_samples, batch_size, preprocess, eval_batches, method, layers,
                        data_free, input_range, keep_float, out, top, plots, quiet, eval_data=eval_data)

    @cli_group.command("mixed-precision")
    @_common
    @click.option("--min-sqnr", type=float, metavar="DB", help="Budget: output SQNR against FP32 at least DB.")
    @click.option("--max-drop", type=click.FloatRange(min=0), metavar="D",
                  help="Budget: metric drop at most D (without --metric: 1 - cosine).")
    @click.option("--metric", metavar="MODULE:FUNCTION", help="metric(outputs_list, batches) -> float "
                  "(top-1 accuracy in percent: qcompiler.analysis.metrics:top1).")
    @click.option("--analysis", "analysis", type=click.Path(),
                  help="analysis.json of 'qcompiler analyze' (same model and target): reuse its layer ranking.")
    @click.option("-o", "--output", type=click.Path(dir_okay=False),
                  help="Write the layers to keep float as an override JSON for 'build --overrides'.")
    @click.option("--report", "report", type=click.Path(dir_okay=False), help="Write the search report as JSON.")
    @click.option("--force", is_flag=True, help="Overwrite existing -o and --report files.")
    def mixed_cmd(model, target, calib, calib_samples, batch_size, preprocess, eval_batches, eval_data, method,
                  layers, data_free, input_range, keep_float, quiet, min_sqnr, max_drop, metric, analysis, output,
                  report, force):
        """Find the fewest layers to keep float so that MODEL meets an accuracy budget."""
        plan = _plan("search", force, model, target, calib, preprocess, eval_data, analysis)
        if output is not None:
            plan.file(output, "output", "-o")
        if report is not None:
            plan.file(report, "report", "--report")
        mixed_precision_command(model, target, calib, min_sqnr, max_drop, metric, calib_samples, batch_size,
                                preprocess, eval_batches, method, layers, data_free, input_range, keep_float,
                                output, report, quiet, eval_data=eval_data, analysis=analysis)
