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
"""

from __future__ import annotations

from typing import Dict, List

from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass

#: ops that compute elementwise on their inputs (with broadcasting) and have no weights
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Clip", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Neg", "Abs", "Sqrt", "Pow", "Exp", "Log", "Erf", "Min", "Max",
})


@register_pass("float-elementwise-chains", requires={"canonical"}, provides={"chains-placed"})
class FloatElementwiseChains(Pass):
    """Record regions of elementwise kernels deeper than the target allows as float."""

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
        kept = 0
        for region, depth in zip(regions, depths):
            if depth < depth_limit:
                continue
            kept += 1
            for node in region:
                forced.setdefault(node.name, f"elementwise chain rounded {depth} times in INT8 "
                                             f"(target: float from {depth_limit}): kept float")
        rep.update(regions=len(regions), float_regions=kept,
                   float_nodes=sum(len(r) for r, d in zip(regions, depths) if d >= depth_limit),
                   depth_histogram={str(d): depths.count(d) for d in sorted(set(depths))})
        return False  # annotations only: the graph is unchanged


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
