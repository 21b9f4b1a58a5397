"""Transformer blocks: where a static INT8 build of an attention model loses its accuracy,
and the placement that keeps it (passes/transformer_placement.py applies it).

Measured on all-MiniLM-L6-v2 (bench/results/transformers.md), x86, with the attention mask
already float: quantizing everything the target can run gives a mean embedding cosine of
0.82 against FP32. The losses are the residual stream (per-tensor 8 bits over outlier
channels, at every bias Add, residual Add and GELU Mul) and the MatMul outputs rounded to 8
bits before their float readers. Keeping the elementwise ops float and the MatMul outputs
float (ONNX Runtime then runs MatMulIntegerToFloat) gives 0.990, and least-squared-error
ranges on the MatMul inputs (GELU outputs are heavy-tailed) 0.991 with nearest-neighbour
agreement 0.93, at half the FP32 latency: the MACs stay integer, the float ops are the ones
ONNX Runtime fuses anyway (bias + GELU, LayerNorm, Softmax).

    attention = attention_softmaxes(ir)      # Softmax nodes that read scores of two activations
    float_ops = elementwise_float(ir)        # {node: reason}
"""

from __future__ import annotations

from typing import Dict, List

from .plan import WEIGHTED

# ops between the scores MatMul and its Softmax in exports: scale, mask, reshapes
_SCORE_PATH = ("Mul", "Div", "Add", "Sub", "Where", "Reshape", "Transpose", "Cast", "Identity")
ELEMENTWISE = ("Add", "Mul", "Sub", "Div", "Where", "Softmax")
CONV_OPS = ("Conv", "ConvTranspose")


def attention_softmaxes(ir) -> List[str]:
    """Softmax nodes whose input comes, through score-path ops, from a MatMul of two activations."""
    out = []
    for node in ir.graph.nodes:
        if node.op != "Softmax" or not node.inputs:
            continue
        frontier, seen = [node.inputs[0]], set()
        while frontier:
            t = frontier.pop()
            if t.name in seen or ir.is_const(t):
                continue
            seen.add(t.name)
            p = ir.producer(t)
            if p is None:
                continue
            if p.op == "MatMul" and len(p.inputs) == 2 and not any(ir.is_const(i) for i in p.inputs):
                out.append(node.name)
                break
            if p.op in _SCORE_PATH:
                frontier.extend(p.inputs)
    return out


def _near_conv(ir, node) -> bool:
    for t in node.inputs:
        p = ir.producer(t) if not ir.is_const(t) else None
        if p is not None and p.op in CONV_OPS:
            return True
    return any(c.op in CONV_OPS for t in node.outputs for c in ir.consumers(t))


def elementwise_float(ir) -> Dict[str, str]:
    """In a graph with attention: the elementwise ops that stay float, with the reason.
    Ops next to a convolution (the CNN part of a hybrid model) keep the target's placement."""
    reasons = {}
    for node in ir.graph.nodes:
        if node.op in ELEMENTWISE and node.domain in ("", None) and not _near_conv(ir, node):
            reasons[node.name] = ("transformer block: elementwise ops stay float (bias, GELU, residual and "
                                  "LayerNorm arithmetic carry outlier channels; ONNX Runtime fuses them in float)")
    return reasons


def matmul_inputs(ir) -> List[str]:
    """Activation inputs of MatMul/Gemm nodes with a constant weight."""
    names = []
    for node in ir.graph.nodes:
        if node.op in WEIGHTED and node.op != "Conv" and len(node.inputs) > 1 and ir.is_const(node.inputs[1]):
            t = node.inputs[0]
            if t.name and not ir.is_const(t) and t.name not in names:
                names.append(t.name)
    return names
