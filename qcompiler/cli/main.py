"""The `qcompiler` command group and its entry point; each command lives in its own module
of this package and only wraps the library (qcompiler.driver, analysis, lowering).

Errors a user can cause print one line on stderr ("error: ...") and exit with code 2;
--debug (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from qcompiler import __version__
from qcompiler.errors import QCompilerError


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


def _register_commands() -> None:
    from . import analyze, build, formats, inspect, program

    for module in (build, inspect, program, analyze, formats):
        module.register(cli)


_register_commands()


# ---------------------------------------------------------------------------------- entry
def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    verbose = "--verbose" in args
    args = [a for a in args if a != "--verbose"]
    _setup_logging(verbose)
    from qcompiler.interrupts import Terminated, terminate_as_interrupt

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
