"""fold-bn: fold inference BatchNormalization into the preceding weighted op.

BN(y) = y * a + b with a = gamma / sqrt(var + eps), b = beta - mean * a, per channel.
Conv / ConvTranspose / Gemm / MatMul(const weight) absorb a into their weights (new
initializers: a weight shared with another consumer is never modified) and b into their
bias. A BN that cannot be folded becomes Mul + Add with per-channel constants. A constant
scalar or per-channel Mul after a Conv/ConvTranspose is the same algebra (a = the constant,
b = 0) and folds the same way, so a following constant Add can join the bias: PP-LCNetV3's
learnable affine blocks (Conv -> Mul(s) -> Add(c)) otherwise cost two extra requantizations
each. All are qcompiler.rewrite patterns (below); the reasons a BN stays are the report's
`kept`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.rewrite import rewrite


# a weighted op whose only reader is the BatchNormalization
INTO_PRODUCER = "(Conv | ConvTranspose | Gemm | MatMul)(x, w:const, c?) -> BatchNormalization"
STANDALONE = "BatchNormalization"
# a conv whose only reader is a Mul by a constant
SCALE_INTO_CONV = "(Conv | ConvTranspose)(x, w:const, c?) -> Mul(_, s:const)"
NOT_AFFINE = "BatchNormalization in training mode or with non-constant statistics"


@register_pass("fold-bn", requires={"canonical"}, provides={"bn-folded"})
class FoldBatchNorm(Pass):
    """Fold BatchNormalization into Conv/ConvTranspose/Gemm/MatMul; others become Mul+Add."""

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        plans: dict = {}  # id(bn) -> the values a check read, for the replacement that follows it
        # repeat: Conv -> BN -> BN folds both into the conv
        folded = rewrite(ir, INTO_PRODUCER, lambda b, m: _fold_into_producer(b, m, plans),
                         check=lambda m: _fold_reason(ir, m, plans), name="fold-bn-into-producer",
                         repeat=True)
        scales = rewrite(ir, SCALE_INTO_CONV, lambda b, m: _fold_into_producer(b, m, plans, "Mul"),
                         check=lambda m: _scale_reason(ir, m, plans), name="fold-scale-into-conv",
                         repeat=True)
        standalone = rewrite(ir, STANDALONE, lambda b, m: _to_mul_add(b, m, plans),
                             check=lambda m: _mul_add_reason(ir, m.anchor, plans), name="bn-to-mul-add")
        kept = []
        for name, reason in standalone.rejected:
            kept.append(name)
            if reason == NOT_AFFINE:
                ir.ann.float_reasons[name] = reason
        rep.update(folded=folded.rewritten, scales_folded=scales.rewritten, to_mul_add=standalone.rewritten,
                   kept=kept)
        return folded.rewritten + scales.rewritten + standalone.rewritten > 0


def _bn_affine(ir, bn) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    if bn.attrs.get("training_mode", 0):
        return None
    if any(len(o.outputs) or ir.is_graph_output(o) for o in bn.outputs[1:]):
        return None
    vals = [ir.const_value(t) for t in bn.inputs[1:5]]
    if any(v is None for v in vals):
        return None
    gamma, beta, mean, var = (np.asarray(v, dtype=np.float64) for v in vals)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    a = gamma / np.sqrt(var + eps)
    b = beta - mean * a
    return a, b


def _fold_reason(ir, m, plans: dict) -> Optional[str]:
    """Why the BN cannot fold into its producer (None: it can, and plans has its values)."""
    p, bn, x = m.anchor, m["BatchNormalization"], m.anchor.outputs[0]
    ab = _bn_affine(ir, bn)
    if ab is None:
        return NOT_AFFINE
    a = ab[0]
    w = ir.const_value(m["w"])
    c = ir.const_value(m["c"]) if m["c"] is not None else None
    if w is None or (m["c"] is not None and c is None):
        return "the weight or bias is not an initializer"
    if p.op == "Conv":
        cout = w.shape[0]
    elif p.op == "ConvTranspose":
        cout = w.shape[1] * int(p.attrs.get("group", 1))
    elif not _is_2d(x):  # BN normalises axis 1, which is the last axis only for 2-D outputs
        return f"{p.op} output is not 2-D"
    elif p.op == "Gemm":
        cout = w.shape[0] if int(p.attrs.get("transB", 0)) else w.shape[1]
        if c is not None and (c.size not in (1, cout) or (c.ndim == 2 and c.shape[0] != 1)):
            return "the Gemm's C is not a bias over the output features"
    else:  # MatMul
        if w.ndim != 2:
            return "the MatMul weight is not 2-D"
        cout = w.shape[1]
    if a.size != cout:
        return f"{a.size} BatchNormalization channels for {cout} output channels"
    plans[id(bn)] = ab + (w, c)
    return None


def _scale_reason(ir, m, plans: dict) -> Optional[str]:
    """Why a constant Mul cannot fold into the conv before it (None: it can)."""
    p, mul, y = m.anchor, m["Mul"], m.anchor.outputs[0]
    sv, w = ir.const_value(m["s"]), ir.const_value(m["w"])
    c = ir.const_value(m["c"]) if m["c"] is not None else None
    if sv is None or w is None or (m["c"] is not None and c is None):
        return "the scale, weight or bias is not an initializer"
    sv = np.asarray(sv)
    cout = w.shape[0] if p.op == "Conv" else w.shape[1] * int(p.attrs.get("group", 1))
    rank = len(y.shape) if y.shape is not None else None
    if sv.dtype.kind != "f" or not np.all(np.isfinite(sv)):
        return "the scale is not a finite float"
    if sv.size != 1:  # per channel: shape (..., cout, 1, ..., 1) aligned with the output's axis 1
        if rank is None or sv.ndim > rank or sv.ndim < rank - 1:
            return "the scale does not broadcast along the output channels"
        dims = (1,) * (rank - sv.ndim) + sv.shape
        if dims[0] != 1 or dims[1] != cout or any(d != 1 for d in dims[2:]):
            return f"the scale's shape {list(sv.shape)} is not per output channel ({cout})"
    elif sv.ndim > (rank if rank is not None else 0):
        return "the scale would raise the output's rank"
    a = np.broadcast_to(sv.astype(np.float64).reshape(-1), (cout,)).copy()
    plans[id(mul)] = (a, np.zeros(cout), w, c)
    return None


def _fold_into_producer(b, m, plans: dict, folded: str = "BatchNormalization"):
    """The weighted op absorbs BN(y) = y * a + b (or a constant Mul: b = 0); returns what
    now carries the folded node's output."""
    p, bn = m.anchor, m[folded]
    a, shift, w, c = plans.pop(id(bn))
    if p.op in ("Conv", "ConvTranspose"):
        if p.op == "Conv":
            cout = w.shape[0]
            scale = a.reshape((-1,) + (1,) * (w.ndim - 1))
        else:  # ConvTranspose weight: [Cin, Cout/group, k...]; out channel = g*(Cout/group)+j
            group = int(p.attrs.get("group", 1))
            cin, cpg = w.shape[0], w.shape[1]
            cout = cpg * group
            scale = np.repeat(a.reshape(group, 1, cpg), cin // group, axis=1).reshape(cin, cpg)
            scale = scale.reshape((cin, cpg) + (1,) * (w.ndim - 2))
        # in the weight's dtype, as ONNX Runtime folds: a float64 copy of every weight made
        # this pass a tenth of a ResNet-18 build
        if w.dtype.kind == "f":
            new_w = w * scale.astype(w.dtype)
        else:
            new_w = (w.astype(np.float64) * scale).astype(w.dtype)
        old_b = np.zeros(cout) if c is None else np.asarray(c, dtype=np.float64).reshape(-1)
        new_b = (old_b * a + shift).astype(w.dtype)
        b.set_input(p, 1, b.constant(p.inputs[1].name + "_bnfold", new_w))
        b.set_input(p, 2, b.constant(f"{p.name}_bias_bnfold", new_b))
        return p.outputs[0]
    if p.op == "Gemm":
        trans_b = int(p.attrs.get("transB", 0))
        n = w.shape[0] if trans_b else w.shape[1]
        new_w = w.astype(np.float64) * (a[:, None] if trans_b else a[None, :])
        beta = float(p.attrs.get("beta", 1.0))
        c = np.zeros(n) if c is None else c
        new_c = (beta * np.broadcast_to(c.reshape(-1), (n,)) * a + shift).astype(w.dtype)
        p.attrs["beta"] = 1.0
        b.set_input(p, 1, b.constant(p.inputs[1].name + "_bnfold", new_w.astype(w.dtype)))
        b.set_input(p, 2, b.constant(f"{p.name}_bias_bnfold", new_c))
        return p.outputs[0]
    # MatMul: scaled weight, then an Add of the shift
    new_w = (w.astype(np.float64) * a[None, :]).astype(w.dtype)
    b.set_input(p, 1, b.constant(p.inputs[1].name + "_bnfold", new_w))
    bias = b.constant(f"{p.name}_bias_bnfold", shift.astype(w.dtype))
    mm_out = p.outputs[0]
    add_out = b.variable(f"{p.name}_biased", dtype=mm_out.dtype, shape=mm_out.shape)
    b.add_node("Add", [mm_out, bias], [add_out], name=f"{p.name}_bias")
    return add_out


def _is_2d(t) -> bool:
    return t.shape is not None and len(t.shape) == 2


def _mul_add_reason(ir, bn, plans: dict) -> Optional[str]:
    ab = _bn_affine(ir, bn)
    if ab is None:
        return NOT_AFFINE
    x = bn.inputs[0]
    if x.shape is None or len(x.shape) < 2:
        return "BatchNormalization input rank is unknown or below 2"
    plans[id(bn)] = ab
    return None


def _to_mul_add(b, m, plans: dict):
    """BN(x) as x * a + b with per-channel constants."""
    bn = m.anchor
    a, shift = plans.pop(id(bn))
    x = bn.inputs[0]
    rank = len(x.shape)
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.dtype(np.float32)
    shape = (a.size,) + (1,) * (rank - 2)  # broadcasts along axis 1 from the right
    out = bn.outputs[0]
    mul_out = b.variable(f"{bn.name}_scaled", dtype=x.dtype, shape=x.shape)
    new_out = b.variable(f"{bn.name}_shifted", dtype=out.dtype, shape=out.shape)
    b.add_node("Mul", [x, b.constant(f"{bn.name}_a", a.reshape(shape).astype(dtype))], [mul_out],
               name=f"{bn.name}_mul")
    b.add_node("Add", [mul_out, b.constant(f"{bn.name}_b", shift.reshape(shape).astype(dtype))],
               [new_out], name=f"{bn.name}_add")
    return new_out
