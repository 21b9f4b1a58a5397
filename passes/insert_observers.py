"""insert-observers: decide what the target runs in integer and attach observers there.

Kernels come from the target's legal patterns (the same matcher the report uses for
"why not INT8"). A tensor is observed when a kernel reads or writes it under the
target's placement rules; pass-through ops (MaxPool, Reshape...) between quantized
tensors join their input's scale group, so ONNX Runtime and integer backends can drop
the Q/DQ around them. Every other node stays float with a reason.
"""

from __future__ import annotations

from typing import Dict, List, Set

from qcompiler.errors import PipelineError
from qcompiler.quant.plan import WEIGHTED, Kernel, Plan, is_float, tensors_in_order, to_quant_scheme
from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("insert-observers", requires={"canonical"}, provides={"observed"})
class InsertObservers(Pass):
    """Plan integer kernels from the target's patterns and attach observers to the tensors they need quantized."""

    def run(self, ir, ctx) -> bool:
        target = ctx.target
        if target is None:
            raise PipelineError("pass 'insert-observers' needs a target", "pass --target x86|arm64|cuda or a .qtarget file")
        keep_float = _keep_float_set(ir, ctx.option("keep_float", ()))
        forced = dict(ir.ann.notes.get("forced_float") or {})  # attention-mask, transformer-placement
        kernels, reasons = find_kernels(ir, target, keep_float, forced)
        quantized = _quantized_tensors(ir, target, kernels, set(ir.ann.notes.get("float_outputs") or ()))
        act = to_quant_scheme(target.scheme("activation"))
        for name in quantized:
            ir.ann.qspec[name] = act
        plan = Plan(kernels=kernels, tensors=tensors_in_order(ir, quantized))
        in_kernel = {n for k in kernels for n in k.nodes}
        passthrough_q = _passthrough_nodes(ir, target, quantized)
        for node in ir.graph.nodes:
            if node.name in in_kernel or node.name in passthrough_q:
                continue
            reason = reasons.get(node.name) or _default_reason(node, target)
            plan.float_reasons[node.name] = reason
            ir.ann.float_reasons[node.name] = reason
        ir.ann.notes["quant_plan"] = plan.to_json()
        rep = ctx.pass_report(self.name)
        rep.update(kernels=len(kernels), observed_tensors=len(plan.tensors), float_nodes=len(plan.float_reasons))
        return bool(kernels)


def _keep_float_set(ir, patterns) -> Set[str]:
    import fnmatch

    names = set()
    for pat in patterns or ():
        hits = [n.name for n in ir.graph.nodes if fnmatch.fnmatchcase(n.name, pat) or n.name == pat]
        names.update(hits)
    return names


def _default_reason(node, target) -> str:
    if target.stays_float(node.op):
        return f"{node.op} stays float on {target.name} (target file: float)"
    if node.op in ("QuantizeLinear", "DequantizeLinear"):
        return "already a quantization node"
    if target.is_passthrough(node.op):
        return f"{node.op} passes quantization through, but its input is not quantized"
    return f"{node.op} is not legal on {target.name}"


def find_kernels(ir, target, keep_float=frozenset(), forced_float=None):
    """Kernels from the target's pattern matches, and reasons for nodes that matched none.
    `forced_float` (node name -> reason) drops every match that holds one of its nodes."""
    from qcompiler.target.patterns import match_all

    matches, reasons = match_all(ir, target)
    reasons = dict(reasons)
    forced_float = forced_float or {}
    reasons.update(forced_float)
    kernels: List[Kernel] = []
    for m in matches:
        nodes = list(m.nodes)
        forced = next((n.name for n in nodes if n.name in forced_float), None)
        if forced is not None:
            for n in nodes:
                reasons[n.name] = forced_float.get(n.name) or forced_float[forced]
            continue
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


def _quantized_tensors(ir, target, kernels, float_outputs=frozenset()) -> Set[str]:
    """`float_outputs`: kernels (anchor node names) whose output stays float when no kernel reads it."""
    tensors = ir.tensors()
    producer_kernel: Dict[str, Kernel] = {k.output: k for k in kernels}
    placement = target.placement
    read_by_kernel = {i for k in kernels for i in k.inputs}
    q: Set[str] = set()
    for k in kernels:
        if k.nodes[0] in float_outputs and k.output not in read_by_kernel:
            pass
        elif placement.quantize_weighted_outputs or k.op not in WEIGHTED:
            q.add(k.output)
        ins = list(k.inputs)
        if k.op == "Add" and placement.residual_add == "quantize_skip_only" and len(ins) == 2:
            # TensorRT fuses the input that a weighted kernel produced into that kernel.
            fused = [i for i in ins if i in producer_kernel and producer_kernel[i].op in WEIGHTED
                     and len(tensors[i].outputs) == 1]
            if fused:
                ins = [i for i in ins if i != fused[0]]
        q.update(ins)
    q = {n for n in q if n in tensors and is_float(tensors[n])}
    # Pass-through chains between quantized tensors share their input's parameters.
    wanted = _wanted_through_passthrough(ir, target, q)
    for node in ir.graph.nodes:
        if not target.is_passthrough(node.op) or not node.inputs or not node.outputs:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if src.name in q and dst.name in wanted and is_float(dst):
            q.add(dst.name)
            ir.ann.groups.union(src.name, dst.name)
    return q


def _wanted_through_passthrough(ir, target, q: Set[str]) -> Set[str]:
    wanted = set(q)
    for node in reversed(ir.graph.nodes):
        if target.is_passthrough(node.op) and node.outputs and node.outputs[0].name in wanted and node.inputs:
            wanted.add(node.inputs[0].name)
    return wanted


def _passthrough_nodes(ir, target, quantized: Set[str]) -> Set[str]:
    return {n.name for n in ir.graph.nodes if target.is_passthrough(n.op) and n.inputs and n.outputs
            and n.inputs[0].name in quantized and n.outputs[0].name in quantized}
