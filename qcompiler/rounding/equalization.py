"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free
Quantization Through Weight Equalization and Bias Correction", sections 4.1 and 4.1.1).

Equalization. Two weighted layers in a row, y = W2 f(W1 x + b1) + b2, with f positive
homogeneous per channel (f(s x) = s f(x) for s > 0: Relu, LeakyRelu, PRelu, MaxPool,
AveragePool, Identity, or nothing at all). Dividing output channel i of layer 1 (its
weights and bias) by s_i and multiplying input channel i of layer 2 by s_i leaves y
unchanged. With r1_i the range (max |w|) of output channel i of W1 and r2_i the range of
input channel i of W2, the paper's choice

    s_i = sqrt(r1_i * r2_i) / r2_i

makes both ranges sqrt(r1_i * r2_i): each channel gets the same share of both layers'
per-tensor weight grids, and the activation between them no longer carries channels whose
scales differ by orders of magnitude (which a per-tensor activation grid cannot hold).
A layer that sits in two pairs (as the second layer of one and the first of the next,
MobileNet's pw -> dw -> pw) is pulled two ways, so the pairs are swept until no scale
moves by more than `tol` (in log space) or `max_iter` sweeps have run.

Clip (ReLU6) is not positive homogeneous: clip(x / s, 0, 6) != clip(x, 0, 6) / s, and an
ONNX Clip has one pair of bounds for all channels, so the bounds cannot be rescaled per
channel. Such pairs are skipped and the reason is recorded. (The paper replaced ReLU6 by
ReLU; that changes the FP32 model, so it is not done here.)

High-bias absorption. With BN statistics, the pre-activation of channel i is about
N(beta_i, gamma_i^2). Where c_i = max(0, beta_i - 3 gamma_i) > 0 the Relu is the identity
on almost all the data, so c_i can move from layer 1's bias into layer 2's bias:
relu(x - c) = relu(x) - c for x >= c, and layer 2 adds W2 c back. This shrinks the
activation's range without changing the outputs (up to the rare x < c). Only through a
plain Relu, and only into layers without zero padding (at a padded border W2 c would be
added where the input is 0, not c).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from qcompiler.quant.layers import Layer, bias_vector, bn_stats, set_bias, set_weight, store_bn_stats

HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "Identity", "Dropout")


@dataclass
class Pair:
    first: str
    seconds: List[str]
    path: List[str] = field(default_factory=list)  # op types between them

    @property
    def through_relu_only(self) -> bool:
        return self.path == ["Relu"]


def find_pairs(ir) -> Tuple[List[Pair], Dict[str, str]]:
    """Equalizable pairs and, for layers whose output does not qualify, why."""
    pairs: List[Pair] = []
    skipped: Dict[str, str] = {}
    for node in ir.graph.nodes:
        if not Layer.supported(ir, node):
            continue
        first = Layer(ir, node)
        t = node.outputs[0]
        path: List[str] = []
        reason = None
        while True:
            if ir.is_graph_output(t):
                reason = f"{t.name} is a graph output"
                break
            users = list(t.outputs)
            if not users:
                reason = "output unused"
                break
            if len(users) == 1 and users[0].op in HOMOGENEOUS and users[0].domain in ("", None):
                u = users[0]
                if u.op == "PRelu" and ir.const_value(u.inputs[1]) is None:
                    reason = f"PRelu {u.name} has a non-constant slope"
                    break
                if u.op == "Dropout" and len(u.outputs) > 1 and len(u.outputs[1].outputs):
                    reason = f"Dropout {u.name} mask is used"
                    break
                path.append(u.op)
                t = u.outputs[0]
                continue
            if len(users) == 1 and users[0].op == "Clip":
                reason = (f"{users[0].name}: Clip (ReLU6) is not positive homogeneous and its bounds "
                          "cannot be scaled per channel in ONNX")
                break
            bad = [u for u in users if not (Layer.supported(ir, u) and u.inputs[0] is t)]
            if bad:
                reason = f"output read by {bad[0].op} {bad[0].name}"
                break
            if any(Layer(ir, u).cin != first.cout for u in users):
                reason = "channel count mismatch"
                break
            pairs.append(Pair(node.name, [u.name for u in users], path))
            break
        if reason is not None:
            skipped[node.name] = reason
    return pairs, skipped


@dataclass
class EqualizeResult:
    pairs: int = 0
    sweeps: int = 0
    converged: bool = True
    absorbed_channels: int = 0
    skipped: Dict[str, str] = field(default_factory=dict)
    range_ratio_before: Optional[float] = None  # worst max/median output-channel range
    range_ratio_after: Optional[float] = None
    changed: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"pairs": self.pairs, "sweeps": self.sweeps, "converged": self.converged,
                "absorbed_channels": self.absorbed_channels, "skipped": dict(self.skipped),
                "worst_channel_range_ratio": {"before": self.range_ratio_before, "after": self.range_ratio_after}}


def _ratio(r: np.ndarray) -> float:
    med = float(np.median(r))
    return float(r.max() / med) if med > 0 else float("inf")


def equalize(ir, max_iter: int = 100, tol: float = 1e-4, absorb_bias: bool = True,
             absorb_sigmas: float = 3.0, s_limit: float = 1e6) -> EqualizeResult:
    res = EqualizeResult()
    pairs, res.skipped = find_pairs(ir)
    res.pairs = len(pairs)
    if not pairs:
        return res
    nodes = {n.name: n for n in ir.graph.nodes}
    names = sorted({p.first for p in pairs} | {s for p in pairs for s in p.seconds})
    layers = {n: Layer(ir, nodes[n]) for n in names}
    W = {n: layers[n].w.copy() for n in names}
    B = {n: bias_vector(ir, nodes[n], layers[n].cout) for n in names if nodes[n].op != "MatMul"}
    stats = bn_stats(ir)
    st = {n: (stats[n]["mean"].copy(), stats[n]["std"].copy()) for n in names if n in stats
          and stats[n]["mean"].size == layers[n].cout}
    res.range_ratio_before = max(_ratio(layers[p.first].out_ranges(W[p.first])) for p in pairs)
    touched, bias_changed = set(), set()
    for sweep in range(max_iter):
        moved = 0.0
        for p in pairs:
            a = layers[p.first]
            r1 = a.out_ranges(W[p.first])
            r2 = np.max([layers[c].in_ranges(W[c]) for c in p.seconds], axis=0)
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            s = np.clip(s, 1.0 / s_limit, s_limit)
            if np.allclose(s, 1.0, rtol=0, atol=1e-12):
                continue
            moved = max(moved, float(np.max(np.abs(np.log(s)))))
            W[p.first] = a.scale_out(W[p.first], 1.0 / s)
            if p.first in B:
                B[p.first] = B[p.first] / s
                bias_changed.add(p.first)
            if p.first in st:
                st[p.first] = (st[p.first][0] / s, st[p.first][1] / s)
            for c in p.seconds:
                W[c] = layers[c].scale_in(W[c], s)
            touched.add(p.first)
            touched.update(p.seconds)
        res.sweeps = sweep + 1
        if moved < tol:
            break
    else:
        res.converged = False
    if absorb_bias:
        for p in pairs:
            if not p.through_relu_only or p.first not in st or p.first not in B:
                continue
            if any(layers[c].has_padding() or nodes[c].op == "MatMul" for c in p.seconds):
                continue
            mean, std = st[p.first]
            c = np.maximum(0.0, mean - absorb_sigmas * std)
            if not np.any(c > 0):
                continue
            B[p.first] = B[p.first] - c
            st[p.first] = (mean - c, std)
            for sname in p.seconds:
                B[sname] = B[sname] + layers[sname].apply_to_channel_vector(W[sname], c)
                touched.add(sname)
                bias_changed.add(sname)
            touched.add(p.first)
            bias_changed.add(p.first)
            res.absorbed_channels += int(np.count_nonzero(c > 0))
    res.range_ratio_after = max(_ratio(layers[p.first].out_ranges(W[p.first])) for p in pairs)
    for n in sorted(touched):
        node = nodes[n]
        dtype = layers[n].node.inputs[1].dtype or np.float32
        dtype = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float32)
        set_weight(ir, node, W[n], dtype)
        if n in bias_changed:
            set_bias(ir, node, B[n], dtype)
        if n in st:
            store_bn_stats(ir, n, st[n][0], st[n][1])
    res.changed = sorted(touched)
    return res
