"""The quantization plan: which nodes become integer kernels (from the target's legal
patterns), which tensors are quantized, which tensors share parameters, and why every
other node stays float.

insert-observers (or import-qdq, quantize-dynamic) computes it and stores the object in
`ir.ann.plan`; calibrate, place-qdq and the tools after them read it there
(`require_plan`). Tensors to quantize carry a QuantSpec in `ir.ann.qspec`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Set

import numpy as np

from .observers import per_channel_minmax
from .qparams import compute_qparams
from .scheme import QuantScheme

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOAT_DTYPES = (np.float32, np.float16, np.float64)


@dataclass
class Kernel:
    """One integer kernel: the nodes of a pattern match, run as one unit."""

    name: str
    pattern: str
    op: str  # the anchor op
    nodes: List[str]
    inputs: List[str]  # activation inputs (quantized when the plan says so)
    output: str  # the tensor the kernel produces
    weight: Optional[str] = None
    bias: Optional[str] = None


@dataclass
class Plan:
    kernels: List[Kernel] = field(default_factory=list)
    tensors: List[str] = field(default_factory=list)  # quantized activations, graph order
    float_reasons: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The plan as plain data (for a report or a file; passes share the object)."""
        return {"kernels": [asdict(k) for k in self.kernels], "tensors": list(self.tensors),
                "float_reasons": dict(self.float_reasons)}

    @staticmethod
    def from_json(d: dict) -> "Plan":
        return Plan([Kernel(**k) for k in d["kernels"]], list(d["tensors"]), dict(d["float_reasons"]))


def require_plan(ir, who: str) -> Plan:
    """The IR's quantization plan, or a one-line error naming the pass that needs it."""
    plan = ir.ann.plan
    if plan is None:
        from ..errors import PipelineError

        raise PipelineError(f"'{who}' needs the quantization plan, and no earlier pass made one",
                            "run insert-observers (or import-qdq, quantize-dynamic) before it")
    return plan


def to_quant_scheme(ts, axis: Optional[int] = None) -> QuantScheme:
    """A target file's role scheme as the math layer's QuantScheme."""
    return QuantScheme(dtype=ts.dtype, symmetric=bool(ts.symmetric),
                       axis=axis if ts.per_channel else None,
                       narrow=bool(ts.narrow), reduce_range=bool(ts.reduce_range))


def weight_axis(op: str, node_attrs: dict, weight_rank: int) -> int:
    """The output-channel axis of a weight, where per-channel scales go."""
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        return 0 if int(node_attrs.get("transB", 0)) else 1
    if op == "MatMul":
        return weight_rank - 1
    return 0


def pair_sum_max(op: str, node_attrs: dict, w: np.ndarray, channel_axis: Optional[int]) -> Optional[np.ndarray]:
    """The largest |w_a| + |w_b| over the weight pairs that an x86 u8s8 kernel adds into one
    saturating int16 (per channel of `channel_axis`, or overall), or None where no pairs form.

    Measured on ONNX Runtime's AVX2 kernels: QLinearConv reduces over (FH, FW, IC/group) in
    that order and adds products 2j and 2j+1 (input channels at one kernel position when
    IC/group is even; across positions when it is odd, as for a 3-channel first layer);
    depthwise convs run a kernel without pairs; QGemm and QLinearMatMul pair rows 2j and
    2j+1 of K.
    """
    a = np.abs(np.nan_to_num(np.asarray(w, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0))
    if op == "Conv" and a.ndim >= 3:
        if a.shape[1] == 1 and int(node_attrs.get("group", 1)) == a.shape[0]:
            return None  # depthwise
        k = np.moveaxis(a, 1, -1).reshape(a.shape[0], -1)  # {OC, FH*FW*IC/group}
        channel_first = True
    elif op == "Gemm" and a.ndim == 2:
        k = a if int(node_attrs.get("transB", 0)) else a.T  # {N, K}
        channel_first = True
    elif op == "MatMul" and a.ndim >= 2:
        k = np.moveaxis(a, -2, -1).reshape(-1, a.shape[-2])  # {..., N, K} rows
        channel_first = False
    else:
        return None
    if k.shape[-1] % 2:
        k = np.concatenate([k, np.zeros(k.shape[:-1] + (1,))], axis=-1)
    sums = k[..., 0::2] + k[..., 1::2]
    if channel_axis is None:
        return np.asarray(sums.max())
    if channel_first:
        return sums.max(axis=1)
    return sums.reshape(-1, a.shape[-1], sums.shape[-1]).max(axis=(0, 2))  # per column N


def is_float(t) -> bool:
    if t.dtype is None:
        return True  # unknown: canonicalize infers shapes, so this is rare
    try:
        return np.dtype(t.dtype) in [np.dtype(d) for d in FLOAT_DTYPES]
    except TypeError:
        return False


def group_qparams(ir, ranges: Dict[str, tuple], scheme: QuantScheme) -> Dict[str, object]:
    """QParams per tensor, one set per scale group covering all its members' ranges."""
    roots: Dict[object, List[str]] = {}
    for name in ranges:
        roots.setdefault(ir.ann.groups.find(name), []).append(name)
    out = {}
    for members in roots.values():
        lo = min(float(ranges[m][0]) for m in members)
        hi = max(float(ranges[m][1]) for m in members)
        qp = compute_qparams(lo, hi, scheme)
        for m in members:
            out[m] = qp
    return out


def tensors_in_order(ir, names: Set[str]) -> List[str]:
    """`names` in graph order (inputs first, then node outputs), for deterministic output."""
    order: List[str] = []
    seen: Set[str] = set()
    for t in ir.graph.inputs:
        if t.name in names and t.name not in seen:
            order.append(t.name)
            seen.add(t.name)
    for node in ir.graph.nodes:
        for t in list(node.inputs) + list(node.outputs):
            if t.name in names and t.name not in seen:
                order.append(t.name)
                seen.add(t.name)
    return order


def weight_qparams(ir, target, plan: Plan, overwrite: bool = False) -> int:
    """Per-channel (or per-tensor) weight QParams from the weight values, as the target says."""
    tensors = ir.tensors()
    nodes = {n.name: n for n in ir.graph.nodes}
    count = 0
    for k in plan.kernels:
        if k.weight is None or (k.weight in ir.ann.qparams and not overwrite) or k.weight not in tensors:
            continue
        w = ir.const_value(tensors[k.weight])
        if w is None:
            continue
        ts = target.scheme("weight", k.op)
        if ts.per_channel and ts.axis is not None and not -w.ndim <= ts.axis < w.ndim:
            from ..errors import TargetError

            where = f"{target.source}: " if getattr(target, "source", None) else ""
            raise TargetError(f"{where}weight per_channel(axis={ts.axis}) is out of range for the rank-{w.ndim} "
                              f"weight of {k.op} '{k.nodes[0]}'",
                              "per-channel weight scales go on the output-channel axis: per_channel(axis=0)")
        axis = weight_axis(k.op, nodes[k.nodes[0]].attrs, w.ndim) if ts.per_channel else None
        scheme = to_quant_scheme(ts, axis)
        if axis is None:
            finite = w[np.isfinite(w)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        else:
            lo, hi = per_channel_minmax(w, axis)
        pm = pair_sum_max(k.op, nodes[k.nodes[0]].attrs, w, axis) if ts.pair_safe and scheme.symmetric else None
        if pm is not None:
            # widen the range to the largest pair: with (|w_a| + |w_b|) / scale <= 127,
            # |q_a| + |q_b| <= 128 after rounding, and 255 * 128 fits the saturating int16
            lo, hi = np.minimum(lo, -pm), np.maximum(hi, pm)
            lo, hi = (float(lo), float(hi)) if axis is None else (lo, hi)
        ir.ann.qspec[k.weight] = scheme
        ir.ann.qparams[k.weight] = compute_qparams(lo, hi, scheme)
        count += 1
    return count
