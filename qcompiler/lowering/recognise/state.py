"""The state of one lowering: the ONNX graph being walked, what each ONNX tensor is by now
(`Val`: an integer program tensor, a quantized view of one, a float tensor, a constant),
and the program being written, with the helpers every op's lowering uses (fresh names,
tensors, constants, requant constants, kernels pending a layout, output clamps).

Kernels are first collected as `Pending`: the layout plan decides their layouts, and
emission then writes them with conversions and packed weights.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ModelError
from ...target import Target
from ..conv_layout import ConvDecision
from ..fixed_point import quantize_multiplier
from ..geometry import same_pads
from ..integers import dtype_range
from ..layouts import PLAIN
from ..program import DOMAIN, Kernel, Program, TensorInfo

INT_DTYPES = ("int8", "uint8")


@dataclass
class Val:
    kind: str  # "int" | "qview" | "float" | "const"
    pt: Optional[str] = None
    scale: float = 1.0
    zp: int = 0
    dtype: str = "int8"
    value: Optional[np.ndarray] = None
    qint: Optional[np.ndarray] = None
    qscale: Optional[np.ndarray] = None
    qzp: Optional[np.ndarray] = None
    qaxis: Optional[int] = None
    onnx_name: Optional[str] = None


@dataclass
class Pending:
    kernel: Kernel
    cls: str  # "conv" | "agnostic" | "plain"
    act_inputs: List[int] = field(default_factory=list)  # input positions that are activations
    conv: Optional[dict] = None
    channel_consts: List[int] = field(default_factory=list)  # per-channel constant inputs
    channel_vectors: List[int] = field(default_factory=list)  # per-output-channel vectors (conv)
    decision: Optional[ConvDecision] = None
    layout: str = PLAIN


def attrs_of(node: onnx.NodeProto) -> Dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list):
            v = [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def window_pads(lw, node, at: Dict[str, Any], kernel, strides, dilations) -> Optional[List[int]]:
    """A 2-D window op's pads from its attributes (auto_pad resolved); None when SAME padding
    needs a spatial shape that is not known."""
    auto = at.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        xs = lw.shape(node.input[0])
        if xs is None or len(xs) != 4 or not all(isinstance(d, int) for d in xs[2:]):
            return None
        return same_pads(xs[2:], list(kernel), strides, dilations, auto)
    if auto == "VALID":
        return [0, 0, 0, 0]
    return list(at.get("pads", [0, 0, 0, 0]))


def q_of(v, scale, zp, dtype):
    """ONNX QuantizeLinear of float values (round half to even, saturate)."""
    lo, hi = dtype_range(dtype)
    q = np.rint(np.asarray(v, dtype=np.float32) / np.float32(scale)) + np.float32(zp)
    return np.clip(q, lo, hi).astype(np.dtype(dtype))


def ready_order(nodes: List[onnx.NodeProto]) -> List[onnx.NodeProto]:
    """The nodes in Kahn's order (first-in first-out over the nodes whose inputs are ready).
    Not qcompiler.ir.toposort's depth-first order: the walk order names program tensors and
    orders kernels, and programs stay byte-identical to the ones written before."""
    produced = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            produced[o] = i
    indeg = [0] * len(nodes)
    users: Dict[int, List[int]] = {}
    for i, n in enumerate(nodes):
        deps = {produced[x] for x in n.input if x in produced}
        indeg[i] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = deque(i for i, d in enumerate(indeg) if d == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(nodes[i])
        for u in users.get(i, []):
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise ModelError("the model graph has a cycle", "re-export the model")
    return order


class LoweringState:
    """One lowering of a QDQ model for a target: `vals` says what each ONNX tensor is by now,
    `prog` is the program being written, `pending` its kernels awaiting a layout."""

    def __init__(self, model: onnx.ModelProto, target: Target, plan_only: bool = False):
        self.target = target
        self.plan_only = plan_only
        self.no_program_kernel: Dict[str, str] = {}
        self.float_requant = target.requant.style == "float_scale"
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:
            pass
        self.model = model
        g = model.graph
        self.shapes: Dict[str, Optional[list]] = {}
        self.elem: Dict[str, int] = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            self.elem[vi.name] = t.elem_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        self.vals: Dict[str, Val] = {}
        for init in g.initializer:
            self.vals[init.name] = Val("const", value=numpy_helper.to_array(init), onnx_name=init.name)
        self.graph_outputs = [o.name for o in g.output]
        self.nodes = ready_order(list(g.node))
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.prog = Program(target=target.name, rounding=target.rounding, requant=target.requant.style)
        self.pending: List[Pending] = []
        self.names: set = set()  # names used in the program so far
        self.float_cache: Dict[tuple, str] = {}
        self.consumed: set = set()
        self.stats = {"integer_kernels": 0, "float_ops": 0}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def shape(self, name) -> Optional[list]:
        return self.shapes.get(name)

    def add_tensor(self, name, dtype, shape=None, scale=None, zp=None):
        shape = None if shape is None else list(shape)
        self.names.add(name)
        channels = shape[1] if shape is not None and len(shape) == 4 and isinstance(shape[1], int) else None
        self.prog.tensors[name] = TensorInfo(name=name, dtype=dtype, shape=shape, channels=channels,
                                             scale=None if scale is None else float(scale),
                                             zero_point=None if zp is None else int(zp))
        return name

    def add_const(self, base, value) -> str:
        name = self.fresh(base)
        arr = np.asarray(value, order="C")  # ascontiguousarray would make a scalar 1-D
        self.prog.constants[name] = arr
        self.prog.tensors[name] = TensorInfo(name=name, dtype=str(arr.dtype), shape=list(arr.shape))
        return name

    def emit(self, op, name, inputs, outputs, attrs, cls="plain", act_inputs=(), domain=DOMAIN, **extra):
        k = Kernel(op=op, name=self.fresh(name), inputs=list(inputs), outputs=list(outputs), attrs=dict(attrs),
                   domain=domain)
        p = Pending(kernel=k, cls=cls, act_inputs=list(act_inputs), **extra)
        self.pending.append(p)
        return p

    def requant_consts(self, base, m) -> List[str]:
        """Constants for a rescale by real multiplier(s) m (array or scalar)."""
        m = np.asarray(m, dtype=np.float64)
        if self.float_requant:
            return [self.add_const(f"{base}.scale", m.astype(np.float32))]
        q, s = quantize_multiplier(m if m.ndim else m.reshape(1))
        return [self.add_const(f"{base}.multiplier", np.asarray(q, dtype=np.int32).reshape(m.shape)),
                self.add_const(f"{base}.shift", np.asarray(s, dtype=np.int32).reshape(m.shape))]

    def q_params(self, node) -> Optional[tuple]:
        """(scale array, zero point array, axis, dtype) of a Q/DQ node with constant parameters."""
        sv = self.vals.get(node.input[1])
        if sv is None or sv.kind != "const":
            return None
        scale = np.asarray(sv.value, dtype=np.float32)
        if len(node.input) > 2 and node.input[2]:
            zv = self.vals.get(node.input[2])
            if zv is None or zv.kind != "const":
                return None
            zp = np.asarray(zv.value)
        else:
            zp = np.zeros(scale.shape, dtype=np.uint8)
        axis = attrs_of(node).get("axis", 1)
        return scale, zp, axis, str(zp.dtype)

    @staticmethod
    def same_params(v: Val, s, z, dt) -> bool:
        return np.float32(v.scale) == np.float32(s) and v.zp == z and v.dtype == dt

    def emit_requant(self, x: Val, s, z, dt, clamp, base) -> str:
        pt = self.fresh(base)
        self.add_tensor(pt, dt, self.prog.tensors[x.pt].shape, s, z)
        consts = self.requant_consts(pt, np.float64(x.scale) / np.float64(s))
        self.emit("Requant", f"{pt}.requant", [x.pt] + consts, [pt],
                  {"x_zero_point": x.zp, "y_zero_point": z, "qmin": clamp[0], "qmax": clamp[1], "dtype": dt},
                  cls="agnostic", act_inputs=[0])
        self.stats["integer_kernels"] += 1
        return pt

    def finish_same_scale(self, node, tail, pt_tmp, x: Val):
        """Bind an op whose integer output keeps x's parameters; requant when Q differs."""
        _, act, (s_y, z_y, dt) = tail
        lo, hi, _ = self.out_clamp(act, s_y, z_y, dt)
        tmp = Val("qview", pt=pt_tmp, scale=x.scale, zp=x.zp, dtype=x.dtype)
        if self.same_params(x, s_y, z_y, dt) and act is None:
            self.bind_tail(tail, pt_tmp, s_y, z_y, dt)
        else:
            pt = self.emit_requant(tmp, s_y, z_y, dt, (lo, hi), tail[0][0].output[0])
            self.bind_tail(tail, pt, s_y, z_y, dt)

    def clip_bounds(self, node):
        at = attrs_of(node)
        lo, hi = at.get("min"), at.get("max")
        for idx in (1, 2):
            if len(node.input) > idx and node.input[idx]:
                v = self.vals.get(node.input[idx])
                if v is None or v.kind != "const":
                    return None
                if idx == 1:
                    lo = float(np.asarray(v.value).reshape(-1)[0])
                else:
                    hi = float(np.asarray(v.value).reshape(-1)[0])
        return lo, hi

    def out_clamp(self, act, s, z, dt):
        lo, hi = dtype_range(dt)
        name = "none"
        if act is not None:
            if act.op_type == "Relu":
                lo = max(lo, z)
                name = "relu"
            else:
                a, b = self.clip_bounds(act)
                if a is not None:
                    lo = max(lo, int(q_of(a, s, z, dt)))
                if b is not None:
                    hi = min(hi, int(q_of(b, s, z, dt)))
                name = f"clip({a}, {b})"
        return lo, hi, name

    def bind_tail(self, tail, pt, s, z, dt):
        for q in tail[0]:
            self.vals[q.output[0]] = Val("int", pt=pt, scale=s, zp=z, dtype=dt, onnx_name=q.output[0])

    def out_name(self, tail, node):
        return self.fresh(tail[0][0].output[0] if tail is not None else node.output[0])

    def is_qview(self, v):
        return v is not None and v.kind == "qview" and v.dtype in INT_DTYPES

    def is_qconst(self, v, per_tensor=True):
        return (v is not None and v.kind == "const" and v.qint is not None and v.qint.dtype.kind in "iu"
                and (not per_tensor or v.qscale.size == 1))

    def opset(self):
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return imp.version
        return 13
