"""Weighted layers as the rounding fixes and the analysis tools see them.

- `apply_ranges`: activation ranges -> QParams (per scale group) and weight QParams, the
  way `calibrate` does it, for the data-free calibration and the sensitivity variants;
- weight/channel geometry of weighted layers (which slice of a weight an input or output
  channel owns), used by equalization and bias correction; BatchNorm statistics kept by
  record-bn-stats.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from qcompiler.quant.plan import Plan, group_qparams, require_plan, to_quant_scheme, weight_qparams  # noqa: F401 (re-exported)


def node_map(ir) -> Dict[str, object]:
    return {n.name: n for n in ir.graph.nodes}


def apply_ranges(ir, target, ranges: Dict[str, Tuple[float, float]]) -> None:
    """Write activation ranges and the QParams they imply (scale groups respected), and
    the weights' QParams: what `calibrate` leaves behind, without running data."""
    plan = require_plan(ir, "apply_ranges")
    act = to_quant_scheme(target.scheme("activation"))
    ranges = {k: (float(v[0]), float(v[1])) for k, v in ranges.items() if k in set(plan.tensors)}
    ir.ann.notes["ranges"] = ranges
    ir.ann.qparams.update(group_qparams(ir, ranges, act))
    weight_qparams(ir, target, plan)


def bn_stats(ir) -> Dict[str, Dict[str, np.ndarray]]:
    """The BN statistics that record-bn-stats kept, for producers whose BN was folded
    into them (so that their output now is the BN output): name -> {mean, std} arrays."""
    raw = ir.ann.notes.get("bn_stats") or {}
    if not raw:
        return {}
    nodes = node_map(ir)
    out = {}
    for name, rec in raw.items():
        node = nodes.get(name)
        if node is None or not node.outputs:
            continue
        bn = rec.get("bn")
        readers = {c.name for c in node.outputs[0].outputs}
        if bn and (bn in nodes or f"{bn}_mul" in readers):
            continue  # not folded into this producer: its output is not the BN output
        out[name] = {"mean": np.asarray(rec["mean"], np.float64), "std": np.asarray(rec["std"], np.float64)}
    return out


def store_bn_stats(ir, name: str, mean: np.ndarray, std: np.ndarray) -> None:
    rec = ir.ann.notes.setdefault("bn_stats", {}).setdefault(name, {})
    rec["mean"] = np.asarray(mean, np.float64).tolist()
    rec["std"] = np.abs(np.asarray(std, np.float64)).tolist()


# ---------------------------------------------------------------------------------------
# weighted-layer geometry


def channel_vector_shift(op: str, w: np.ndarray, v: np.ndarray, group: int = 1, in_axis: int = 1) -> np.ndarray:
    """Per output channel of a Conv (weight [out, in/group, k...]) or Gemm/MatMul weight `w`:
    sum over the weights reading input channel i, times v[i] (what the layer adds to its
    outputs when every input channel i is the constant v[i] everywhere; exact away from zero
    padding). `in_axis`: the input axis of a 2-D weight."""
    if op == "Conv":
        cin_g = w.shape[1]
        ws = w.reshape(group, w.shape[0] // group, cin_g, -1).sum(axis=3)  # [g, cout_g, cin_g]
        return np.einsum("goi,gi->go", ws, v.reshape(group, cin_g)).reshape(-1)
    return v @ (w if in_axis == 0 else w.T)


class Layer:
    """A Conv / Gemm / MatMul with a constant weight, seen as a map from input channels to
    output channels. `out_axis` is the weight axis of output channels; `in_slices(i)`
    the weight index expressions that read input channel i."""

    def __init__(self, ir, node):
        self.node = node
        self.op = node.op
        self.w = np.asarray(ir.const_value(node.inputs[1]), dtype=np.float64)
        self.group = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
        if node.op == "Conv":
            self.out_axis, self.in_axis = 0, 1
        elif node.op == "Gemm":
            tb = int(node.attrs.get("transB", 0))
            self.out_axis, self.in_axis = (0, 1) if tb else (1, 0)
        else:  # MatMul, 2-D weight {K, N}
            self.out_axis, self.in_axis = 1, 0

    @staticmethod
    def supported(ir, node) -> bool:
        if node.domain not in ("", None) or len(node.inputs) < 2:
            return False
        w = ir.const_value(node.inputs[1])
        if w is None:
            return False
        if node.op == "Conv":
            return w.ndim >= 3
        if node.op == "Gemm":
            return w.ndim == 2 and not int(node.attrs.get("transA", 0))
        if node.op == "MatMul":
            return w.ndim == 2
        return False

    @property
    def cout(self) -> int:
        return int(self.w.shape[self.out_axis])

    @property
    def cin(self) -> int:
        return int(self.w.shape[self.in_axis]) * self.group

    def in_index(self, i: int):
        """Index tuple into the weight selecting everything that reads input channel i."""
        if self.op == "Conv":
            cin_g = self.w.shape[1]
            cout_g = self.w.shape[0] // self.group
            g, j = divmod(i, cin_g)
            return (slice(g * cout_g, (g + 1) * cout_g), j)
        idx = [slice(None)] * 2
        idx[self.in_axis] = i
        return tuple(idx)

    def out_ranges(self, w: Optional[np.ndarray] = None) -> np.ndarray:
        """max |w| per output channel."""
        w = self.w if w is None else w
        a = np.moveaxis(np.abs(w), self.out_axis, 0).reshape(w.shape[self.out_axis], -1)
        return a.max(axis=1)

    def in_ranges(self, w: Optional[np.ndarray] = None) -> np.ndarray:
        """max |w| per input channel (over every output channel that reads it)."""
        w = self.w if w is None else w
        if self.op == "Conv":
            g, cin_g = self.group, w.shape[1]
            cout_g = w.shape[0] // g
            a = np.abs(w).reshape(g, cout_g, cin_g, -1).max(axis=(1, 3))  # [g, cin_g]
            return a.reshape(-1)
        a = np.moveaxis(np.abs(w), self.in_axis, 0).reshape(w.shape[self.in_axis], -1)
        return a.max(axis=1)

    def scale_in(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Weight with input channel i multiplied by s[i]."""
        if self.op == "Conv":
            g, cin_g = self.group, w.shape[1]
            cout_g = w.shape[0] // g
            sg = s.reshape(g, 1, cin_g)
            shp = w.shape
            return (w.reshape(g, cout_g, cin_g, -1) * sg[..., None]).reshape(shp)
        shape = [1, 1]
        shape[self.in_axis] = -1
        return w * s.reshape(shape)

    def scale_out(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Weight with output channel o multiplied by s[o]."""
        shape = [1] * w.ndim
        shape[self.out_axis] = -1
        return w * s.reshape(shape)

    def apply_to_channel_vector(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """channel_vector_shift for this layer's op, groups and weight layout."""
        return channel_vector_shift(self.op, w, v, self.group, self.in_axis)

    def has_padding(self) -> bool:
        if self.op != "Conv":
            return False
        if any(int(p) for p in self.node.attrs.get("pads", [])):
            return True
        return self.node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID")


def bias_vector(ir, node, size: int) -> np.ndarray:
    if len(node.inputs) > 2 and node.inputs[2].name:
        v = ir.const_value(node.inputs[2])
        if v is not None:
            v = np.asarray(v, dtype=np.float64).reshape(-1)
            beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
            return np.broadcast_to(v, (size,)).astype(np.float64) * beta
    return np.zeros(size, dtype=np.float64)


def set_bias(ir, node, b: np.ndarray, dtype=np.float32):
    """Give `node` a new per-output-channel bias constant (Gemm: beta becomes 1)."""
    if node.op == "MatMul":
        raise ValueError("MatMul has no bias input")
    if node.op == "Gemm":
        node.attrs["beta"] = 1.0
    c = ir.constant(f"{node.name}_bias_acc", np.asarray(b, dtype=dtype))
    ir.set_input(node, 2, c)
    return c


def set_weight(ir, node, w: np.ndarray, dtype=np.float32):
    c = ir.constant(f"{node.name}_weight_acc", np.asarray(w, dtype=dtype))
    ir.set_input(node, 1, c)
    return c
