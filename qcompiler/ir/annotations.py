"""Quantization annotations kept beside the graph: per-tensor specs and parameters,
scale groups (union-find), fused regions and the quantization plan.

The IR stores these by tensor / node name; renames through the IR gateway keep them
attached. The value types (QuantSpec, QParams) live in qcompiler.quant; the IR only
stores and prints them, so it does not depend on the quantization math.

The plan (`qcompiler.quant.plan.Plan`) is the planning pass's record by name: it is not
renamed with the graph (place-qdq moves a graph output's name onto its DequantizeLinear,
and the report still names the kernel's tensor as planned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterable, List, Optional

if TYPE_CHECKING:  # the IR stores the plan; it never imports the quantization package
    from qcompiler.quant.plan import Plan


class UnionFind:
    """Scale groups: tensors that must share quantization parameters.

    Unification is a union, not a copy: after `union(a, b)` both resolve to one root,
    and parameters are stored once per root by the passes that need them.
    """

    def __init__(self) -> None:
        self._parent: Dict[Hashable, Hashable] = {}
        self._rank: Dict[Hashable, int] = {}

    def add(self, x: Hashable) -> None:
        if x not in self._parent:
            self._parent[x] = x
            self._rank[x] = 0

    def find(self, x: Hashable) -> Hashable:
        self.add(x)
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:  # path compression
            self._parent[x], x = root, self._parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> Hashable:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._rank[ra] < self._rank[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        if self._rank[ra] == self._rank[rb]:
            self._rank[ra] += 1
        return ra

    def same(self, a: Hashable, b: Hashable) -> bool:
        return self.find(a) == self.find(b)

    def members(self, x: Hashable) -> List[Hashable]:
        root = self.find(x)
        return sorted((m for m in self._parent if self.find(m) == root), key=str)

    def groups(self) -> List[List[Hashable]]:
        """All groups with more than one member, in a stable order."""
        by_root: Dict[Hashable, List[Hashable]] = {}
        for m in self._parent:
            by_root.setdefault(self.find(m), []).append(m)
        out = [sorted(g, key=str) for g in by_root.values() if len(g) > 1]
        return sorted(out, key=lambda g: str(g[0]))

    def rename(self, old: Hashable, new: Hashable) -> None:
        if old not in self._parent:
            return
        members = self.members(old)
        root = self.find(old)
        for m in members:
            self._parent.pop(m)
            self._rank.pop(m, None)
        renamed = [new if m == old else m for m in members]
        for m in renamed:
            self.add(m)
        for m in renamed[1:]:
            self.union(renamed[0], m)
        del root

    def discard(self, x: Hashable) -> None:
        """Drop x, keeping the rest of its group together."""
        if x not in self._parent:
            return
        rest = [m for m in self.members(x) if m != x]
        for m in self.members(x):
            self._parent.pop(m)
            self._rank.pop(m, None)
        for m in rest:
            self.add(m)
        for m in rest[1:]:
            self.union(rest[0], m)


@dataclass
class FusedRegion:
    """Nodes that a later backend runs as one kernel: no quantization point inside.

    `nodes` are node names in dataflow order; the region's output is the last node's
    first output; `kind` names what was recognised (e.g. "conv+bias+relu").
    """

    name: str
    kind: str
    nodes: List[str] = field(default_factory=list)


@dataclass
class Annotations:
    qspec: Dict[str, Any] = field(default_factory=dict)  # tensor name -> QuantSpec
    qparams: Dict[str, Any] = field(default_factory=dict)  # tensor name -> QParams
    groups: UnionFind = field(default_factory=UnionFind)  # tensor names sharing params
    regions: Dict[str, FusedRegion] = field(default_factory=dict)
    float_reasons: Dict[str, str] = field(default_factory=dict)  # node name -> why float
    layout: Dict[str, str] = field(default_factory=dict)  # node name -> layout decision
    plan: Optional["Plan"] = None  # kernels, quantized tensors, float reasons (insert-observers, import-qdq)
    notes: Dict[str, Any] = field(default_factory=dict)  # free-form per-pass results

    def region_of(self, node_name: str) -> FusedRegion | None:
        for region in self.regions.values():
            if node_name in region.nodes:
                return region
        return None

    def rename_tensor(self, old: str, new: str) -> None:
        for table in (self.qspec, self.qparams):
            if old in table:
                table[new] = table.pop(old)
        self.groups.rename(old, new)

    def rename_node(self, old: str, new: str) -> None:
        for region in self.regions.values():
            region.nodes = [new if n == old else n for n in region.nodes]
        for table in (self.float_reasons, self.layout):
            if old in table:
                table[new] = table.pop(old)

    def forget_nodes(self, names: Iterable[str]) -> None:
        gone = set(names)
        if not gone:
            return
        for key in list(self.regions):
            region = self.regions[key]
            region.nodes = [n for n in region.nodes if n not in gone]
            if len(region.nodes) == 0:
                del self.regions[key]
        for table in (self.float_reasons, self.layout):
            for n in gone:
                table.pop(n, None)
