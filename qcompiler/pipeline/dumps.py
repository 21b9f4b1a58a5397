"""Per-pass dumps: after each pass, NN-<pass>.onnx (opens in Netron), NN-<pass>.txt
(the printer) and NN-<pass>.diff (against the previous step), plus index.json/index.txt
with timings. On failure, failed.txt names the pass; the last good IR is the last dump.
Every file goes through the output gateway (qcompiler.outputs): written whole or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from ..errors import UsageError
from ..ir.diff import diff_node_lines, format_diff
from ..ir.io import ir_to_model
from ..ir.printer import format_ir, node_lines
from ..outputs import staged, write_text

# The files a dump folder holds (fnmatch patterns): the build checks them before it starts
# and replaces them, and only them.
DUMP_FILES = ("[0-9][0-9]-*", "failed.txt", "index.json", "index.txt")


class DumpInstrument:
    def __init__(self, directory):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create dump folder '{self.dir}': {e.strerror}",
                             "choose another --dump-dir") from None
        self.prev = None
        self.entries = []

    def _write(self, stem: str, ir, title: str) -> None:
        lines = node_lines(ir)
        write_text(self.dir / f"{stem}.txt", format_ir(ir))
        try:
            with staged(self.dir / f"{stem}.onnx") as (tmp,):
                onnx.save_model(ir_to_model(ir), str(tmp))
        except Exception as e:  # a dump must never hide the real result
            write_text(self.dir / f"{stem}.onnx.error", f"{type(e).__name__}: {e}\n")
        if self.prev is not None:
            write_text(self.dir / f"{stem}.diff", format_diff(diff_node_lines(self.prev, lines), title))
        self.prev = lines

    def start(self, ir, pipeline) -> None:
        for old in list(self.dir.glob(DUMP_FILES[0])) + [self.dir / "failed.txt"]:
            if old.is_file():
                old.unlink()
        self._write("00-input", ir, "input")
        self.entries = [{"index": 0, "pass": "input", "file": "00-input", "nodes": len(ir.graph.nodes)}]
        self._index()

    def after(self, index, p, ir, entry) -> None:
        stem = f"{index:02d}-{p.name}"
        self._write(stem, ir, p.name)
        self.entries.append(dict(entry, file=stem))
        self._index()

    def failed(self, index, p, err) -> None:
        write_text(self.dir / "failed.txt",
                   f"pass {index:02d}-{p.name} failed: {err}\nthe last good IR is {self.entries[-1]['file']}\n")

    def finish(self, ir, timings) -> None:
        self._index()

    def _index(self) -> None:
        write_text(self.dir / "index.json", json.dumps(self.entries, indent=2) + "\n")
        rows = [f"{'step':<28}{'seconds':>10}{'nodes':>8}  changed"]
        for e in self.entries:
            rows.append(f"{e['file']:<28}{e.get('seconds', 0.0):>10.4f}{e['nodes']:>8}  {e.get('changed', '')}")
        write_text(self.dir / "index.txt", "\n".join(rows) + "\n")


class ProgressInstrument:
    """One line per pass on stderr (quiet by default for library use)."""

    def __init__(self, echo):
        self.echo = echo

    def start(self, ir, pipeline) -> None:
        self.total = len(pipeline)

    def after(self, index, p, ir, entry) -> None:
        self.echo(f"[{index}/{self.total}] {p.name:<22} {entry['seconds']*1000:8.1f} ms  "
                  f"{entry['nodes']} nodes{'' if entry['changed'] else '  (no change)'}")

    def failed(self, index, p, err) -> None:
        pass

    def finish(self, ir, timings) -> None:
        pass
