"""The error types that reach users.

Every error a user can cause is a QCompilerError: the CLI prints it as one line on
stderr ("error: what is wrong. hint: what to do") and exits with its exit code,
without a traceback unless --debug is given.
"""

from __future__ import annotations


class QCompilerError(Exception):
    """A user-facing error: one line, naming the problem and the fix."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


class ModelError(QCompilerError):
    """The input model cannot be read or is not a valid ONNX graph."""


class CalibrationError(QCompilerError):
    """Calibration data is missing, malformed or does not fit the model."""


class TargetError(QCompilerError):
    """A target description file is malformed or names something unknown."""


class PipelineError(QCompilerError):
    """The pass pipeline is mis-ordered or names an unknown pass."""


class PassError(QCompilerError):
    """A pass failed; the message names the pass."""


class VerifyError(QCompilerError):
    """The IR broke an invariant (found by the verifier after a pass)."""


class UsageError(QCompilerError):
    """A command line that cannot be carried out (paths, options)."""
