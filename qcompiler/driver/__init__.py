"""The build driver and the small public API around it (re-exported by `qcompiler`)."""

from .build import BuildResult, build

__all__ = ["BuildResult", "build"]
