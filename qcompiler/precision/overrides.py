"""Per-layer precision overrides, from a small JSON file or dict:

    {"keep_float": ["head.*", "Softmax*"],
     "layers": {"layer3.1.conv2": {"activation": "int16"},
                "classifier":     {"activation": "float"}}}

`keep_float` holds node-name patterns (fnmatch) kept float, like --keep-float. A layer
(node name) with "activation": "float" is kept float too. "int16" gives the layer's
activation inputs and output 16-bit symmetric quantization (opset 21 QuantizeLinear) -
only where the target allows it: the target declares an int16 activation scheme for
that op (`activation for Conv int16 symmetric per_tensor`) or for all ops. Otherwise the
layer is kept float, and the report says why.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Dict, List, Union

from qcompiler.errors import UsageError

INT16 = ("int16", "uint16")


def target_allows_int16(target, op: str) -> bool:
    try:
        if target.scheme("activation", op).dtype in INT16:
            return True
    except Exception:
        pass
    return any(o.role == "activation" and o.dtype in INT16 for o in getattr(target, "overrides", ()))


def load_overrides(src: Union[str, Path, Dict]) -> Dict:
    if isinstance(src, dict):
        cfg = src
    else:
        p = Path(src)
        if not p.is_file():
            raise UsageError(f"override file '{p}' does not exist", "give a JSON file")
        try:
            cfg = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"override file '{p}' line {e.lineno}: {e.msg}", "fix the JSON") from None
    if not isinstance(cfg, dict) or set(cfg) - {"keep_float", "layers"}:
        raise UsageError("override config: expected {\"keep_float\": [...], \"layers\": {name: {\"activation\": ...}}}",
                         f"unknown keys: {sorted(set(cfg) - {'keep_float', 'layers'}) if isinstance(cfg, dict) else cfg}")
    kf = cfg.get("keep_float", [])
    if not isinstance(kf, list) or not all(isinstance(x, str) for x in kf):
        raise UsageError("override config: keep_float must be a list of node-name patterns", "e.g. [\"head.*\"]")
    layers = cfg.get("layers", {})
    if not isinstance(layers, dict):
        raise UsageError("override config: layers must map node names to {\"activation\": ...}", "")
    for name, spec in layers.items():
        act = spec.get("activation") if isinstance(spec, dict) else None
        if act not in ("int16", "float", "int8"):
            raise UsageError(f"override config: layer '{name}': activation must be int16, int8 or float, got {act!r}",
                             "")
    return {"keep_float": list(kf), "layers": dict(layers)}


def resolve_overrides(cfg: Dict, ir, target) -> Dict:
    """Turn a loaded config into build options: keep_float node names, int16 node names
    (only where allowed) and the notes of what was decided."""
    nodes = {n.name: n for n in ir.graph.nodes}
    keep: List[str] = list(cfg.get("keep_float", []))
    int16: List[str] = []
    notes: Dict[str, str] = {}
    for pat, spec in cfg.get("layers", {}).items():
        hits = [n for n in nodes if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hits:
            notes[pat] = "no node matches"
            continue
        for name in hits:
            act = spec["activation"]
            if act == "float":
                keep.append(name)
                notes[name] = "float (override)"
            elif act == "int16":
                if target_allows_int16(target, nodes[name].op):
                    int16.append(name)
                    notes[name] = "int16 activations (override)"
                else:
                    keep.append(name)
                    notes[name] = (f"int16 requested but target {getattr(target, 'name', target)} declares no int16 "
                                   f"activation scheme for {nodes[name].op}: kept float")
    opts = {"keep_float": keep, "int16_layers": int16, "override_notes": notes}
    if int16:
        opts["min_opset"] = 21
    return opts
