"""Attention-mask arithmetic: the tensors that carry a mask's huge fill value.

Transformer exports mask padded positions by adding a huge negative number to the
attention scores, (1 - mask) * float32 lowest (-3.4e38; older exports -10000 or -1e9), or
by filling them with it, Where(mask, scores, lowest). Under min/max calibration such a
tensor gets a scale of ~1e36 and every real score rounds to zero: uniform attention, the
"collapse" of a statically quantized BERT. These tensors must stay float; the Softmax that
reads them bounds its output to [0, 1], which quantizes well again.

    huge = mask_tensors(ir)           # {tensor name: why}
    nodes = mask_nodes(ir, huge)      # {node name: float reason}

A tensor is mask arithmetic when it is computed from a huge constant (|v| >= HUGE, or
infinite) together with an index tensor (derived only from integer/bool graph inputs and
constants, like attention_mask), or by any op that is not a bound (Softmax, Sigmoid, Exp,
...) from such a tensor. Requiring the index operand keeps ordinary large constants of CNNs
(a clip bound, a scale) out of it.
"""

from __future__ import annotations

from typing import Dict, Set

import numpy as np

from .plan import is_float

HUGE = 1e4  # real attention scores stay within tens; masks use -1e4 and below
BOUNDING_OPS = ("Softmax", "Sigmoid", "HardSigmoid", "Exp", "Tanh", "Erf")


def _huge_const(ir, t) -> bool:
    if not ir.is_const(t) or not is_float(t):
        return False
    v = ir.const_value(t)
    if v is None or v.size == 0 or v.size > 4096:  # a fill value or a mask bias, not a weight
        return False
    a = np.abs(np.asarray(v, dtype=np.float64))
    return bool(np.any(np.isinf(a)) or a.max() >= HUGE)


def _index_tensors(ir) -> Set[str]:
    """Tensors derived only from non-float graph inputs (and constants)."""
    idx = {t.name for t in ir.graph.inputs if not is_float(t)}
    for node in ir.graph.nodes:  # topological order
        live = [t for t in node.inputs if t.name and not ir.is_const(t)]
        if live and all(t.name in idx for t in live):
            idx.update(t.name for t in node.outputs)
    return idx


def mask_tensors(ir) -> Dict[str, str]:
    """Name -> description of every tensor holding mask arithmetic's huge values."""
    idx = _index_tensors(ir)
    huge: Dict[str, str] = {}
    for node in ir.graph.nodes:
        if node.op in BOUNDING_OPS or not node.outputs:
            continue
        consts = [t for t in node.inputs if t.name and _huge_const(ir, t)]
        live = [t for t in node.inputs if t.name and not ir.is_const(t)]
        why = None
        if consts and any(t.name in idx for t in live):
            v = float(np.min(ir.const_value(consts[0])))
            why = f"attention-mask arithmetic ({node.op} of an index input and the constant {v:.3g})"
        else:
            src = next((t.name for t in live if t.name in huge), None)
            if src is not None:
                why = f"carries the attention mask's huge values (from '{src}')"
        if why:
            for t in node.outputs:
                if is_float(t) or t.name in idx:
                    huge[t.name] = why
    return huge


def mask_nodes(ir, huge: Dict[str, str]) -> Dict[str, str]:
    """Float reasons for the nodes that write or read a mask tensor."""
    reasons: Dict[str, str] = {}
    for node in ir.graph.nodes:
        written = next((t.name for t in node.outputs if t.name in huge), None)
        read = next((t.name for t in node.inputs if t.name in huge), None)
        if written is not None:
            reasons[node.name] = (f"stays float: {huge[written]}; min/max would give its output a scale "
                                  "near 1e36 and round every attention score to 0")
        elif read is not None:
            reasons[node.name] = f"stays float: reads the attention mask's huge values ('{read}')"
    return reasons
