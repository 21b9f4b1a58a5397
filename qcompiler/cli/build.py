"""`qcompiler build`: flags -> `qcompiler.build()` keywords and options -> `BuildResult.save`.
Nothing is computed here that the library does not do for a script."""

from __future__ import annotations

import os
from pathlib import Path

import click

from qcompiler.errors import UsageError

from . import analyze, formats


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def build_options_from_flags(method, percentile, emit, warn_sqnr, quiet, extra, clip_weight=None) -> dict:
    """build(options=...) for the command line's flags (the keys docs/api.md lists)."""
    options = {"calib_method": method, "percentile": percentile, "emit": emit, "progress": not quiet,
               "warn_sqnr": warn_sqnr}
    if clip_weight is not None:
        options["mse_clip_weight"] = clip_weight
    options.update(analyze.build_options_to_dict(**extra))
    options.update(formats.build_options_to_dict(**extra))
    return options


def register(group) -> None:
    """Add `build` to the qcompiler group."""

    @group.command("build")
    @click.argument("model", type=click.Path(dir_okay=False))
    @click.option("-o", "--output", type=click.Path(), help="Output model path (default: MODEL.<target>.onnx; "
                  "a folder MODEL.<target>_c for --emit c).")
    @click.option("--target", "target", metavar="NAME|FILE", help="Target name (see 'qcompiler targets') or a .qtarget file. "
                  "Default: x86 when --calib is given, else the FP32 pipeline only.")
    @click.option("--pipeline", metavar="A,B,C", help="Explicit pass list, replacing the target's pipeline.")
    @click.option("--add-pass", "add_pass", multiple=True, metavar="NAME[:after=P|:before=P]",
                  help="Insert a pass into the pipeline (repeatable).")
    @click.option("--plugin", multiple=True, type=click.Path(dir_okay=False), help="Python file that registers passes (repeatable).")
    @click.option("--dump-dir", type=click.Path(file_okay=False), help="Write NN-<pass>.onnx/.txt/.diff after every pass.")
    @click.option("--calib", type=click.Path(), help="Calibration data: .npy, .npz, or a folder of .npy/.npz/images.")
    @click.option("--calib-samples", type=click.IntRange(min=1), help="Use at most N calibration samples.")
    @click.option("--batch-size", type=click.IntRange(min=1), help="Calibration batch size (default: the model's fixed batch, else 1).")
    @click.option("--method", type=click.Choice(["minmax", "moving_average", "percentile", "entropy", "mse"]),
                  default=None, help="Activation calibration method [default: the target's `calibration`, "
                                     "minmax unless the target file says otherwise].")
    @click.option("--percentile", type=click.FloatRange(50, 100), default=99.99, show_default=True,
                  help="Percentile for --method percentile.")
    @click.option("--clip-weight", type=click.FloatRange(min=1), default=None,
                  help="mse: how many times a clipped value's squared error counts [default: 4 or 1 on zero-point "
                       "grids, whichever keeps the model's outputs closer to FP32 on the first calibration batches; "
                       "1 on symmetric grids].")
    @click.option("--preprocess", type=click.Path(dir_okay=False),
                  help="Image preprocessing for image folders: a .json/.toml or key=value file "
                       "(resize, crop, mean, std, scale, layout, color).")
    @click.option("--emit", type=click.Choice(["qdq", "qop", "program", "c"]), default="qdq", show_default=True,
                  help="Output form: QDQ ONNX, ONNX integer ops, the target-lowered program, or a C library "
                       "folder generated from the program (see docs/codegen.md).")
    @click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the build report as JSON here.")
    @click.option("--keep-going", is_flag=True, help="Skip a failing pass (IR restored) instead of stopping.")
    @click.option("--force", is_flag=True, help="Overwrite an existing output file.")
    @click.option("--warn-sqnr", type=click.FloatRange(min=-1e9, max=1e9), default=20.0, show_default=True,
                  help="Warn (exit code stays 0) when the held-out output SQNR is below this many dB, naming "
                       "the tensors that lose most.")
    @click.option("-q", "--quiet", is_flag=True, help="Print only errors and warnings.")
    @analyze.build_options
    @formats.build_options
    def build_cmd(model, output, target, pipeline, add_pass, plugin, dump_dir, calib, calib_samples, batch_size,
                  method, percentile, clip_weight, preprocess, emit, report_path, keep_going, force, warn_sqnr,
                  quiet, **extra_options):
        """Compile MODEL through a pass pipeline and write the result."""
        from qcompiler.analysis.report import low_sqnr_warning, summarize
        from qcompiler.driver import build

        model_path = Path(model)
        options = build_options_from_flags(method, percentile, emit, warn_sqnr, quiet, extra_options, clip_weight)
        shown = target or ("x86" if calib is not None or options.get("data_free") or options.get("mode") else None)
        plan = _output_plan(model_path, force, calib, target, preprocess, plugin, extra_options)
        if emit == "c":  # --emit c writes a library folder (qcompiler.codegen)
            if target is None:
                raise UsageError("--emit c needs a target", "pass --target (e.g. x86, arm64, arm64-dot)")
            out = plan.folder(output if output else model_path.with_name(f"{model_path.stem}.{Path(target).stem}_c"),
                              ["*"], "C library folder", "-o")
        else:
            out = plan.file(output if output is not None else model_path.with_name(
                model_path.stem + (f".{Path(shown).stem}" if shown else ".opt") + ".onnx"), "output", "-o")
        report = plan.file(report_path, "report", "--report") if report_path else None
        if dump_dir:
            from qcompiler.pipeline.dumps import DUMP_FILES

            plan.folder(dump_dir, DUMP_FILES, "dump folder", "--dump-dir")
        names = pipeline.split(",") if pipeline is not None else None  # '' is an empty pipeline, refused
        result = build(model_path, target, calib=calib, calib_samples=calib_samples, batch_size=batch_size,
                       preprocess=preprocess, pipeline=names, add_passes=add_pass, plugins=plugin,
                       dump_dir=dump_dir, options=options, keep_going=keep_going,
                       echo=None if quiet else _echo_err)
        result.save(out, force=force, report_path=report)
        if not quiet:
            for line in summarize(result.report):  # the result: stdout (progress and diagnostics: stderr)
                click.echo(line)
        warning = low_sqnr_warning(result.report, model_path)
        if warning:
            _echo_err(warning)
        if not quiet:
            _echo_err(f"wrote {out}")


def _output_plan(model_path: Path, force: bool, calib, target, preprocess, plugins, extra):
    """What a build reads, so that none of it is ever written."""
    from qcompiler.outputs import OutputPlan

    plan = OutputPlan("build", force)
    plan.input(model_path, "the input model")
    for path in (calib, target, preprocess, *plugins, extra.get("overrides"), extra.get("eval_data"),
                 extra.get("analysis"), extra.get("layer_dtypes")):
        if path and os.path.exists(path):
            plan.input(path)
    return plan
