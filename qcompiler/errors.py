"""The error types that reach users.

Every error a user can cause is a QCompilerError: the CLI prints it as one line on
stderr ("error: what is wrong. hint: what to do") and exits with its exit code,
without a traceback unless --debug is given.
"""

from __future__ import annotations


class QCompilerError(Exception):
    """A user-facing error: one line, naming the problem and the fix."""

    exit_code = 2
    # said when a raise site gives no hint of its own: every error line ends in a hint
    default_hint = "see docs/errors.md"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def __str__(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


class ModelError(QCompilerError):
    """The input model cannot be read or is not a valid ONNX graph."""

    default_hint = "check the model with 'qcompiler inspect MODEL', or re-export it"


class CalibrationError(QCompilerError):
    """Calibration data is missing, malformed or does not fit the model."""

    default_hint = "see the --calib and --preprocess formats in README.md and docs/errors.md"


class TargetError(QCompilerError):
    """A target description file is malformed or names something unknown."""

    default_hint = "see docs/target-language.md"


class PipelineError(QCompilerError):
    """The pass pipeline is mis-ordered or names an unknown pass."""

    default_hint = "see 'qcompiler passes' for the passes and what they require"


class PassError(QCompilerError):
    """A pass failed; the message names the pass."""

    default_hint = "re-run with --debug for the traceback; --dump-dir keeps the last good IR"


class VerifyError(QCompilerError):
    """The IR broke an invariant (found by the verifier after a pass)."""


class UsageError(QCompilerError):
    """A command line that cannot be carried out (paths, options)."""

    default_hint = "see 'qcompiler COMMAND --help'"
