"""Min/max ranges that follow from another observed tensor's, so calibration need not fetch them.

Under min/max calibration, the range of some tensors is a function of a tensor that is
observed anyway:

  monotonic   Relu, LeakyRelu (alpha >= 0), Clip with constant bounds, and Mul/Add/Sub/Div
              by a one-element constant map an interval's ends to the output interval's
              ends (float rounding is monotonic too, so fl(k*min) is the minimum of
              fl(k*x)). The derived range is the one ONNX Runtime's values would give,
              up to a rounding difference where ONNX Runtime fuses the op into its producer.
  subset      Reshape, Transpose, MaxPool, nearest Resize, Slice, Concat, ... only move or
              pick values, so their output lies inside their inputs' range. They get the
              input's range, which is only used where it changes nothing: when output and
              input are in one scale group, whose parameters cover the union anyway.

Every tensor fetched from the calibration session costs a copy out of ONNX Runtime (a
layout reorder on x86, where convolutions run blocked) and a reduction; on PP-OCR det
about half of the observed tensors follow from others. Histogram methods see the value
distribution, which these rules do not carry, so only min/max calibration uses them.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

Range = Tuple[float, float]

SUBSET_OPS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "MaxPool",
              "GlobalMaxPool", "ReduceMax", "ReduceMin", "Slice", "Gather", "Split", "DepthToSpace",
              "SpaceToDepth", "Expand", "Tile", "Concat")
NEAREST_OPS = ("Resize", "Upsample")  # subset ops only in nearest mode
ARITH_OPS = ("Mul", "Add", "Sub", "Div")


class Derivation:
    """`output`'s range from its `sources`' ranges; `affine` = (a, b) when output = a * x + b
    elementwise (then its mean follows from the source's too)."""

    def __init__(self, sources: Sequence[str], fn: Callable[[List[Range]], Range],
                 affine: Optional[Tuple[float, float]] = None):
        self.sources = list(sources)
        self.fn = fn
        self.affine = affine


def derivations(ir, names: Sequence[str]) -> Dict[str, Derivation]:
    """The tensors of `names` whose min/max range follows from other tensors of `names`
    (each chain ends at a tensor that is not derived). A monotonic chain may pass through
    tensors outside `names` (the x + 3 inside a fused Add+Clip): its maps are composed."""
    wanted = set(names)
    out: Dict[str, Derivation] = {}
    hidden: Dict[str, Derivation] = {}  # derivable tensors that are not in `names`
    for node in ir.graph.nodes:  # graph order: a source is decided before its readers
        if node.domain not in ("", None, "ai.onnx"):
            continue
        for t in node.outputs:
            if not t.name or ir.is_graph_output(t):
                continue
            d = _derive(ir, node, t, wanted, hidden, in_plan=t.name in wanted)
            if d is not None:
                (out if t.name in wanted else hidden)[t.name] = d
    return out


def affine_source(derived: Dict[str, Derivation], name: str) -> Optional[Tuple[str, float, float]]:
    """(root, a, b) with name = a * root + b elementwise, following affine derivations back
    to a tensor that is not derived; None when `name` is not derived that way."""
    a, b = 1.0, 0.0
    if name not in derived:
        return None
    while name in derived:
        d = derived[name]
        if d.affine is None:
            return None
        a, b = a * d.affine[0], a * d.affine[1] + b
        name = d.sources[0]
    return name, a, b


def derived_ranges(derived: Dict[str, Derivation], raw: Dict[str, Range]) -> Dict[str, Range]:
    """Raw (min, max) of every derived tensor from the raw ranges of the observed ones."""
    done = dict(raw)

    def get(name: str) -> Range:
        if name not in done:
            d = derived[name]
            done[name] = d.fn([get(s) for s in d.sources])
        return done[name]

    return {name: get(name) for name in derived}


# ------------------------------------------------------------------------------------------


MONOTONIC_OPS = ("Relu", "LeakyRelu", "Clip") + ARITH_OPS


def _derive(ir, node, t, wanted, hidden, in_plan: bool) -> Optional[Derivation]:
    op = node.op
    if op not in SUBSET_OPS + NEAREST_OPS + MONOTONIC_OPS or (not in_plan and op not in MONOTONIC_OPS):
        return None
    dtype = _np_float(t.dtype)
    if dtype is None:
        return None
    # constness without reading values: a Gather's table or a Tile's data may be large
    data = [i for i in node.inputs if i.name and not _is_const(ir, i)]
    if op in SUBSET_OPS or (op in NEAREST_OPS and _attr(node, "mode", "nearest") == "nearest"):
        srcs = data if op == "Concat" else data[:1]
        if op != "Concat" and (not node.inputs or node.inputs[0] is not (data[0] if data else None)):
            return None  # the data input is a constant (a Gather from a table, ...)
        if not srcs or any(s.name not in wanted or not ir.ann.groups.same(s.name, t.name) for s in srcs):
            return None
        if op == "Concat" and len(data) != len(node.inputs):
            return None
        return Derivation([s.name for s in srcs], _union)
    if len(data) != 1 or (data[0].name not in wanted and data[0].name not in hidden):
        return None
    fn = _monotonic(ir, node, data[0], dtype)
    if fn is None:
        return None
    affine = _affine(ir, node, data[0])
    inner = hidden.get(data[0].name)
    if inner is None:
        return Derivation([data[0].name], fn, affine)
    # through an unobserved tensor: compose with the map that gives its range
    if affine is not None and inner.affine is not None:
        affine = (affine[0] * inner.affine[0], affine[0] * inner.affine[1] + affine[1])
    else:
        affine = None
    return Derivation(inner.sources, lambda ranges: fn([inner.fn(ranges)]), affine)


def _affine(ir, node, x) -> Optional[Tuple[float, float]]:
    """(a, b) for an arithmetic op with a one-element constant: output = a * x + b."""
    if node.op not in ARITH_OPS:
        return None
    x_first = node.inputs[0] is x
    k = float(ir.const_value(node.inputs[1] if x_first else node.inputs[0]).reshape(-1)[0])
    return {"Add": (1.0, k), "Sub": (1.0, -k) if x_first else (-1.0, k), "Mul": (k, 0.0),
            "Div": (1.0 / k, 0.0) if x_first and k else None}[node.op]


def _monotonic(ir, node, x, dtype) -> Optional[Callable[[List[Range]], Range]]:
    op = node.op
    if op == "Relu":
        return _apply(lambda v: np.maximum(v, dtype(0)), dtype)
    if op == "LeakyRelu":
        alpha = dtype(_attr(node, "alpha", 0.01))
        if not alpha >= 0:
            return None
        return _apply(lambda v: v if v >= 0 else v * alpha, dtype)
    if op == "Clip":
        lo, hi = _clip_bounds(ir, node, dtype)
        if lo is None or not lo <= hi:
            return None
        return _apply(lambda v: np.minimum(np.maximum(v, lo), hi), dtype)
    if op in ARITH_OPS and len(node.inputs) == 2:
        x_first = node.inputs[0] is x
        other = node.inputs[1] if x_first else node.inputs[0]
        k = ir.const_value(other)
        if k is None or k.size != 1 or not np.isfinite(k).all():
            return None
        k = dtype(k.reshape(-1)[0])
        if op == "Add":
            return _apply(lambda v: v + k, dtype)
        if op == "Sub":
            return _apply(lambda v: v - k, dtype) if x_first else _apply(lambda v: k - v, dtype, decreasing=True)
        if op == "Mul":
            return _apply(lambda v: v * k, dtype, decreasing=bool(k < 0))
        if op == "Div" and x_first and k != 0:
            return _apply(lambda v: v / k, dtype, decreasing=bool(k < 0))
    return None


def _apply(f, dtype, decreasing: bool = False) -> Callable[[List[Range]], Range]:
    """The range map of a monotonic f, evaluated in the tensor's dtype as the runtime does."""
    def fn(ranges: List[Range]) -> Range:
        lo, hi = ranges[0]
        a, b = float(f(dtype(lo))), float(f(dtype(hi)))
        return (b, a) if decreasing else (a, b)

    return fn


def _union(ranges: List[Range]) -> Range:
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _clip_bounds(ir, node, dtype):
    if ir.opset < 11 or len(node.inputs) == 1:
        return dtype(_attr(node, "min", -np.inf)), dtype(_attr(node, "max", np.inf))
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        if len(node.inputs) <= i or not node.inputs[i].name:
            bounds.append(dtype(default))
            continue
        v = ir.const_value(node.inputs[i])
        if v is None or v.size != 1:
            return None, None
        bounds.append(dtype(v.reshape(-1)[0]))
    return bounds[0], bounds[1]


def _is_const(ir, t) -> bool:
    p = ir.producer(t)
    return ir.is_const(t) or (p is not None and p.op == "Constant")


def _attr(node, name, default):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _np_float(dtype) -> Optional[type]:
    if dtype is None:  # unknown (no shape inference reached it): the plan quantizes floats
        return np.float32
    try:
        d = np.dtype(dtype)
    except TypeError:
        return None
    return d.type if d.kind == "f" else None
