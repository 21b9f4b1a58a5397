"""SmoothQuant-style migration of activation outliers into MatMul weights (Xiao et al. 2023).

A MatMul y = X W with a constant W {K, N} is unchanged by y = (X / s) (s W) for any positive
per-channel s {K}. Transformer activations carry a few channels far larger than the rest
(LayerNorm outputs, GELU outputs), and one per-tensor 8-bit scale for X spends its grid on
them; s_k = max|X_k|^alpha / max|W_k,:|^(1 - alpha) flattens those channels and moves the
difficulty into the weights, which are quantized per output column. alpha is the share moved:
too little leaves the outliers, too much makes the weight rows the outliers.

    groups = smoothable_groups(ir)              # {input tensor name: [MatMul nodes]}
    absmax = channel_absmax(ir, groups, batches)
    scales = smoothing_scales(ir, groups, absmax, alpha)
    apply_smoothing(ir, groups, scales)          # weights scaled, X / s on the edge
"""

from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np

from .observers import MinMaxObserver
from .session import observe_session

# a channel that is (near) zero everywhere gets no scale: nothing to flatten, nothing to move
_FLOOR = 1e-5
_CLIP = (1e-2, 1e2)  # bound s so that no weight row or activation channel is scaled absurdly


def smoothable_groups(ir) -> Dict[str, List]:
    """MatMuls with a constant 2-D weight and an activation input, grouped by that input
    (the Q, K and V projections of one LayerNorm output share one s)."""
    groups: Dict[str, List] = {}
    for node in ir.graph.nodes:
        if node.op != "MatMul" or len(node.inputs) != 2:
            continue
        x, w = node.inputs
        if ir.is_const(x) or not ir.is_const(w):
            continue
        value = ir.const_value(w)
        if value is None or value.ndim != 2 or value.dtype != np.float32:
            continue
        groups.setdefault(x.name, []).append(node)
    return groups


def channel_absmax(ir, groups: Dict[str, List], batches: Iterable, progress: bool = False) -> Dict[str, np.ndarray]:
    """max |x| per last-axis channel of each group's input, over the calibration batches."""
    observers = {name: MinMaxObserver(axis=-1) for name in groups}  # finite values only, per channel
    observe_session(ir, list(groups), batches, observers, progress=progress)
    out = {}
    for name, o in observers.items():
        lo, hi = o.range()
        if lo.size:
            out[name] = np.maximum(-lo, hi)
    return out


def smoothing_scales(ir, groups: Dict[str, List], absmax: Dict[str, np.ndarray], alpha: float) -> Dict[str, np.ndarray]:
    """s per group: max|X_k|^alpha / max|W_k,:|^(1 - alpha), the weight max over the group."""
    out = {}
    for name, nodes in groups.items():
        a = absmax.get(name)
        weights = [ir.const_value(n.inputs[1]) for n in nodes]
        if a is None or any(w.shape[0] != a.shape[0] for w in weights):
            continue
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        live = (a > _FLOOR) & (wmax > _FLOOR)
        s = np.ones_like(a, dtype=np.float64)
        s[live] = a[live].astype(np.float64) ** alpha / wmax[live].astype(np.float64) ** (1.0 - alpha)
        out[name] = np.clip(s, *_CLIP).astype(np.float32)
    return out


def apply_smoothing(ir, groups: Dict[str, List], scales: Dict[str, np.ndarray]) -> Dict[str, str]:
    """Scale each group's weight rows by s and divide its input by s; returns {input: how}.

    1/s folds into LayerNormalization's scale and bias when the group is its only reader
    (pre-LN blocks). Otherwise a Mul by the constant 1/s is inserted on the edge to the group:
    the residual stream keeps X, and a GELU's final Mul by 0.5 stays a scalar (ONNX Runtime
    fuses only that form into Gelu).
    """
    how = {}
    for name, s in scales.items():
        nodes = groups[name]
        x = nodes[0].inputs[0]
        for n in nodes:
            w = ir.const_value(n.inputs[1])
            ir.set_input(n, 1, ir.constant(n.inputs[1].name + "_smoothed", (w * s[:, None]).astype(np.float32)))
        inv = (1.0 / s).astype(np.float32)
        if _fold_into_producer(ir, x, nodes, inv):
            how[name] = "folded into " + ir.producer(x).op
            continue

        def divide(t, inv=inv, base=name):
            mul = ir.add_node("Mul", [t, ir.constant(base + "_smooth_inv", inv)], name=base + "_smooth",
                              out_dtype=t.dtype, out_shape=t.shape)
            return mul.outputs[0]

        ir.insert_on_edge(x, divide, consumers=nodes)
        how[name] = "Mul inserted"
    return how


def _fold_into_producer(ir, x, nodes, inv: np.ndarray) -> bool:
    p = ir.producer(x)
    if p is None or ir.is_graph_output(x) or {id(c) for c in ir.consumers(x)} != {id(n) for n in nodes}:
        return False
    if p.op == "LayerNormalization" and p.attrs.get("axis", -1) in (-1, len(x.shape or []) - 1):
        gamma = ir.const_value(p.inputs[1]) if ir.is_const(p.inputs[1]) else None
        beta = ir.const_value(p.inputs[2]) if len(p.inputs) > 2 and ir.is_const(p.inputs[2]) else None
        if gamma is None or gamma.shape != inv.shape or (beta is not None and beta.shape != inv.shape):
            return False
        ir.set_input(p, 1, ir.constant(p.inputs[1].name + "_smoothed", (gamma * inv).astype(np.float32)))
        if beta is not None:
            ir.set_input(p, 2, ir.constant(p.inputs[2].name + "_smoothed", (beta * inv).astype(np.float32)))
        return True
    return False
