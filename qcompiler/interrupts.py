"""SIGTERM (and SIGHUP) handled like Ctrl-C.

`timeout`, CI cancellation and container stops send SIGTERM, whose default action ends the
process at once: temporary files beside the output and ONNX Runtime's temporary model
folder would stay behind. Inside `terminate_as_interrupt()` the signal raises `Terminated`
instead, a KeyboardInterrupt, so every cleanup that runs on Ctrl-C runs on it too; the CLI
then exits with 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM/SIGHUP)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALS = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise Terminated (once: a repeated signal during the
    cleanup is ignored, so the cleanup completes). Outside the main thread: no change."""
    fired = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    try:
        old = {s: signal.signal(s, handler) for s in _SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
