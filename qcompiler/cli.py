"""The `qcompiler` command line.

Errors a user can cause print one line on stderr ("error: ...") and exit with code 2;
--debug (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections import Counter
from pathlib import Path

import click

from . import __version__
from .errors import QCompilerError, UsageError


def accuracy_build_options(f):
    from .accuracy.commands import build_options

    return build_options(f)


def advanced_build_options(f):
    from .advanced.commands import build_options

    return build_options(f)


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


class _OneLineHandler(logging.Handler):
    def emit(self, record):
        level = "warning" if record.levelno >= logging.WARNING else "info"
        _echo_err(f"{level}: {record.getMessage()}")


def _setup_logging(verbose: bool) -> None:
    log = logging.getLogger("qcompiler")
    log.handlers[:] = [_OneLineHandler()]
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    log.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qcompiler")
def cli():
    """qcompiler: a compiler-style INT8 quantizer for ONNX models.

    \b
    Typical use:
      qcompiler build model.onnx --target x86 --calib data/ -o model.int8.onnx
      qcompiler build model.onnx --target arm64 --calib data/ --dump-dir dumps/
      qcompiler passes | targets | inspect MODEL | diff A B

    Add --debug anywhere to see tracebacks.
    """


# ---------------------------------------------------------------------------------- build
@cli.command("build")
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
@accuracy_build_options
@advanced_build_options
def build_cmd(model, output, target, pipeline, add_pass, plugin, dump_dir, calib, calib_samples, batch_size,
              method, percentile, preprocess, emit, report_path, keep_going, force, warn_sqnr, quiet,
              **extra_options):
    """Compile MODEL through a pass pipeline and write the result."""
    from .accuracy.commands import build_options_to_dict
    from .advanced.commands import build_options_to_dict as advanced_options_to_dict
    from .build import build, resolve_target
    from .ir.io import save_model

    model_path = Path(model)
    acc_options = build_options_to_dict(**extra_options)
    adv_options = advanced_options_to_dict(**extra_options)
    if target is None and (calib is not None or acc_options.get("data_free") or adv_options.get("mode")):
        target = "x86"
    if target == "x86":
        from .target.host import X86_HINT, avx2_without_vnni

        if avx2_without_vnni():
            _echo_err(f"warning: {X86_HINT}")
    out = output if output is not None else model_path.with_name(
        model_path.stem + (f".{Path(target).stem}" if target else ".opt") + ".onnx")
    plan = _build_plan(model_path, force, calib, target, preprocess, plugin, extra_options)
    if emit == "c":  # --emit c writes a library folder (qcompiler.codegen)
        if target is None:
            raise UsageError("--emit c needs a target", "pass --target (e.g. x86, arm64, arm64-dot)")
        out = plan.folder(output if output else model_path.with_name(f"{model_path.stem}.{Path(target).stem}_c"),
                          ["*"], "C library folder", "-o")
    else:
        out = plan.file(out, "output", "-o")
    report = plan.file(report_path, "report", "--report") if report_path else None
    if dump_dir:
        from .pipeline.dumps import DUMP_FILES

        plan.folder(dump_dir, DUMP_FILES, "dump folder", "--dump-dir")
    calib_fn = None
    if calib is not None:
        calib_fn = _calibration_source(model_path, calib, calib_samples, batch_size, preprocess)
    options = {"calib_method": method, "percentile": percentile, "emit": emit, "progress": not quiet,
               "warn_sqnr": warn_sqnr}
    options.update(acc_options)
    echo = None if quiet else _echo_err
    names = pipeline.split(",") if pipeline is not None else None  # '' is an empty pipeline, refused
    extra = {}
    if acc_options:  # data-free, equalization, bias correction, mixed precision, overrides
        from .accuracy.hooks import prepare_build
        from .pipeline import load_plugin

        for p in plugin:
            load_plugin(p)
        target = resolve_target(target)
        names = names or list(getattr(target, "pipeline", ()))
        names, options, extra = prepare_build(model_path, target, names, calib_fn, options, echo)
    if adv_options or (target is not None and not names):  # mode auto-detects Q/DQ models
        from .advanced.pipeline import prepare_build as prepare_advanced

        target = resolve_target(target)
        explicit = names is not None
        names = names or list(getattr(target, "pipeline", ()))
        names, options = prepare_advanced(model_path, names, {**options, **adv_options}, explicit=explicit)
    result = build(model_path, target=target, pipeline=names,
                   add_passes=add_pass, plugins=plugin, calib=calib_fn, dump_dir=dump_dir,
                   options=options, keep_going=keep_going, echo=echo)
    result.report.update(extra)
    from .outputs import staged
    from .report import low_sqnr_warning, summarize

    with staged(*([report] if report else []), what="report") as tmps:  # renamed only once the model is saved
        if report:
            tmps[0].write_text(json.dumps(result.report, indent=2, sort_keys=True, default=_jsonable) + "\n")
        if emit == "c":
            _write_c_library(result.model, out, calib_fn)
        else:
            save_model(result.model, out, force=force)
    if not quiet:
        for line in summarize(result.report):  # the result: stdout (progress and diagnostics: stderr)
            click.echo(line)
    warning = low_sqnr_warning(result.report, model_path)
    if warning:
        _echo_err(warning)
    if not quiet:
        _echo_err(f"wrote {out}")


# ---- --emit c: the lowered program becomes a C library folder (qcompiler.codegen)
def _write_c_library(program_model, out: Path, calib_fn) -> None:
    from .codegen import generate, write_library
    from .codegen.shapes import open_dims_from
    from .lowering.program import program_from_onnx

    prog = program_from_onnx(program_model)
    sample = next(iter(calib_fn()), None) if calib_fn is not None else None
    write_library(generate(prog, open_dims_from(prog, sample)), out, force=True)


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def _build_plan(model_path: Path, force: bool, calib, target, preprocess, plugins, extra):
    """What a build reads, so that none of it is ever written."""
    from .outputs import OutputPlan

    plan = OutputPlan("build", force)
    plan.input(model_path, "the input model")
    for path in (calib, target, preprocess, *plugins, extra.get("overrides"), extra.get("eval_data"),
                 extra.get("analysis"), extra.get("layer_dtypes")):
        if path and os.path.exists(path):
            plan.input(path)
    return plan


def _calibration_source(model_path, calib, samples, batch_size, preprocess):
    from .calib.data import load_calibration
    from .ir import read_model
    from .calib.specs import input_specs

    from .calib.model_checks import check_calibratable

    model = read_model(model_path, lazy=True)  # the inputs only: weights stay in their files
    check_calibratable(model, model_path)
    specs = input_specs(model)
    def fresh():
        return load_calibration(calib, specs, samples=samples, batch_size=batch_size, preprocess=preprocess)

    fresh()  # check names, shapes and dtypes up front, before any pass runs
    return fresh


# ---------------------------------------------------------------------------------- passes
@cli.command("passes")
def passes_cmd():
    """List the registered passes with what they require and provide."""
    from .pipeline import all_passes

    for name, cls in all_passes().items():
        req = ",".join(sorted(cls.requires)) or "-"
        prov = ",".join(sorted(cls.provides)) or "-"
        click.echo(f"{name:<22} {cls.description}")
        click.echo(f"{'':<22} requires: {req}   provides: {prov}")


# ---------------------------------------------------------------------------------- inspect
@cli.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
def inspect_cmd(model):
    """Op histogram, inputs/outputs with shapes, opset and size of MODEL."""
    from .ir import load_ir
    from .ir.printer import tensor_str

    ir = load_ir(model)
    g = ir.graph
    size = Path(model).stat().st_size
    n_init = sum(1 for t in ir.tensors().values() if ir.is_const(t))
    click.echo(f"model:   {model}")
    click.echo(f"opset:   {ir.opset}   ir_version: {ir.model_meta.get('ir_version')}   "
               f"producer: {ir.model_meta.get('producer_name') or '-'}")
    click.echo(f"size:    {size / 1e6:.2f} MB   nodes: {len(g.nodes)}   initializers: {n_init}")
    for t in g.inputs:
        click.echo(f"input:   {tensor_str(t)}")
    for t in g.outputs:
        click.echo(f"output:  {tensor_str(t)}")
    hist = Counter(n.op if n.domain in ("", None) else f"{n.domain}.{n.op}" for n in g.nodes)
    click.echo("ops:")
    for op, count in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"  {op:<28}{count:>6}")


# ---------------------------------------------------------------------------------- diff
@cli.command("diff")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
def diff_cmd(a, b):
    """Nodes added, removed and changed between two models or dump steps."""
    from .ir.diff import diff_node_lines, format_diff

    click.echo(format_diff(diff_node_lines(_lines_of(a), _lines_of(b)), f"{a} -> {b}"), nl=False)


def _lines_of(path):
    from .ir import load_ir, node_lines

    p = Path(path)
    if not p.exists() and p.with_suffix(".onnx").exists():
        p = p.with_suffix(".onnx")
    if p.suffix == ".txt":
        if not p.exists():
            raise UsageError(f"'{p}' does not exist", "give a model or a dump step")
        out = {}
        for line in p.read_text().splitlines():
            if " = " in line and not line.startswith(("graph ", "input ", "output ", "scale-group ")):
                out[line.split(" = ", 1)[0]] = line
        return out
    return node_lines(load_ir(p))


# ---------------------------------------------------------------------------------- program
@cli.command("run")
@click.argument("program", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(),
              help="A .npy (one-input program) or a .npz with arrays named after the inputs.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npy or .npz.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--backend", type=click.Choice(["interpreter", "c"]), default="interpreter", show_default=True,
              help="The integer reference interpreter, or the program as generated C compiled with the host "
                   "compiler (cached) and run through ctypes.")
def run_cmd(program, input_path, output, force, backend):
    """Execute a lowered program (--emit program) with the integer reference interpreter."""
    from .outputs import OutputPlan
    from .program_files import run_to_file

    plan = OutputPlan("run", force)
    plan.input(program, "the program")
    plan.input(input_path)
    outs = run_to_file(program, input_path, plan.file(output, "output", "-o"), backend=backend)
    for name, value in outs.items():
        click.echo(f"{name}: {value.dtype}{list(value.shape)}")
    _echo_err(f"wrote {output}")


@cli.command("verify")
@click.argument("program", type=click.Path(dir_okay=False))
@click.argument("qdq_model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(), help="A .npy/.npz file or a folder of them.")
@click.option("--task", type=click.Choice(["auto", "argmax", "probmap", "none"]), default="auto", show_default=True,
              help="Task check: argmax agreement or probability map above 0.3.")
def verify_cmd(program, qdq_model, data, task):
    """Run PROGRAM and QDQ_MODEL (in ONNX Runtime) on the same inputs and report agreement."""
    from .errors import QCompilerError
    from .lowering.verify import verify_files
    from .program_files import check_data_for

    check_data_for(program, data)
    rep = verify_files(program, qdq_model, data, task=task)
    click.echo(rep.format())
    if not rep.ok():
        err = QCompilerError("a program layer disagrees with the QDQ model beyond one quantization step",
                             "see the layer-wise line above; report it with the program and the model")
        err.exit_code = 1
        raise err


# ---------------------------------------------------------------------------------- targets
@cli.group("targets", invoke_without_command=True)
@click.pass_context
def targets_cmd(ctx):
    """List shipped targets; 'targets show NAME' prints one resolved."""
    if ctx.invoked_subcommand is None:
        from .target import list_targets

        for name, desc in list_targets():
            click.echo(f"{name:<14} {desc}")


@targets_cmd.command("show")
@click.argument("name")
def targets_show(name):
    """Print target NAME (or a .qtarget file) with inheritance applied."""
    from .target import format_target, load_target

    click.echo(format_target(load_target(name)), nl=False)


def _register_command_groups() -> None:
    from .accuracy.commands import register as register_accuracy

    register_accuracy(cli)
    try:
        from .advanced.commands import register as register_advanced
    except ImportError:  # pragma: no cover - the advanced tools are optional in a partial checkout
        return
    register_advanced(cli)


_register_command_groups()


# ---------------------------------------------------------------------------------- entry
def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    verbose = "--verbose" in args
    args = [a for a in args if a != "--verbose"]
    _setup_logging(verbose)
    from .interrupts import Terminated, terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            rv = cli.main(args=args, prog_name="qcompiler", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except Terminated as e:
        _echo_err("error: terminated")
        return 128 + e.signum
    except QCompilerError as e:
        if debug:
            traceback.print_exc()
        _echo_err(f"error: {e}")
        return e.exit_code
    except click.exceptions.Abort as e:
        # click turns Ctrl-C (KeyboardInterrupt) into Abort; say what happened
        if isinstance(e.__context__, Terminated):
            _echo_err("error: terminated")
            return 128 + e.__context__.signum
        _echo_err("error: interrupted" if isinstance(e.__context__, KeyboardInterrupt) else "error: aborted")
        return 130
    except click.ClickException as e:
        command = args[0] if args and args[0] in cli.commands else ""
        _echo_err(f"error: {e.format_message()} (hint: see 'qcompiler {command} --help')".replace("  ", " "))
        return 2
    except KeyboardInterrupt:
        _echo_err("error: interrupted")
        return 130
    except SystemExit as e:  # code qcompiler loaded (a metric, a plugin) tried to end the process
        _echo_err(f"error: code loaded by qcompiler called sys.exit({e.code!r}) (hint: a plugin or metric must "
                  "raise an exception instead of exiting)")
        return 2
    except Exception as e:  # a bug in qcompiler, not in the input: still one line unless --debug
        if debug:
            traceback.print_exc()
        _echo_err(f"error: internal error: {type(e).__name__}: {e} (hint: re-run with --debug and report it)")
        return 3


if __name__ == "__main__":
    sys.exit(main())
