"""Which nodes become integer kernels, and why every other node stays float.

insert-observers (calibrated builds) and import-qdq (models that arrive with Q/DQ) both
plan kernels from the target's legal patterns (the matcher `qcompiler build` also uses
for its "why not INT8" reasons) and write the same float reasons; this is their one copy.
"""

from __future__ import annotations

import fnmatch
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .plan import WEIGHTED, Kernel, Plan, is_float, tensors_in_order


def keep_float_nodes(ir, patterns: Iterable[str]) -> Set[str]:
    """Names of the nodes that `--keep-float` patterns (names or globs) select."""
    patterns = list(patterns or ())
    return {n.name for n in ir.graph.nodes
            if any(n.name == p or fnmatch.fnmatchcase(n.name, p) for p in patterns)}


def find_kernels(ir, target, keep_float=frozenset(), forced_float: Optional[Dict[str, str]] = None
                 ) -> Tuple[List[Kernel], Dict[str, str]]:
    """Kernels from the target's pattern matches, and reasons for nodes that matched none.
    `forced_float` (node name -> reason) takes its nodes out of matching: a pattern whose
    optional tail is forced float still matches without it."""
    from qcompiler.target.patterns import match_all

    forced_float = forced_float or {}
    matches, reasons = match_all(ir, target, exclude=forced_float)
    reasons = dict(reasons)
    reasons.update(forced_float)
    kernels: List[Kernel] = []
    for m in matches:
        nodes = list(m.nodes)
        if any(n.name in keep_float for n in nodes):
            for n in nodes:
                reasons[n.name] = "kept float by --keep-float"
            continue
        if not all(is_float(t) for n in nodes[:1] for t in n.outputs):
            continue
        anchor = nodes[0]
        inside = {id(t) for n in nodes for t in n.outputs}
        inputs: List[str] = []
        for n in nodes:
            for t in n.inputs:
                if not t.name or ir.is_const(t) or id(t) in inside or not is_float(t):
                    continue
                if t.name not in inputs:
                    inputs.append(t.name)
        weight = bias = None
        # is_const first: the weight's values are not read here (for a large model, that loaded them all)
        if anchor.op in WEIGHTED and len(anchor.inputs) > 1 and (
                ir.is_const(anchor.inputs[1]) or ir.const_value(anchor.inputs[1]) is not None):
            weight = anchor.inputs[1].name
            if anchor.op != "MatMul" and len(anchor.inputs) > 2 and anchor.inputs[2].name:
                if ir.is_const(anchor.inputs[2]) or ir.const_value(anchor.inputs[2]) is not None:
                    bias = anchor.inputs[2].name
        elif anchor.op in WEIGHTED:
            for n in nodes:
                reasons[n.name] = f"{anchor.op} weight is not a constant"
            continue
        kernels.append(Kernel(name=f"{m.pattern}:{anchor.name}", pattern=m.pattern, op=anchor.op,
                              nodes=[n.name for n in nodes], inputs=inputs, output=nodes[-1].outputs[0].name,
                              weight=weight, bias=bias))
    return kernels, reasons


def default_float_reason(node, target) -> str:
    """Why a node that no kernel holds stays float, when the matcher gave no reason."""
    if target.stays_float(node.op):
        return f"{node.op} stays float on {target.name} (target file: float)"
    if node.op in ("QuantizeLinear", "DequantizeLinear"):
        return "already a quantization node"
    if target.is_passthrough(node.op):
        return f"{node.op} passes quantization through, but its input is not quantized"
    return f"{node.op} is not legal on {target.name}"


def passthrough_nodes(ir, target, quantized: Set[str]) -> Set[str]:
    """Pass-through ops (Reshape, MaxPool...) between two quantized tensors: they run on
    the integer values, so they are not float nodes."""
    return {n.name for n in ir.graph.nodes if target.is_passthrough(n.op) and n.inputs and n.outputs
            and n.inputs[0].name in quantized and n.outputs[0].name in quantized}


def make_plan(ir, target, kernels: List[Kernel], quantized: Set[str], reasons: Dict[str, str]) -> Plan:
    """The plan for these kernels and quantized tensors; every other node gets its float
    reason, in the plan and in `ir.ann.float_reasons` (which the printer shows)."""
    plan = Plan(kernels=kernels, tensors=tensors_in_order(ir, quantized))
    in_kernel = {n for k in kernels for n in k.nodes}
    passthrough = passthrough_nodes(ir, target, quantized)
    for node in ir.graph.nodes:
        if node.name in in_kernel or node.name in passthrough:
            continue
        reason = reasons.get(node.name) or default_float_reason(node, target)
        plan.float_reasons[node.name] = reason
        ir.ann.float_reasons[node.name] = reason
    return plan
