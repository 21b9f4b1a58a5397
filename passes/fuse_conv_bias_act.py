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

Each step is a qcompiler.rewrite pattern (below); the checks say why a match is left alone.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from qcompiler.ir.annotations import FusedRegion
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.rewrite import match, rewrite

CONVS = "(Conv | ConvTranspose)"
# a per-channel bias Add after a conv (its bias folds into the conv's)
CONV_BIAS_ADD = f"{CONVS}(x, w:const, b?:const) -> Add(_, c:const)"
# the conv with the activation that joins its region (a non-constant Clip does not)
CONV_ACT = f"{CONVS}(x, w:const, b?) -> (Relu | Clip | LeakyRelu | HardSwish)?"
# x * gate(x): the conv output feeds the gate and the Mul, the gate only the Mul
GATED_ACT = "(HardSigmoid | Sigmoid)(y) -> Mul(_, y)"
MATMUL_BIAS_ADD = "MatMul(a, w:const) -> Add(_, c:const)"


@register_pass("fuse-conv-bias-act", requires={"canonical"}, provides={"fused"})
class FuseConvBiasAct(Pass):
    """Fold bias Adds into convs and record conv(+bias)(+activation) fused regions."""

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        taken = {n for r in ir.ann.regions.values() for n in r.nodes}  # earlier regions keep theirs
        weights: dict = {}  # id(conv) -> its weight (this pass never changes a weight)
        plans: dict = {}  # id(add) -> (added constant, old bias), from the check to the replacement

        def free_conv(m):
            conv = m.anchor
            if conv.name in taken:
                return f"{conv.name} is already in a fused region"
            if id(conv) not in weights:
                weights[id(conv)] = ir.const_value(conv.inputs[1])
            return None if weights[id(conv)] is not None else "weight is not an initializer"

        biases = rewrite(ir, CONV_BIAS_ADD, lambda b, m: _fold_bias_add(b, m, weights, plans),
                         check=lambda m: free_conv(m) or _bias_add_reason(ir, m, weights, plans),
                         name="conv-bias-add")
        kinds: dict = {}

        def record_region(b, m):
            members, kind = _region(b.ir, m)
            name = f"fused_{m.anchor.name}"
            ir.ann.regions[name] = FusedRegion(name=name, kind=kind, nodes=[n.name for n in members])
            kinds[kind] = kinds.get(kind, 0) + 1

        regions = rewrite(ir, CONV_ACT, record_region, name="conv-act", check=free_conv)
        gemms = rewrite(ir, MATMUL_BIAS_ADD, _matmul_add_to_gemm, name="matmul-add-to-gemm",
                        check=lambda m: (f"{m.anchor.name} is already in a fused region"
                                         if m.anchor.name in taken else _gemm_bias_reason(ir, m)))
        rep.update(bias_adds_folded=biases.rewritten, regions=regions.rewritten,
                   kinds=dict(sorted(kinds.items())), matmul_add_to_gemm=gemms.rewritten)
        return biases.rewritten + regions.rewritten + gemms.rewritten > 0


def _out_channels(conv, w) -> int:
    if conv.op == "Conv":
        return int(w.shape[0])
    return int(w.shape[1]) * int(conv.attrs.get("group", 1))


def _bias_add_reason(ir, m, weights: dict, plans: dict) -> Optional[str]:
    """Why the Add is not a per-channel bias of the conv (None: it is, and plans has its values)."""
    conv, y = m.anchor, m.anchor.outputs[0]
    c = ir.const_value(m["c"])
    if c is None or y.shape is None or c.ndim > len(y.shape):
        return "the added constant is not an initializer, or the conv output's rank is unknown"
    old = ir.const_value(m["b"]) if m["b"] is not None else None
    if m["b"] is not None and old is None:
        return "the conv's bias is not an initializer"
    shape = (1,) * (len(y.shape) - c.ndim) + tuple(c.shape)  # right-aligned broadcast
    cout = _out_channels(conv, weights[id(conv)])
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, cout):
        return f"the added constant of shape {tuple(c.shape)} is not per output channel"
    plans[id(m["Add"])] = (c, old)
    return None


def _fold_bias_add(b, m, weights: dict, plans: dict):
    """conv + c -> conv with bias b + c; the conv's output replaces the Add's."""
    conv, w = m.anchor, weights[id(m.anchor)]
    c, old_bias = plans.pop(id(m["Add"]))
    cout = _out_channels(conv, w)
    add_vec = np.broadcast_to(c.reshape(-1), (cout,)).astype(np.float64)
    old = np.zeros(cout) if old_bias is None else np.asarray(old_bias, dtype=np.float64).reshape(-1)
    b.set_input(conv, 2, b.constant(f"{conv.name}_bias", (old + add_vec).astype(w.dtype)))
    return conv.outputs[0]


def _gemm_bias_reason(ir, m) -> Optional[str]:
    """MatMul(a [M, K], W [K, N]) -> Add(c) is a Gemm when c broadcasts to [N] (None: it is)."""
    w, c = ir.const_value(m["w"]), ir.const_value(m["c"])
    if w is None or w.ndim != 2 or _rank(m["a"]) != 2:
        return "not a 2-D MatMul with an initializer weight"
    n = int(w.shape[1])
    if c is None or c.ndim > 2 or c.dtype != w.dtype or (c.ndim == 2 and c.shape[0] != 1) \
            or (c.size not in (1, n)):
        return "the added constant is not a bias over the output features"
    return None


def _matmul_add_to_gemm(b, m):
    """MatMul(a, W) -> Add(c) as Gemm(a, W, c); the Gemm keeps the MatMul's name and output."""
    mm, w = m.anchor, b.const_value(m["w"])
    c = np.broadcast_to(b.const_value(m["c"]).reshape(-1), (int(w.shape[1]),))
    bias = b.constant(f"{mm.name}_bias", c.astype(w.dtype))
    gemm = b.replace_node(mm, "Gemm", [m["a"], m["w"], bias],
                          {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    return gemm.outputs[0]


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


def _region(ir, m):
    """The conv plus the activation nodes that join its region, and a kind label."""
    conv, act = m.anchor, m.slots[1]
    has_bias = len(conv.inputs) > 2 and bool(conv.inputs[2].name)
    label = conv.op.lower() + ("+bias" if has_bias else "")
    if act is not None:
        if act.op == "Clip" and not _clip_is_constant(ir, act):
            return [conv], label
        return [conv, act], f"{label}+{act.op.lower()}"
    y = conv.outputs[0]
    if ir.is_graph_output(y) or len(y.outputs) != 2:
        return [conv], label
    for gate in y.outputs:
        gated = match(ir, GATED_ACT, gate) if gate.op in ("HardSigmoid", "Sigmoid") else None
        if gated and gated["y"] is y:
            kind = "silu" if gate.op == "Sigmoid" else "hardsigmoid*x"
            return [conv, gate, gated["Mul"]], f"{label}+{kind}"
    return [conv], label


def _clip_is_constant(ir, clip) -> bool:
    for t in clip.inputs[1:]:
        if t.name and ir.const_value(t) is None:
            return False
    return True
