"""Bit widths other than the target's own: int4 weights and int16 activations, per build
or per layer, where the target allows them.

Build options (all optional; without them nothing here changes anything):

    weight_dtype:     "int4"            every weighted kernel's weight
    activation_dtype: "int16"           every quantized activation
    layer_dtypes:     {"conv3": {"weight": "int4"}, "blk2/*": {"activation": "int16"}}
                      per kernel: a key names a node of the kernel, the kernel itself
                      ("conv_act:conv3") or a glob over node names; it wins over the
                      build-wide options
    weight_range:     "minmax" | "mse"  how int4/narrower weight scales are chosen
                      (default: "mse" for 4-bit weights, "minmax" otherwise)

What a target allows. The target language states one dtype per role (and per op with
`weight for Op ...`); it has no statement for "also allowed". So a role may use the
dtype its target file states, plus the wider choices of :data:`EXTRA_DTYPES`, a table
keyed by the target's lineage (a target that extends `arm64` inherits arm64's row):

    arm64 (and arm64-dot, ...):  weights int4, activations int16
    cuda:                        weights int4, activations int16
    x86, x86-avx2:               nothing beyond the file (ONNX Runtime's CPU kernels are
                                 u8 x s8; int4/int16 Q/DQ would run as float)

A target of your own gets int4/int16 by saying so in its file (`weight int4 ...`,
`weight for MatMul int4`), or by extending arm64 or cuda.

An activation tensor is int16 when any kernel that reads or writes it asks for int16
(the wider type wins at a boundary), together with every tensor of its scale group.
int4/int16 Q/DQ need ONNX opset 21: the model is upgraded when it is older (set the
canonicalize option `min_opset: 21` to do it up front; :func:`prepare_options` does).

Where it runs: place-qdq calls :func:`apply_precision` before it writes Q/DQ (so that
unify-concat-scales, which recomputes int8 groups, cannot undo it), and the adaround
pass calls it first so that it learns the rounding on the final weight grid. It is
idempotent.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

from qcompiler.errors import PipelineError, UsageError
from qcompiler.pipeline.options import Option
from qcompiler.quant.plan import Plan, group_qparams, require_plan, to_quant_scheme, weight_axis
from qcompiler.quant.qparams import QParams, compute_qparams, quantize
from qcompiler.quant.scheme import DTYPES, QuantScheme

__all__ = ["EXTRA_DTYPES", "OPSET_FOR_DTYPE", "PrecisionRequest", "allowed_dtypes", "apply_precision",
           "prepare_options", "weight_qparams", "ensure_opset", "weight_codes", "store_weight_codes",
           "kernel_dtypes"]

#: dtypes a target may use beyond its own file's, by lineage name and role (see module doc)
EXTRA_DTYPES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "arm64": {"weight": ("int4",), "activation": ("int16",)},
    "cuda": {"weight": ("int4",), "activation": ("int16",)},
}

#: the options apply_precision reads, as the passes that call it declare them
PRECISION_OPTIONS = {
    "weight_dtype": Option(str, None, "every weighted kernel's weight dtype (int4, int8...)"),
    "activation_dtype": Option(str, None, "every quantized activation's dtype (int16...)"),
    "layer_dtypes": Option(object, None, "per-layer dtypes: {node or glob: {weight: int4, activation: int16}}"),
    "weight_range": Option(str, None, "how int4/narrow weight scales are chosen: minmax or mse"),
}

#: the lowest ONNX opset whose QuantizeLinear/DequantizeLinear take the dtype
OPSET_FOR_DTYPE = {"int4": 21, "uint4": 21, "int16": 21, "uint16": 21}

ROLES = ("weight", "activation")
_ROLE_KEYS = {"weight": "weight", "w": "weight", "activation": "activation", "act": "activation",
              "a": "activation"}


@dataclass
class PrecisionRequest:
    """What the options ask for: build-wide dtypes and per-layer overrides."""

    weight: Optional[str] = None
    activation: Optional[str] = None
    layers: Dict[str, Dict[str, str]] = field(default_factory=dict)
    weight_range: Optional[str] = None

    @property
    def empty(self) -> bool:
        return self.weight is None and self.activation is None and not self.layers

    @staticmethod
    def from_options(options: dict) -> "PrecisionRequest":
        req = PrecisionRequest(weight=_dtype_option(options.get("weight_dtype"), "weight_dtype"),
                               activation=_dtype_option(options.get("activation_dtype"), "activation_dtype"),
                               weight_range=options.get("weight_range"))
        if req.weight_range not in (None, "minmax", "mse"):
            raise UsageError(f"weight_range {req.weight_range!r} is not one of minmax, mse",
                             "use weight_range: mse (or minmax)")
        layers = options.get("layer_dtypes") or {}
        if not isinstance(layers, dict):
            raise UsageError("layer_dtypes must map node names to {'weight': dtype, 'activation': dtype}",
                             "e.g. layer_dtypes: {conv3: {weight: int4}}")
        for key, spec in layers.items():
            if isinstance(spec, str):  # "conv3": "int4" is shorthand for the weight
                spec = {"weight": spec}
            if not isinstance(spec, dict):
                raise UsageError(f"layer_dtypes[{key!r}] must be a dict like {{'weight': 'int4'}}",
                                 "roles: weight, activation")
            clean = {}
            for role, dt in spec.items():
                r = _ROLE_KEYS.get(str(role).lower())
                if r is None:
                    raise UsageError(f"layer_dtypes[{key!r}]: unknown role {role!r}", "roles: weight, activation")
                clean[r] = _dtype_option(dt, f"layer_dtypes[{key!r}][{role!r}]")
            req.layers[str(key)] = clean
        return req


def _dtype_option(value, what: str) -> Optional[str]:
    if value is None:
        return None
    v = str(value).lower().replace("s8", "int8").replace("u8", "uint8")
    if v not in DTYPES or v == "int32":
        raise UsageError(f"{what} {value!r} is not a quantized dtype",
                         f"use one of {', '.join(d for d in DTYPES if d != 'int32')}")
    return v


def prepare_options(options: dict) -> dict:
    """The options with `min_opset` raised to what the requested dtypes need (canonicalize
    then upgrades the model once, up front). Returns a new dict."""
    opts = dict(options or {})
    try:
        req = PrecisionRequest.from_options(opts)
    except UsageError:
        return opts  # the pass reports it with context
    need = max([OPSET_FOR_DTYPE.get(d, 13) for d in _all_requested(req)] or [13])
    if need > int(opts.get("min_opset", 13)):
        opts["min_opset"] = need
    return opts


def _all_requested(req: PrecisionRequest) -> List[str]:
    out = [d for d in (req.weight, req.activation) if d]
    for spec in req.layers.values():
        out += [d for d in spec.values() if d]
    return out


def allowed_dtypes(target, role: str, op: Optional[str] = None) -> Tuple[str, ...]:
    """The dtypes `role` may use on `target` for `op`: the file's own, then the extras."""
    own = target.scheme(role, op).dtype
    extra: List[str] = []
    for name in getattr(target, "lineage", ()) or (target.name,):
        extra += [d for d in EXTRA_DTYPES.get(name, {}).get(role, ()) if d not in extra]
    return tuple([own] + [d for d in extra if d != own])


# ---------------------------------------------------------------- per-kernel choice


def kernel_dtypes(ir, plan: Plan, req: PrecisionRequest, target) -> Dict[str, Dict[str, str]]:
    """{kernel name: {"weight": dtype?, "activation": dtype?}} for the kernels the request
    touches; checks every choice against the target. Unknown layer keys are an error."""
    out: Dict[str, Dict[str, str]] = {}
    used = set()
    for k in plan.kernels:
        choice = {}
        if req.weight and k.weight:
            choice["weight"] = req.weight
        if req.activation:
            choice["activation"] = req.activation
        for key, spec in req.layers.items():
            if _key_matches(key, k):
                used.add(key)
                for role, dt in spec.items():
                    if role == "weight" and not k.weight:
                        continue
                    choice[role] = dt
        for role, dt in choice.items():
            allowed = allowed_dtypes(target, role, k.op)
            if dt not in allowed:
                raise PipelineError(
                    f"{role} dtype {dt} is not allowed on target '{target.name}' for {k.op} '{k.nodes[0]}' "
                    f"(allowed: {', '.join(allowed)})",
                    "targets state their dtypes in the target file; arm64 and cuda also allow int4 weights "
                    "and int16 activations (docs/advanced.md)")
        own = {r: target.scheme(r, k.op).dtype for r in ROLES}
        choice = {r: d for r, d in choice.items() if d != own[r]}
        if choice:
            out[k.name] = choice
    missing = sorted(set(req.layers) - used)
    if missing:
        names = sorted({n for k in plan.kernels for n in k.nodes})
        import difflib

        near = difflib.get_close_matches(missing[0], names, n=1)
        raise PipelineError(f"layer_dtypes names {missing[0]!r}, which is in no integer kernel",
                            f"did you mean {near[0]!r}?" if near else
                            "keys are node names of quantized kernels (see the report's kernels), or globs")
    return out


def _key_matches(key: str, kernel) -> bool:
    if key == kernel.name:
        return True
    return any(n == key or fnmatch.fnmatchcase(n, key) for n in kernel.nodes)


# ---------------------------------------------------------------- weights


def weight_qparams(w: np.ndarray, scheme: QuantScheme, method: str = "minmax") -> QParams:
    """QParams for a weight on `scheme` (per channel when scheme.axis is set).

    "mse" searches, per channel, the clipping ratio of the absolute maximum that minimises
    the squared rounding error (symmetric schemes; affine ones use min/max)."""
    w = np.asarray(w, dtype=np.float32)
    if scheme.axis is None:
        w2 = w.reshape(1, -1)
    else:
        ax = scheme.axis % w.ndim
        w2 = np.moveaxis(w, ax, 0).reshape(w.shape[ax], -1)
    finite = np.where(np.isfinite(w2), w2, 0.0)
    lo, hi = finite.min(axis=1), finite.max(axis=1)
    if method == "mse" and scheme.symmetric:
        absmax = np.maximum(-lo, hi).astype(np.float64)
        half = min(scheme.qmax - scheme.symmetric_zero_point, scheme.symmetric_zero_point - scheme.qmin)
        best_err = np.full(absmax.shape, np.inf)
        best = absmax.copy()
        x = finite.astype(np.float64)
        for r in np.linspace(0.3, 1.0, 71):
            s = np.maximum(absmax * r / half, 1e-12)[:, None]
            q = np.clip(np.rint(x / s), scheme.qmin - scheme.symmetric_zero_point,
                        scheme.qmax - scheme.symmetric_zero_point)
            err = np.sum((q * s - x) ** 2, axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best = np.where(better, absmax * r, best)
        lo, hi = -best, best
    if scheme.axis is None:
        return compute_qparams(float(lo[0]), float(hi[0]), scheme)
    return compute_qparams(lo, hi, scheme)


def weight_checksum(w: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(w, dtype=np.float32).tobytes()).hexdigest()


def store_weight_codes(ir, name: str, codes: np.ndarray, qp: QParams, w: np.ndarray, by: str) -> None:
    """Record integer weights chosen by a pass; place-qdq writes them instead of rounding
    the float weight to nearest (while the weight and its QParams are unchanged)."""
    ir.ann.notes.setdefault("weight_codes", {})[name] = {
        "codes": np.asarray(codes, dtype=qp.np_dtype), "qparams": qp, "checksum": weight_checksum(w), "by": by}


def weight_codes(ir, name: str, w: np.ndarray, qp: QParams) -> Optional[np.ndarray]:
    """The stored integer weights for `name`, if they still belong to this weight and QParams."""
    entry = ir.ann.notes.get("weight_codes", {}).get(name)
    if entry is None:
        return None
    codes = entry["codes"]
    if entry["qparams"] != qp or codes.shape != np.shape(w) or entry["checksum"] != weight_checksum(w):
        return None
    return codes


# ---------------------------------------------------------------- the IR step


def ensure_opset(ir, opset: int) -> bool:
    """Upgrade the IR's model to `opset` (annotations kept by name). Returns whether it did."""
    if ir.opset >= opset:
        return False
    from onnx import version_converter

    from qcompiler.errors import ModelError
    from qcompiler.ir.io import ir_to_model, model_to_ir

    model = ir_to_model(ir)
    try:
        model = version_converter.convert_version(model, opset)
    except Exception as e:
        raise ModelError(f"cannot upgrade the model to opset {opset} for int4/int16 Q/DQ: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                         "set min_opset: 21 so that canonicalize upgrades it, or re-export at opset 21") from None
    ann = ir.ann
    ir.reload(model_to_ir(model).graph, model_meta=ir.model_meta | {
        "opset_imports": {imp.domain: imp.version for imp in model.opset_import},
        "ir_version": model.ir_version})
    ir.ann = ann
    return True


def _weight_scheme(target, kernel, anchor, w, dtype: str) -> QuantScheme:
    ts = target.scheme("weight", kernel.op)
    axis = weight_axis(kernel.op, anchor.attrs, w.ndim) if ts.per_channel else None
    base = to_quant_scheme(ts, axis)
    return QuantScheme(dtype, base.symmetric, base.axis, base.narrow, base.reduce_range)


def apply_precision(ir, ctx, plan: Optional[Plan] = None, weights_only: bool = False,
                    options: Optional[dict] = None) -> Dict:
    """Re-derive QParams for the kernels the options move to other dtypes (see module doc).
    `options`: the calling pass's settings (default: the build-wide options).

    Returns a summary (also in ctx.report["precision"]); an empty dict when nothing is asked.
    """
    req = PrecisionRequest.from_options(ctx.options if options is None else options)
    if req.empty:
        return {}
    plan = plan or require_plan(ir, "apply_precision")
    target = ctx.target
    choices = kernel_dtypes(ir, plan, req, target)
    if not choices:
        return {}
    need = max(OPSET_FOR_DTYPE.get(d, 13) for c in choices.values() for d in c.values())
    upgraded = ensure_opset(ir, need)
    tensors = ir.tensors()
    nodes = {n.name: n for n in ir.graph.nodes}  # one lookup table, not a graph scan per kernel
    by_kernel = {k.name: k for k in plan.kernels}
    wsum: Dict[str, int] = {}
    for kname, choice in choices.items():
        dt = choice.get("weight")
        k = by_kernel[kname]
        if dt is None or k.weight is None:
            continue
        w = ir.const_value(tensors[k.weight])
        scheme = _weight_scheme(target, k, nodes[k.nodes[0]], w, dt)
        method = req.weight_range or ("mse" if scheme.bits <= 4 else "minmax")
        qp = weight_qparams(w, scheme, method)
        ir.ann.qspec[k.weight] = scheme
        ir.ann.qparams[k.weight] = qp
        if weight_codes(ir, k.weight, w, qp) is None:
            store_weight_codes(ir, k.weight, quantize(w, qp, qmin=scheme.qmin, qmax=scheme.qmax), qp, w, "nearest")
        wsum[dt] = wsum.get(dt, 0) + 1
    asum: Dict[str, int] = {}
    if not weights_only:
        asum = _apply_activation_dtypes(ir, ctx, plan, choices, by_kernel)
    upgraded = upgraded or bool(ctx.report.get("precision", {}).get("upgraded"))  # an earlier call did it
    if weights_only and ctx.report.get("precision", {}).get("activations"):
        asum = ctx.report["precision"]["activations"]
    summary = {"weights": wsum, "activations": asum, "kernels": len(choices), "opset": ir.opset,
               "upgraded": upgraded}
    if req.layers:
        summary["per_layer"] = {k.name: choices[k.name] for k in plan.kernels
                                if k.name in choices and any(_key_matches(key, k) for key in req.layers)}
    ctx.report["precision"] = summary
    return summary


def _apply_activation_dtypes(ir, ctx, plan, choices, by_kernel) -> Dict[str, int]:
    planned = set(plan.tensors)
    wanted: Dict[str, str] = {}
    for kname, choice in choices.items():
        dt = choice.get("activation")
        if dt is None:
            continue
        k = by_kernel[kname]
        for t in list(k.inputs) + [k.output]:
            if t in planned and _wider(dt, wanted.get(t)):
                wanted[t] = dt
    if not wanted:
        return {}
    ranges = ir.ann.notes.get("ranges", {})
    act_ts = ctx.target.scheme("activation")
    base = to_quant_scheme(act_ts)
    # a whole scale group takes the widest dtype any member asks for
    roots: Dict[object, List[str]] = {}
    for name in ranges:
        roots.setdefault(ir.ann.groups.find(name), []).append(name)
    counts: Dict[str, int] = {}
    for root, members in roots.items():
        dts = [wanted[m] for m in members if m in wanted]
        if not dts:
            continue
        dt = max(dts, key=lambda d: DTYPES_BITS[d])
        scheme = QuantScheme(dt, base.symmetric, None, base.narrow, base.reduce_range)
        group = {m: ranges[m] for m in members}
        for m, qp in group_qparams(ir, group, scheme).items():
            ir.ann.qparams[m] = qp
            ir.ann.qspec[m] = scheme
            counts[dt] = counts.get(dt, 0) + 1
    return counts


DTYPES_BITS = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16}


def _wider(new: str, old: Optional[str]) -> bool:
    return old is None or DTYPES_BITS.get(new, 8) > DTYPES_BITS.get(old, 8)
