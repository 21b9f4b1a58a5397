"""fuse-conv-bias-act: conv + optional bias Add + optional activation as one fused region.

A constant per-channel Add after a Conv/ConvTranspose is folded into the conv's bias
input. A 2-D MatMul with a constant weight followed by a constant bias Add becomes a Gemm
with that bias (what ONNX Runtime's MatMulAddFusion does): its bias is then quantized as
int32 with the accumulator's scale, instead of the MatMul output being rounded to 8 bits
and the Add rounding again (on the PP-OCR cls head that double rounding cost 3.5 dB).
The activation that follows (Relu, Clip/ReLU6, LeakyRelu, HardSwish, HardSigmoid*x,
Sigmoid*x i.e. SiLU) joins the conv in a FusedRegion: later quantization
passes place no quantization point inside a region. A region never swallows a tensor
that is a graph output or read by a node outside the region.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from qcompiler.ir.annotations import FusedRegion
from qcompiler.pipeline.registry import Pass, register_pass

CONVS = ("Conv", "ConvTranspose")
SIMPLE_ACTS = ("Relu", "Clip", "LeakyRelu", "HardSwish")
GATED_ACTS = ("HardSigmoid", "Sigmoid")  # x * gate(x)


@register_pass("fuse-conv-bias-act", requires={"canonical"}, provides={"fused"})
class FuseConvBiasAct(Pass):
    """Fold bias Adds into convs and record conv(+bias)(+activation) fused regions."""

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        biases, regions = 0, 0
        kinds: dict = {}
        taken = {n for r in ir.ann.regions.values() for n in r.nodes}
        for conv in [n for n in ir.graph.nodes if n.op in CONVS and n.domain in ("", None)]:
            if conv.name in taken or ir.const_value(conv.inputs[1]) is None:
                continue
            if _fold_bias_add(ir, conv):
                biases += 1
            members, kind = _activation_chain(ir, conv)
            name = f"fused_{conv.name}"
            ir.ann.regions[name] = FusedRegion(name=name, kind=kind, nodes=[n.name for n in members])
            taken.update(n.name for n in members)
            kinds[kind] = kinds.get(kind, 0) + 1
            regions += 1
        gemms = 0
        for mm in [n for n in ir.graph.nodes if n.op == "MatMul" and n.domain in ("", None)]:
            if mm.name not in taken and _matmul_add_to_gemm(ir, mm):
                gemms += 1
        rep.update(bias_adds_folded=biases, regions=regions, kinds=dict(sorted(kinds.items())),
                   matmul_add_to_gemm=gemms)
        return biases + regions + gemms > 0


def _out_channels(ir, conv) -> Optional[int]:
    w = ir.const_value(conv.inputs[1])
    if conv.op == "Conv":
        return int(w.shape[0])
    return int(w.shape[1]) * int(conv.attrs.get("group", 1))


def _fold_bias_add(ir, conv) -> bool:
    add = ir.sole_consumer(conv.outputs[0])
    if add is None or add.op != "Add" or add.domain not in ("", None):
        return False
    other = add.inputs[1] if add.inputs[0] is conv.outputs[0] else add.inputs[0]
    c = ir.const_value(other)
    y = conv.outputs[0]
    if c is None or y.shape is None or c.ndim > len(y.shape):
        return False
    cout = _out_channels(ir, conv)
    shape = (1,) * (len(y.shape) - c.ndim) + tuple(c.shape)  # right-aligned broadcast
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, cout):
        return False  # not a per-channel bias
    add_vec = np.broadcast_to(c.reshape(-1), (cout,)).astype(np.float64)
    w = ir.const_value(conv.inputs[1])
    old = np.zeros(cout)
    if len(conv.inputs) > 2 and conv.inputs[2].name:
        old = np.asarray(ir.const_value(conv.inputs[2]), dtype=np.float64).reshape(-1)
    ir.set_input(conv, 2, ir.constant(f"{conv.name}_bias", (old + add_vec).astype(w.dtype)))
    ir.replace_uses(add.outputs[0], y)
    ir.remove_node(add)
    return True


def _matmul_add_to_gemm(ir, mm) -> bool:
    """MatMul(a [M, K], W:const [K, N]) -> Add(c:const, broadcasting to [N]) as Gemm(a, W, c)."""
    a, w_t = mm.inputs[0], mm.inputs[1]
    w = ir.const_value(w_t)
    if w is None or w.ndim != 2 or _rank(a) != 2:
        return False
    add = ir.sole_consumer(mm.outputs[0])
    if add is None or add.op != "Add" or add.domain not in ("", None):
        return False
    other = add.inputs[1] if add.inputs[0] is mm.outputs[0] else add.inputs[0]
    c = ir.const_value(other)
    n = int(w.shape[1])
    if c is None or c.ndim > 2 or c.dtype != w.dtype or (c.ndim == 2 and c.shape[0] != 1) \
            or (c.size not in (1, n)):
        return False  # not a bias over the output features
    bias = ir.constant(f"{mm.name}_bias", np.broadcast_to(c.reshape(-1), (n,)).astype(w.dtype))
    gemm = ir.replace_node(mm, "Gemm", [a, w_t, bias], {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    ir.replace_uses(add.outputs[0], gemm.outputs[0])
    ir.remove_node(add)
    return True


def _rank(t) -> Optional[int]:
    """The rank of `t`, also where shape inference left only the producing Reshape's shape
    input known (ONNX does not derive a Reshape's output rank from the length of a computed
    shape, as in Paddle exports' Shape -> Slice -> Concat -> Reshape heads)."""
    if t.shape is not None:
        return len(t.shape)
    prod = t.inputs[0] if len(t.inputs) == 1 else None
    if prod is not None and prod.op == "Reshape" and len(prod.inputs) > 1:
        s = prod.inputs[1].shape
        if s is not None and len(s) == 1 and isinstance(s[0], int) and s[0] >= 0:
            return int(s[0])
    return None


def _activation_chain(ir, conv):
    """The conv plus the activation nodes that can join its region, and a kind label."""
    y = conv.outputs[0]
    has_bias = len(conv.inputs) > 2 and bool(conv.inputs[2].name)
    label = conv.op.lower() + ("+bias" if has_bias else "")
    members: List = [conv]
    if ir.is_graph_output(y):
        return members, label
    users = list(y.outputs)
    if len(users) == 1 and users[0].op in SIMPLE_ACTS and users[0].domain in ("", None):
        act = users[0]
        if act.op == "Clip" and not _clip_is_constant(ir, act):
            return members, label
        return members + [act], f"{label}+{act.op.lower()}"
    # x * gate(x): the conv output feeds the gate and the Mul, and the gate feeds the same Mul.
    if len(users) == 2:
        gate = next((u for u in users if u.op in GATED_ACTS), None)
        mul = next((u for u in users if u.op == "Mul"), None)
        if gate is not None and mul is not None and gate.outputs[0] in mul.inputs:
            g = gate.outputs[0]
            if len(g.outputs) == 1 and not ir.is_graph_output(g):
                kind = "silu" if gate.op == "Sigmoid" else "hardsigmoid*x"
                return members + [gate, mul], f"{label}+{kind}"
    return members, label


def _clip_is_constant(ir, clip) -> bool:
    for t in clip.inputs[1:]:
        if t.name and ir.const_value(t) is None:
            return False
    return True
