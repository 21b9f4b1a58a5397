"""IR invariants, checked by the pass manager after every pass."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import VerifyError
from .toposort import outer_inputs, toposort_nodes


def verify(ir, sorted_already: bool = False) -> None:
    """`sorted_already`: the caller just sorted the nodes (which raises on a cycle)."""
    g = ir.graph
    node_names = set()
    producers = {}
    for node in g.nodes:
        if not node.name:
            raise VerifyError(f"a {node.op} node has no name")
        if node.name in node_names:
            raise VerifyError(f"two nodes are named '{node.name}'")
        node_names.add(node.name)
        for t in node.outputs:
            if t.name == "":
                continue
            if t.name in producers and producers[t.name] is not node:
                raise VerifyError(
                    f"tensor '{t.name}' has two producers: '{producers[t.name].name}' and '{node.name}'")
            producers[t.name] = node
            if len(t.inputs) != 1:
                raise VerifyError(f"tensor '{t.name}' has {len(t.inputs)} producers")

    by_name = {}
    for t in g.inputs:
        by_name[t.name] = t
    graph_inputs = {id(t) for t in g.inputs}
    in_graph = {id(n) for n in g.nodes}
    for node in g.nodes:
        for t in list(node.inputs) + outer_inputs(node):
            if t.name == "" and isinstance(t, gs.Variable):
                continue  # omitted optional input
            other = by_name.get(t.name)
            if other is not None and other is not t:
                raise VerifyError(f"two different tensors are named '{t.name}'")
            by_name[t.name] = t
            if isinstance(t, gs.Constant) or id(t) in graph_inputs:
                continue
            if not t.inputs or id(t.inputs[0]) not in in_graph:
                raise VerifyError(
                    f"node '{node.name}' ({node.op}) reads '{t.name}', which nothing produces",
                    "the tensor is neither a graph input, an initializer nor a node output")
    for t in g.outputs:
        if isinstance(t, gs.Constant) or id(t) in graph_inputs:
            continue
        if not t.inputs or id(t.inputs[0]) not in in_graph:
            raise VerifyError(f"graph output '{t.name}' is not produced by any node")
    if not sorted_already:
        toposort_nodes(g)  # raises on a cycle
    _verify_qdq(g)


def _verify_qdq(g: gs.Graph) -> None:
    """Every Q/DQ node has scale/zero point of matching shape, dtype and axis."""
    for node in g.nodes:
        if node.op not in ("QuantizeLinear", "DequantizeLinear") or node.domain not in ("", None, "ai.onnx"):
            continue
        if len(node.inputs) < 2:
            raise VerifyError(f"{node.op} '{node.name}' has no scale input")
        scale = node.inputs[1]
        if isinstance(scale, gs.Constant):
            s = np.asarray(scale.values)
            if s.size == 1:  # most Q/DQ nodes: float checks (numpy's per-call cost dominated verify)
                v = float(s.reshape(-1)[0])
                ok = math.isfinite(v) and v > 0
            else:
                ok = bool(np.all(np.isfinite(s))) and not bool(np.any(s <= 0))
            if not ok:
                raise VerifyError(f"{node.op} '{node.name}' has a scale that is not positive and finite")
            if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
                zp = np.asarray(node.inputs[2].values)
                if zp.shape != s.shape:
                    raise VerifyError(
                        f"{node.op} '{node.name}': zero point shape {zp.shape} differs from scale shape {s.shape}")
            if s.ndim == 1 and s.size > 1:
                axis = node.attrs.get("axis", 1)
                x = node.inputs[0]
                if x.shape is not None and len(x.shape) > 0:
                    ax = axis if axis >= 0 else axis + len(x.shape)
                    dim = x.shape[ax] if 0 <= ax < len(x.shape) else None
                    if isinstance(dim, int) and dim != s.size:
                        raise VerifyError(
                            f"{node.op} '{node.name}': {s.size} scales for axis {axis} of size {dim}")
