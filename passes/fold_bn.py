"""fold-bn: fold inference BatchNormalization into the preceding weighted op.

BN(y) = y * a + b with a = gamma / sqrt(var + eps), b = beta - mean * a, per channel.
Conv / ConvTranspose / Gemm / MatMul(const weight) absorb a into their weights (new
initializers: a weight shared with another consumer is never modified) and b into their
bias. A BN that cannot be folded becomes Mul + Add with per-channel constants.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("fold-bn", requires={"canonical"}, provides={"bn-folded"})
class FoldBatchNorm(Pass):
    """Fold BatchNormalization into Conv/ConvTranspose/Gemm/MatMul; others become Mul+Add."""

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        folded, standalone, kept = 0, 0, []
        dead: dict = {}  # id -> folded BN, all removed at once below (remove_node is O(nodes) each)
        for bn in [n for n in ir.graph.nodes if n.op == "BatchNormalization" and n.domain in ("", None)]:
            ab = _bn_affine(ir, bn)
            if ab is None:
                kept.append(bn.name)
                ir.ann.float_reasons[bn.name] = "BatchNormalization in training mode or with non-constant statistics"
                continue
            a, b = ab
            if _fold_into_producer(ir, bn, a, b, dead):
                folded += 1
            elif _to_mul_add(ir, bn, a, b, dead):
                standalone += 1
            else:
                kept.append(bn.name)
        ir.remove_nodes(dead.values())
        rep.update(folded=folded, to_mul_add=standalone, kept=kept)
        return folded + standalone > 0


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


def _single_use(ir, t, dead) -> bool:
    # BNs already folded in this run still read t until they are removed at the end.
    return sum(1 for c in t.outputs if id(c) not in dead) == 1 and not ir.is_graph_output(t)


def _fold_into_producer(ir, bn, a, b, dead) -> bool:
    x = bn.inputs[0]
    p = ir.producer(x)
    if p is None or not _single_use(ir, x, dead) or p.domain not in ("", None):
        return False
    if p.op in ("Conv", "ConvTranspose"):
        w = ir.const_value(p.inputs[1]) if len(p.inputs) > 1 else None
        if w is None:
            return False
        if p.op == "Conv":
            cout = w.shape[0]
            scale = a.reshape((-1,) + (1,) * (w.ndim - 1))
        else:  # ConvTranspose weight: [Cin, Cout/group, k...]; out channel = g*(Cout/group)+j
            group = int(p.attrs.get("group", 1))
            cin, cpg = w.shape[0], w.shape[1]
            cout = cpg * group
            if a.size != cout:
                return False
            scale = np.repeat(a.reshape(group, 1, cpg), cin // group, axis=1).reshape(cin, cpg)
            scale = scale.reshape((cin, cpg) + (1,) * (w.ndim - 2))
        if a.size != cout:
            return False
        # in the weight's dtype, as ONNX Runtime folds: a float64 copy of every weight made
        # this pass a tenth of a ResNet-18 build
        if w.dtype.kind == "f":
            new_w = w * scale.astype(w.dtype)
        else:
            new_w = (w.astype(np.float64) * scale).astype(w.dtype)
        old_b = _bias_of(ir, p, 2, cout, w.dtype)
        new_b = (old_b * a + b).astype(w.dtype)
        ir.set_input(p, 1, ir.constant(p.inputs[1].name + "_bnfold", new_w))
        ir.set_input(p, 2, ir.constant(f"{p.name}_bias_bnfold", new_b))
    elif p.op == "Gemm":
        if not _is_2d(x):
            return False
        w = ir.const_value(p.inputs[1])
        if w is None:
            return False
        trans_b = int(p.attrs.get("transB", 0))
        m = w.shape[0] if trans_b else w.shape[1]
        if a.size != m:
            return False
        new_w = w.astype(np.float64) * (a[:, None] if trans_b else a[None, :])
        beta = float(p.attrs.get("beta", 1.0))
        c = ir.const_value(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2].name else np.zeros(m)
        if c is None or c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1):
            return False
        new_c = (beta * np.broadcast_to(c.reshape(-1), (m,)) * a + b).astype(w.dtype)
        p.attrs["beta"] = 1.0
        ir.set_input(p, 1, ir.constant(p.inputs[1].name + "_bnfold", new_w.astype(w.dtype)))
        ir.set_input(p, 2, ir.constant(f"{p.name}_bias_bnfold", new_c))
    elif p.op == "MatMul":
        if not _is_2d(x):
            return False  # BN normalises axis 1, which is MatMul's last axis only for 2-D outputs
        w = ir.const_value(p.inputs[1])
        if w is None or w.ndim != 2 or w.shape[1] != a.size:
            return False
        new_w = (w.astype(np.float64) * a[None, :]).astype(w.dtype)
        ir.set_input(p, 1, ir.constant(p.inputs[1].name + "_bnfold", new_w))
        bias = ir.constant(f"{p.name}_bias_bnfold", b.astype(w.dtype))
        mm_out = p.outputs[0]
        add_out = ir.variable(f"{p.name}_biased", dtype=mm_out.dtype, shape=mm_out.shape)
        ir.replace_uses(bn.outputs[0], add_out)
        dead[id(bn)] = bn
        ir.add_node("Add", [mm_out, bias], [add_out], name=f"{p.name}_bias")
        return True
    else:
        return False
    # The weighted op now produces what BN produced.
    out = bn.outputs[0]
    ir.replace_uses(out, p.outputs[0])
    dead[id(bn)] = bn
    return True


def _is_2d(t) -> bool:
    return t.shape is not None and len(t.shape) == 2


def _bias_of(ir, node, index, size, dtype) -> np.ndarray:
    if len(node.inputs) > index and node.inputs[index].name:
        v = ir.const_value(node.inputs[index])
        if v is not None:
            return np.asarray(v, dtype=np.float64).reshape(-1)
    return np.zeros(size, dtype=np.float64)


def _to_mul_add(ir, bn, a, b, dead) -> bool:
    x = bn.inputs[0]
    rank = len(x.shape) if x.shape is not None else None
    if rank is None or rank < 2:
        return False
    dtype = np.dtype(x.dtype) if x.dtype is not None else np.dtype(np.float32)
    shape = (a.size,) + (1,) * (rank - 2)  # broadcasts along axis 1 from the right
    out = bn.outputs[0]
    mul_out = ir.variable(f"{bn.name}_scaled", dtype=x.dtype, shape=x.shape)
    new_out = ir.variable(f"{bn.name}_shifted", dtype=out.dtype, shape=out.shape)
    ir.replace_uses(out, new_out)
    dead[id(bn)] = bn
    ir.add_node("Mul", [x, ir.constant(f"{bn.name}_a", a.reshape(shape).astype(dtype))], [mul_out],
                name=f"{bn.name}_mul")
    ir.add_node("Add", [mul_out, ir.constant(f"{bn.name}_b", b.reshape(shape).astype(dtype))], [new_out],
                name=f"{bn.name}_add")
    return True
