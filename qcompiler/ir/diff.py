"""Differences between two IR states (or two models), by node name."""

from __future__ import annotations

import re
from typing import Dict, List

_QP = re.compile(r" \[[^\[\]]*\]$")


def diff_node_lines(before: Dict[str, str], after: Dict[str, str]) -> Dict[str, List[str]]:
    """Classify nodes as added, removed, changed, or only their quantization parameters changed."""
    out: Dict[str, List[str]] = {"added": [], "removed": [], "changed": [], "qparams": []}
    for name, line in after.items():
        if name not in before:
            out["added"].append(line)
        elif before[name] != line:
            old, new = before[name], line
            key = "qparams" if _QP.sub("", old) == _QP.sub("", new) else "changed"
            out[key].append(f"{old}\n    => {new}")
    for name, line in before.items():
        if name not in after:
            out["removed"].append(line)
    return out


def format_diff(d: Dict[str, List[str]], title: str = "") -> str:
    counts = ", ".join(f"{len(v)} {k}" for k, v in d.items())
    lines = [f"# {title}: {counts}" if title else f"# {counts}"]
    marks = {"added": "+", "removed": "-", "changed": "~", "qparams": "q"}
    for key in ("removed", "added", "changed", "qparams"):
        for entry in d[key]:
            lines.append(f"{marks[key]} {entry}")
    return "\n".join(lines) + "\n"
