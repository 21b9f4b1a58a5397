"""Linear-time graph walks: topological sort and liveness.

Both are iterative (no recursion limit on 10k+ node chains) and stable: a graph that is
already sorted keeps its order, so dumps diff cleanly from one pass to the next.
"""

from __future__ import annotations

from typing import List, Set

import onnx_graphsurgeon as gs

from ..errors import VerifyError


def toposort_nodes(graph: gs.Graph) -> List[gs.Node]:
    """Depth-first post-order over producers, visiting nodes in their current order."""
    nodes = graph.nodes
    in_graph = {id(n) for n in nodes}
    state = {}  # id -> 1 visiting, 2 done
    order: List[gs.Node] = []
    stack_inputs = {}
    for root in nodes:
        if state.get(id(root)) == 2:
            continue
        stack = [(root, 0)]
        state[id(root)] = 1
        while stack:
            node, i = stack[-1]
            inputs = list(node.inputs) + outer_inputs(node) if i == 0 else stack_inputs[id(node)]
            stack_inputs[id(node)] = inputs
            advanced = False
            while i < len(inputs):
                t = inputs[i]
                i += 1
                if not t.inputs:
                    continue
                p = t.inputs[0]
                if id(p) not in in_graph:
                    continue
                s = state.get(id(p))
                if s == 2:
                    continue
                if s == 1:
                    raise VerifyError(
                        f"the graph has a cycle through node '{p.name}' ({p.op}) and tensor '{t.name}'",
                        "an ONNX graph must be acyclic; re-export the model",
                    )
                stack[-1] = (node, i)
                state[id(p)] = 1
                stack.append((p, 0))
                advanced = True
                break
            if not advanced:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
    return order


def outer_inputs(node: gs.Node) -> List[gs.Tensor]:
    """Tensors of the enclosing graph that a node's subgraphs (If/Loop/Scan) read."""
    out: List[gs.Tensor] = []
    for value in node.attrs.values():  # what node.subgraphs() yields, without its per-call overhead
        if isinstance(value, gs.Graph):
            out.extend(value._foreign_tensors().values())
    return out


def live_nodes(graph: gs.Graph) -> Set[int]:
    """ids of the nodes some graph output depends on."""
    in_graph = {id(n) for n in graph.nodes}
    live: Set[int] = set()
    stack = [t for t in graph.outputs]
    seen_t = set()
    while stack:
        t = stack.pop()
        if id(t) in seen_t:
            continue
        seen_t.add(id(t))
        for p in t.inputs:
            if id(p) in in_graph and id(p) not in live:
                live.add(id(p))
                stack.extend(p.inputs)
                stack.extend(outer_inputs(p))
    return live
