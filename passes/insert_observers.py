"""insert-observers: decide what the target runs in integer and attach observers there.

Kernels come from the target's legal patterns (the same matcher the report uses for
"why not INT8"). A tensor is observed when a kernel reads or writes it under the
target's placement rules; pass-through ops (MaxPool, Reshape...) between quantized
tensors join their input's scale group, so ONNX Runtime and integer backends can drop
the Q/DQ around them. Every other node stays float with a reason.
"""

from __future__ import annotations

from typing import Dict, Set

from qcompiler.errors import PipelineError
from qcompiler.quant.kernels import find_kernels, keep_float_nodes, make_plan
from qcompiler.quant.plan import WEIGHTED, Kernel, is_float, to_quant_scheme
from qcompiler.pipeline.options import KEEP_FLOAT_OPTION
from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("insert-observers", requires={"canonical"}, provides={"observed"})
class InsertObservers(Pass):
    """Plan integer kernels from the target's patterns and attach observers to the tensors they need quantized."""

    config = {"keep_float": KEEP_FLOAT_OPTION}

    def run(self, ir, ctx) -> bool:
        target = ctx.target
        if target is None:
            raise PipelineError("pass 'insert-observers' needs a target", "pass --target x86|arm64|cuda or a .qtarget file")
        keep_float = keep_float_nodes(ir, self.settings(ctx).keep_float)
        forced = dict(ir.ann.notes.get("forced_float") or {})  # attention-mask, transformer-placement
        kernels, reasons = find_kernels(ir, target, keep_float, forced)
        quantized = _quantized_tensors(ir, target, kernels, set(ir.ann.notes.get("float_outputs") or ()))
        act = to_quant_scheme(target.scheme("activation"))
        for name in quantized:
            ir.ann.qspec[name] = act
        plan = make_plan(ir, target, kernels, quantized, reasons)
        ir.ann.plan = plan
        rep = ctx.pass_report(self.name)
        rep.update(kernels=len(kernels), observed_tensors=len(plan.tensors), float_nodes=len(plan.float_reasons))
        return bool(kernels)


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
