"""The IR: an onnx-graphsurgeon graph plus quantization annotations, and the single
mutation gateway that passes use to edit it.

Passes read the graph freely (ir.graph.nodes, node.inputs, tensor.outputs ...) but
change it only through the methods below, so that names stay unique, annotations
follow renames and removals, and the manager can clean up, sort and verify once
after each pass. Passes never call cleanup() or toposort() themselves.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from .annotations import Annotations

Tensor = gs.Tensor
Node = gs.Node


class IR:
    def __init__(self, graph: gs.Graph, model_meta: Optional[dict] = None):
        self.graph = graph
        self.ann = Annotations()
        # Model-level fields gs does not keep (ir_version, metadata, extra opset imports).
        self.model_meta: dict = dict(model_meta or {})
        self._names: set = set()
        self._counter: Dict[str, int] = {}
        self._reindex_names()

    # ------------------------------------------------------------------ queries
    @property
    def opset(self) -> int:
        return int(self.graph.opset)

    @property
    def nodes(self) -> List[Node]:
        return self.graph.nodes

    def tensors(self) -> Dict[str, Tensor]:
        """Name -> tensor for every tensor reachable from nodes and graph I/O."""
        out: Dict[str, Tensor] = {}
        for t in self.graph.inputs:
            out[t.name] = t
        for node in self.graph.nodes:
            for t in list(node.inputs) + list(node.outputs):
                if t.name:
                    out.setdefault(t.name, t)
        for t in self.graph.outputs:
            out.setdefault(t.name, t)
        return out

    @staticmethod
    def producer(t: Tensor) -> Optional[Node]:
        return t.inputs[0] if len(t.inputs) else None

    @staticmethod
    def consumers(t: Tensor) -> List[Node]:
        return list(t.outputs)

    def is_graph_output(self, t: Tensor) -> bool:
        return any(o is t for o in self.graph.outputs)

    def sole_consumer(self, t: Tensor) -> Optional[Node]:
        """The one node reading `t`, or None when `t` has other readers or is a graph output
        (what a rewrite that swallows `t` needs)."""
        if self.is_graph_output(t) or len(t.outputs) != 1:
            return None
        return t.outputs[0]

    def is_graph_input(self, t: Tensor) -> bool:
        return any(i is t for i in self.graph.inputs)

    @staticmethod
    def is_const(t: Tensor) -> bool:
        return isinstance(t, gs.Constant)

    def const_value(self, t: Tensor) -> Optional[np.ndarray]:
        """The value of a constant tensor, also through a Constant node; else None."""
        if isinstance(t, gs.Constant):
            return np.asarray(t.values)
        p = self.producer(t)
        if p is not None and p.op == "Constant" and "value" in p.attrs:
            v = p.attrs["value"]
            return np.asarray(v.values if isinstance(v, gs.Constant) else v)
        return None

    def node(self, name: str) -> Node:
        for n in self.graph.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # ------------------------------------------------------------------ naming
    def _reindex_names(self) -> None:
        self._names = set(self.tensors().keys()) | {n.name for n in self.graph.nodes if n.name}

    def fresh_name(self, base: str) -> str:
        """A name not used by any tensor or node (names are one namespace here)."""
        base = base or "t"
        if base not in self._names:
            self._names.add(base)
            return base
        i = self._counter.get(base, 0)
        while True:
            i += 1
            cand = f"{base}_{i}"
            if cand not in self._names:
                self._counter[base] = i
                self._names.add(cand)
                return cand

    # ------------------------------------------------------------------ gateway: creation
    def constant(self, base: str, values: np.ndarray) -> gs.Constant:
        arr = np.asarray(values)  # np.ascontiguousarray would turn a 0-d scale into shape (1,)
        if not arr.flags.c_contiguous:
            arr = arr.copy()
        return gs.Constant(self.fresh_name(base), arr)

    def variable(self, base: str, dtype=None, shape=None) -> gs.Variable:
        return gs.Variable(self.fresh_name(base), dtype=dtype, shape=shape)

    def add_node(
        self,
        op: str,
        inputs: Sequence[Tensor],
        outputs: Optional[Sequence[Tensor]] = None,
        attrs: Optional[dict] = None,
        name: Optional[str] = None,
        domain: Optional[str] = None,
        out_dtype=None,
        out_shape=None,
    ) -> Node:
        """Add a node. Without `outputs`, one fresh variable output is made."""
        node_name = self.fresh_name(name or op)
        if outputs is None:
            outputs = [self.variable(f"{node_name}_out", dtype=out_dtype, shape=out_shape)]
        node = gs.Node(op=op, name=node_name, attrs=dict(attrs or {}), inputs=list(inputs),
                       outputs=list(outputs), domain=domain)
        self.graph.nodes.append(node)
        return node

    # ------------------------------------------------------------------ gateway: rewiring
    def set_input(self, node: Node, index: int, tensor: Tensor) -> None:
        while len(node.inputs) <= index:
            node.inputs.append(gs.Variable.empty())
        node.inputs[index] = tensor

    def replace_uses(self, old: Tensor, new: Tensor, exclude: Iterable[Node] = (),
                     keep_output_name: bool = True) -> None:
        """Make every consumer of `old` (except `exclude`) read `new` instead.

        If `old` is a graph output it is replaced there too; with keep_output_name the
        graph output keeps its public name (the tensors swap names), so users' code that
        feeds or fetches by name keeps working.
        """
        skip = {id(n) for n in exclude}
        for node in list(old.outputs):
            if id(node) in skip:
                continue
            for i, t in enumerate(node.inputs):
                if t is old:
                    node.inputs[i] = new
        for i, t in enumerate(self.graph.outputs):
            if t is old:
                self.graph.outputs[i] = new
                if keep_output_name and not self.is_graph_input(new) and not self.is_const(new):
                    public = old.name
                    self.rename_tensor(old, self.fresh_name(public + "_pre"))
                    self.rename_tensor(new, public)
                    if new.dtype is None:
                        new.dtype = old.dtype
                    if new.shape is None:
                        new.shape = old.shape

    def insert_on_edge(self, tensor: Tensor, build: Callable[[Tensor], Tensor],
                       consumers: Optional[Iterable[Node]] = None,
                       include_graph_output: bool = False) -> Tensor:
        """Insert nodes on the edge leaving `tensor`.

        `build(tensor)` adds nodes (through this gateway) and returns the new tensor;
        then the chosen consumers (all by default) read the new tensor. The nodes that
        `build` created are excluded automatically, which is the Q/DQ insertion case.
        """
        # the graph-wide scans are only needed for graph outputs (placing Q/DQ on every
        # edge of a large graph would otherwise be quadratic)
        before = {id(n) for n in self.graph.nodes} if include_graph_output else set()
        chosen = list(tensor.outputs) if consumers is None else list(consumers)
        new = build(tensor)
        chosen_ids = {id(n) for n in chosen}
        others = [n for n in tensor.outputs if id(n) not in chosen_ids]
        for node in chosen:
            for i, t in enumerate(node.inputs):
                if t is tensor:
                    node.inputs[i] = new
        if include_graph_output:
            created = [n for n in self.graph.nodes if id(n) not in before]
            self.replace_uses(tensor, new, exclude=created + others)
        return new

    def replace_node(self, node: Node, op: str, inputs: Sequence[Tensor], attrs: Optional[dict] = None) -> Node:
        """Swap `node` for an `op` node with the same name, place and outputs (a local rewrite)."""
        outputs = list(node.outputs)
        index = next(i for i, n in enumerate(self.graph.nodes) if n is node)
        node.inputs.clear()
        node.outputs.clear()
        new = gs.Node(op=op, name=node.name, attrs=dict(attrs or {}), inputs=list(inputs), outputs=outputs,
                      domain=node.domain)
        self.graph.nodes[index] = new
        return new

    def remove_node(self, node: Node) -> None:
        """Detach and drop a node. Its outputs must have no remaining consumers."""
        for t in node.outputs:
            if len(t.outputs) and any(c is not node for c in t.outputs):
                raise ValueError(f"cannot remove {node.name}: output {t.name} is still used")
        self.ann.forget_nodes([node.name])
        node.inputs.clear()
        node.outputs.clear()
        self.graph.nodes = [n for n in self.graph.nodes if n is not node]

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Drop many nodes at once (linear time); callers rewire uses first."""
        drop = {id(n): n for n in nodes}
        if not drop:
            return
        self.ann.forget_nodes([n.name for n in drop.values()])
        for n in drop.values():
            n.inputs.clear()
            n.outputs.clear()
        self.graph.nodes = [n for n in self.graph.nodes if id(n) not in drop]

    def bypass(self, node: Node, in_index: int = 0, out_index: int = 0) -> None:
        """Remove a single-path node (Identity, Dropout...): its consumers read its input."""
        src = node.inputs[in_index]
        out = node.outputs[out_index]
        self.replace_uses(out, src)
        for extra in node.outputs:
            if extra is not out and len(extra.outputs) and not self.is_graph_output(extra):
                raise ValueError(f"cannot bypass {node.name}: output {extra.name} is used")
        self.remove_node(node)

    # ------------------------------------------------------------------ gateway: renaming
    def rename_tensor(self, t: Tensor, new: str) -> None:
        old = t.name
        if old == new:
            return
        self._names.discard(old)
        self._names.add(new)
        t.name = new
        self.ann.rename_tensor(old, new)

    def rename_node(self, node: Node, new: str) -> None:
        old = node.name
        if old == new:
            return
        self._names.discard(old)
        self._names.add(new)
        node.name = new
        self.ann.rename_node(old, new)

    def reload(self, graph: gs.Graph, model_meta: Optional[dict] = None) -> None:
        """Swap in a whole new graph (after a whole-model rewrite such as an opset upgrade).

        Annotations are kept by name; node names are made unique again.
        """
        self.graph = graph
        if model_meta is not None:
            self.model_meta = dict(model_meta)
        self.name_nodes()

    def name_nodes(self) -> None:
        """Give every node a unique, stable name (ONNX allows empty and repeated ones)."""
        seen = set()
        tensor_names = set(self.tensors().keys())
        for i, node in enumerate(self.graph.nodes):
            name = node.name
            if not name or name in seen or name in tensor_names:
                base = name or f"{node.op}_{i}"
                cand, k = base, 0
                while cand in seen or cand in tensor_names:
                    k += 1
                    cand = f"{base}_{k}"
                node.name = cand
            seen.add(node.name)
        self._reindex_names()

    # ------------------------------------------------------------------ housekeeping (manager only)
    def cleanup(self) -> int:
        """Remove nodes that no graph output depends on. Returns how many were removed."""
        from .toposort import live_nodes

        live = live_nodes(self.graph)
        dead = [n for n in self.graph.nodes if id(n) not in live]
        self.remove_nodes(dead)
        return len(dead)

    def toposort(self) -> None:
        from .toposort import toposort_nodes

        self.graph.nodes = toposort_nodes(self.graph)

    def verify(self, sorted_already: bool = False) -> None:
        from .verify import verify

        verify(self, sorted_already)
