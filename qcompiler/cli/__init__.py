"""The `qcompiler` command line: one click group (main.py) and one module per command family,
each a thin shell over the library."""

from .main import cli, main

__all__ = ["cli", "main"]
