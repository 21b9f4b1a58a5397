"""float-elementwise-chains: keep long chains of integer elementwise kernels float.

On a target where every Add and Mul is an INT8 kernel (ONNX Runtime's QLinearAdd,
QLinearMul), a value that flows through several elementwise ops between two weighted
layers is rounded to 8 bits after each of them. A spelled-out HardSwish
`x * clip(x + 3, 0, 6) / 6` followed by a learnable `* a + b` rounds five times; a residual
`Add -> Relu` or a SiLU `x * sigmoid(x)` once or twice.

The pass finds the regions of connected elementwise nodes, plans the target's kernels on
them, and measures each region's rounding depth: the most kernel outputs a value passes
through, entering the region to leaving it. A region at least `float_elementwise_depth`
deep (the target's placement rule; 0 = never) is recorded in `notes["forced_float"]`:
insert-observers plans no kernel over it, so it runs in float between one QuantizeLinear
and the next, at the cost of float elementwise ops (the measurements that chose x86's
depth are in docs/accuracy.md).

A float region then loses what float arithmetic does not need (exact algebra, float
rounding aside): constant Muls in a row merge, a constant scalar Mul moves behind a
constant Add (`x * s + d = (x + d / s) * s`), and a constant Mul that only a Conv reads
folds into the conv's weights (zero padding stays zero), a constant Add into the bias of
a conv without padding. PP-OCRv4's `x * clip(x + 3, 0, 6) / 6 * a + b -> Conv` keeps
`x * clip(x + 3, 0, 6) + d` in float.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set

import numpy as np

from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.rewrite import rewrite

#: ops that compute elementwise on their inputs (with broadcasting) and have no weights
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Clip", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Neg", "Abs", "Sqrt", "Pow", "Exp", "Log", "Erf", "Min", "Max",
})


@register_pass("float-elementwise-chains", requires={"canonical"}, provides={"chains-placed"})
class FloatElementwiseChains(Pass):
    """Keep regions of elementwise kernels deeper than the target allows float, and fold
    their constant arithmetic."""

    config = {"float_elementwise_depth": Option(
        int, None, "rounding depth from which an elementwise region stays float (0: never; "
                   "default: the target's placement rule)")}

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        depth_limit = self.settings(ctx).float_elementwise_depth
        if depth_limit is None:
            depth_limit = ctx.target.placement.float_elementwise_depth if ctx.target is not None else 0
        rep["depth_limit"] = depth_limit
        if depth_limit <= 0 or ctx.target is None:
            return False
        forced = ir.ann.notes.setdefault("forced_float", {})
        regions = elementwise_regions(ir, exclude=forced)
        depths = region_depths(ir, ctx.target, regions, exclude=forced)
        deep = [(r, d) for r, d in zip(regions, depths) if d >= depth_limit]
        for region, depth in deep:
            for node in region:
                forced.setdefault(node.name, f"elementwise chain rounded {depth} times in INT8 "
                                             f"(target: float from {depth_limit}): kept float")
        mine = {n.name for r, _ in deep for n in r}
        folded = fold_float_constants(ir, mine) if mine else 0
        for name in mine:  # the nodes the folds made belong to the float regions too
            forced.setdefault(name, "elementwise chain kept float (float-elementwise-chains)")
        rep.update(regions=len(regions), float_regions=len(deep), constants_folded=folded,
                   float_nodes=sum(len(r) for r, _ in deep),
                   depth_histogram={str(d): depths.count(d) for d in sorted(set(depths))})
        return folded > 0  # otherwise annotations only


def elementwise_regions(ir, exclude=()) -> List[list]:
    """Connected groups (through tensors) of elementwise nodes, in graph order; nodes named
    in `exclude` (already float) belong to none."""
    nodes = [n for n in ir.graph.nodes if n.op in ELEMENTWISE and n.name not in exclude]
    ids = {id(n) for n in nodes}
    parent: Dict[int, int] = {id(n): id(n) for n in nodes}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n in nodes:
        for t in n.inputs:
            for p in t.inputs:  # the producer of an input tensor
                if id(p) in ids:
                    parent[find(id(p))] = find(id(n))
    groups: Dict[int, list] = {}
    for n in nodes:
        groups.setdefault(find(id(n)), []).append(n)
    return list(groups.values())


def region_depths(ir, target, regions, exclude=()) -> List[int]:
    """Per region: the most INT8 kernel outputs on one path through it, with the target's
    kernels planned as insert-observers would plan them."""
    from qcompiler.target.patterns import match_all

    matches, _ = match_all(ir, target, exclude=exclude)
    rounds_at = {id(m.nodes[-1].outputs[0]) for m in matches if m.nodes[-1].outputs}
    out = []
    for region in regions:
        inside = {id(n) for n in region}
        depth: Dict[int, int] = {}  # tensor id -> roundings since the region's entry
        best = 0
        for n in region:  # graph order is topological
            d = max((depth.get(id(t), 0) for t in n.inputs if any(id(p) in inside for p in t.inputs)),
                    default=0)
            for t in n.outputs:
                depth[id(t)] = d + (1 if id(t) in rounds_at else 0)
                best = max(best, depth[id(t)])
        out.append(best)
    return out


# ---------------------------------------------------------------- float-region algebra

MERGE_MULS = "Mul(x, s:const) -> Mul(_, t:const)"
MUL_BEFORE_ADD = "Mul(x, s:const) -> Add(_, d:const)"
MUL_INTO_CONV = "Mul(x, s:const) -> Conv(_, w:const, c?:const)"
ADD_INTO_CONV = "Add(x, d:const) -> Conv(_, w:const, c?:const)"


def fold_float_constants(ir, mine: Set[str], rounds: int = 8) -> int:
    """Rewrite the constant Muls/Adds of the float nodes named in `mine` (which grows by
    the nodes made) until nothing changes; returns how many rewrites ran."""
    total = 0
    for _ in range(rounds):
        done = 0
        for pattern, fn, check in ((MERGE_MULS, _merge_muls, _merge_check),
                                   (MUL_BEFORE_ADD, _mul_behind_add, _behind_check),
                                   (MUL_INTO_CONV, _mul_into_conv, _mul_conv_check),
                                   (ADD_INTO_CONV, _add_into_conv, _add_conv_check)):
            res = rewrite(ir, pattern, lambda b, m, fn=fn: fn(b, m, mine),
                          check=lambda m, check=check: _ours(m, mine) or check(ir, m),
                          name="float-chain-constants")
            done += res.rewritten
        total += done
        if not done:
            break
    return total


def _ours(m, mine) -> Optional[str]:
    elementwise = [n for n in m.nodes if n.op != "Conv"]
    return None if all(n.name in mine for n in elementwise) else "not in a float region"


def _value(ir, t):
    v = ir.const_value(t)
    return None if v is None else np.asarray(v)


def _scalar(ir, t) -> Optional[float]:
    v = _value(ir, t)
    if v is None or v.size != 1 or v.dtype.kind != "f" or not np.isfinite(v).all() or v.reshape(-1)[0] == 0:
        return None
    return float(v.reshape(-1)[0])


def _merge_check(ir, m):
    return None if _scalar(ir, m["s"]) is not None and _scalar(ir, m["t"]) is not None else "not two scalars"


def _merge_muls(b, m, mine):
    s = _scalar(b, m["s"]) * _scalar(b, m["t"])
    out = b.op("Mul", m["x"], b.constant(f"{m.nodes[0].name}_merged", np.asarray(s, np.float32)))
    mine.add(out.inputs[0].name)
    return out


def _behind_check(ir, m):
    d = _value(ir, m["d"])
    if _scalar(ir, m["s"]) is None or d is None or d.dtype.kind != "f":
        return "not a nonzero scalar scale and a float shift"
    x = m["x"]
    if x.shape is None or d.ndim > len(x.shape):
        return "the shift would raise the rank"
    return None


def _mul_behind_add(b, m, mine):
    s = _scalar(b, m["s"])
    d = _value(b, m["d"]).astype(np.float64) / s
    add = b.op("Add", m["x"], b.constant(f"{m.nodes[1].name}_shift", d.astype(np.float32)),
               name=f"{m.nodes[1].name}_first")
    out = b.op("Mul", add, b.constant(f"{m.nodes[0].name}_scale", np.asarray(s, np.float32)),
               name=f"{m.nodes[0].name}_after")
    mine.update({add.inputs[0].name, out.inputs[0].name})
    return out


def _per_input_channel(ir, m, v) -> Optional[np.ndarray]:
    """The constant as one value per conv input channel (None: it does not broadcast so)."""
    conv, w = m["Conv"], _value(ir, m["w"])
    if w is None or v is None or v.dtype.kind != "f" or not np.isfinite(v).all():
        return None
    cin = int(w.shape[1]) * int(conv.attrs.get("group", 1))
    rank = len(w.shape)
    if v.size == 1:
        return np.full(cin, float(v.reshape(-1)[0]))
    dims = (1,) * (rank - v.ndim) + v.shape if v.ndim <= rank else None
    if dims is None or dims[0] != 1 or dims[1] != cin or any(d != 1 for d in dims[2:]):
        return None
    return v.reshape(-1).astype(np.float64)


def _mul_conv_check(ir, m):
    return None if _per_input_channel(ir, m, _value(ir, m["s"])) is not None else "not a per-input-channel scale"


def _weight_by_input_channel(w, group, per_cin):
    """w [OC, C/group, k...] scaled by per_cin along its input channels."""
    oc, cpg = w.shape[0], w.shape[1]
    ocg = oc // group
    idx = (np.arange(oc) // ocg)[:, None] * cpg + np.arange(cpg)[None, :]  # [OC, C/group] -> input channel
    return per_cin[idx].reshape((oc, cpg) + (1,) * (w.ndim - 2))


def _mul_into_conv(b, m, mine):
    conv, w = m["Conv"], _value(b, m["w"])
    s = _per_input_channel(b, m, _value(b, m["s"]))
    new_w = (w.astype(np.float64) * _weight_by_input_channel(w, int(conv.attrs.get("group", 1)), s)).astype(w.dtype)
    b.set_input(conv, 0, m["x"])
    b.set_input(conv, 1, b.constant(f"{conv.inputs[1].name}_scaled", new_w))
    return conv.outputs[0]


def _add_conv_check(ir, m):
    conv = m["Conv"]
    pads = conv.attrs.get("pads", [])
    if any(int(p) for p in pads) or conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "the conv pads (a shift would change its border)"
    return None if _per_input_channel(ir, m, _value(ir, m["d"])) is not None else "not a per-input-channel shift"


def _add_into_conv(b, m, mine):
    conv, w = m["Conv"], _value(b, m["w"])
    d = _per_input_channel(b, m, _value(b, m["d"]))
    c = _value(b, m["c"]) if m["c"] is not None else np.zeros(w.shape[0])
    contrib = (w.astype(np.float64) * _weight_by_input_channel(w, int(conv.attrs.get("group", 1)), d))
    new_c = c.astype(np.float64).reshape(-1) + contrib.reshape(w.shape[0], -1).sum(axis=1)
    b.set_input(conv, 0, m["x"])
    b.set_input(conv, 2, b.constant(f"{conv.name}_bias_shifted", new_c.astype(w.dtype)))
    return conv.outputs[0]
