"""Lowering a QDQ model to a target Program.

Three steps, each usable alone:

1. recognise: walk the QDQ graph in order and turn every `DQ -> op -> [Relu|Clip] -> Q`
   group into one integer kernel (conv with folded int32 bias and per-channel fixed-point
   requant, gemm, add, mul, concat, pooling, nearest resize, lookup tables for unary ops,
   integer data movement); a `DQ -> Q` pair becomes a Requant or nothing; everything else
   stays a float op with Dequantize / Quantize at its boundary.
2. plan: pick a layout for every conv from the target's layout rules (padding channels
   where the target allows, else the fallback layout) with a reason, let layout-agnostic
   kernels (add, mul, requant, lut, pooling, resize, concat) follow their inputs, keep
   everything else in NCHW, and insert conversions only where a region changes layout.
3. emit: pack weights and per-channel constants, write the Program.

    prog = lower_to_program(ir_or_model_or_path, "arm64")
    plan = plan_layouts(ir_or_model, "arm64")      # step 1+2 only (the lower-layout pass)
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from ..target import Target
from .fixed_point import quantize_multiplier
from .interpreter import FLOAT_OPS, dtype_range, run_float_op
from .conv_layout import ConvDecision, decide_conv, resolve_target
from .layouts import PLAIN, block_of, is_blocked, pack_weight, same_activation_form, to_layout
from .program import DOMAIN, Kernel, Program, TensorInfo

__all__ = ["lower_to_program", "plan_layouts", "LayoutPlan", "program_exporter"]

INT_DTYPES = ("int8", "uint8")
ADD_LEFT_SHIFT = 20
# unary elementwise ops that become a 256-entry lookup table on int8 / uint8 inputs
LUT_OPS = frozenset({"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu",
                     "Softplus", "Exp", "Abs", "Neg", "Erf", "Sqrt", "Log", "Reciprocal"})
# integer data movement: the same op runs on the int8 tensor (NCHW), then a requant if needed
MOVE_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice",
                      "DepthToSpace", "Dropout"})
# kernels that run in whatever layout their inputs have
AGNOSTIC = frozenset({"Add", "Mul", "Requant", "Lut", "MaxPool", "AveragePool", "GlobalAveragePool",
                      "Resize", "Concat", "Quantize", "Dequantize"})
# float ops that are elementwise: with scalar or per-channel constants they run on a
# blocked (or NHWC) tensor as well, so a float island inside a layout region needs no
# conversions
FLOAT_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Relu", "Clip", "Sigmoid",
                               "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Tanh", "Exp", "Log", "Sqrt",
                               "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "Softplus"})


# ============================================================================= recognition

@dataclass
class _Val:
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
class _Pending:
    kernel: Kernel
    cls: str  # "conv" | "agnostic" | "plain"
    act_inputs: List[int] = field(default_factory=list)  # input positions that are activations
    conv: Optional[dict] = None
    channel_consts: List[int] = field(default_factory=list)  # per-channel constant inputs
    channel_vectors: List[int] = field(default_factory=list)  # per-output-channel vectors (conv)
    decision: Optional[ConvDecision] = None
    layout: str = PLAIN


@dataclass
class LayoutPlan:
    target: str
    convs: List[ConvDecision] = field(default_factory=list)
    kernels: Dict[str, str] = field(default_factory=dict)  # kernel name -> layout
    conversions: List[dict] = field(default_factory=list)
    # float nodes the program interpreter cannot run (LSTM, ...): the QDQ model runs them in
    # ONNX Runtime; only `--emit program` has to refuse them
    no_program_kernel: Dict[str, str] = field(default_factory=dict)  # node -> op

    def to_json(self) -> dict:
        counts: Dict[str, int] = {}
        for d in self.convs:
            counts[d.layout] = counts.get(d.layout, 0) + 1
        return {"target": self.target, "convs": [d.to_json() for d in self.convs],
                "conv_layouts": counts, "conversions": list(self.conversions),
                "num_conversions": len(self.conversions),
                "no_program_kernel": dict(self.no_program_kernel)}

    def summary(self) -> str:
        lines = [f"layout plan for {self.target}: {len(self.convs)} convs, "
                 f"{len(self.conversions)} layout conversions"]
        for d in self.convs:
            lines.append(f"  {d.node}: {d.layout} ({d.reason})")
        for c in self.conversions:
            lines.append(f"  convert {c['tensor']}: {c['src']} -> {c['dst']}")
        return "\n".join(lines)


def _to_model(source) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (str, os.PathLike)):
        from ..ir.io import read_model

        return read_model(source)
    if hasattr(source, "graph") and hasattr(source, "ann"):
        from ..ir.io import ir_to_model

        return ir_to_model(source)
    raise TypeError(f"cannot lower a {type(source).__name__}; pass an IR, an ONNX model or a path")


def _attrs_of(node: onnx.NodeProto) -> Dict[str, Any]:
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


def _q_of(v, scale, zp, dtype):
    """ONNX QuantizeLinear of float values (round half to even, saturate)."""
    lo, hi = dtype_range(dtype)
    q = np.rint(np.asarray(v, dtype=np.float32) / np.float32(scale)) + np.float32(zp)
    return np.clip(q, lo, hi).astype(np.dtype(dtype))


class _Lowerer:
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
        self.vals: Dict[str, _Val] = {}
        for init in g.initializer:
            self.vals[init.name] = _Val("const", value=numpy_helper.to_array(init), onnx_name=init.name)
        self.graph_outputs = [o.name for o in g.output]
        self.nodes = self._toposort(list(g.node))
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.prog = Program(target=target.name, rounding=target.rounding, requant=target.requant.style)
        self.pending: List[_Pending] = []
        self.names: set = set()  # names used in the program so far
        self.float_cache: Dict[tuple, str] = {}
        self.consumed: set = set()
        self.stats = {"integer_kernels": 0, "float_ops": 0}

    # ------------------------------------------------------------------ utilities
    @staticmethod
    def _toposort(nodes):
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
        p = _Pending(kernel=k, cls=cls, act_inputs=list(act_inputs), **extra)
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
        axis = _attrs_of(node).get("axis", 1)
        return scale, zp, axis, str(zp.dtype)

    def materialize_float(self, v: _Val, hint: str) -> str:
        """A program tensor holding the float value of v (Dequantize for a quantized view)."""
        if v.kind == "float":
            return v.pt
        if v.kind == "const":
            key = ("const", id(v))
            if key not in self.float_cache:
                self.float_cache[key] = self.add_const(v.onnx_name or hint, v.value)
            return self.float_cache[key]
        if v.kind == "int":
            return v.pt
        key = ("dq", v.pt, v.scale, v.zp)
        if key not in self.float_cache:
            out = self.fresh(v.onnx_name or hint)
            info = self.prog.tensors[v.pt]
            self.add_tensor(out, "float32", info.shape)
            self.emit("Dequantize", f"{out}.dequantize", [v.pt], [out],
                      {"scale": float(v.scale), "zero_point": int(v.zp)}, cls="agnostic", act_inputs=[0])
            self.float_cache[key] = out
        return self.float_cache[key]

    # ------------------------------------------------------------------ the walk
    def recognise(self) -> None:
        g = self.model.graph
        inits = {i.name for i in g.initializer}
        for inp in g.input:
            if inp.name in inits:
                continue
            dt = str(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
            self.add_tensor(inp.name, dt, self.shape(inp.name))
            self.prog.inputs.append(inp.name)
            if dt in INT_DTYPES:
                self.vals[inp.name] = _Val("int", pt=inp.name, dtype=dt, onnx_name=inp.name)
            else:
                self.vals[inp.name] = _Val("float", pt=inp.name, onnx_name=inp.name)
        for node in self.nodes:
            if id(node) in self.consumed:
                continue
            self.visit(node)
        for name in self.graph_outputs:
            self.bind_output(name)

    def bind_output(self, name):
        v = self.vals.get(name)
        if v is None:
            raise ModelError(f"graph output '{name}' was not lowered", "report this model as a bug")
        if v.kind == "qview":
            pt = self.materialize_float(v, name)
        elif v.kind == "const":
            pt = self.materialize_float(v, name + ".const")
        else:
            pt = v.pt
        if pt != name:
            info = self.prog.tensors[pt]
            if name in self.prog.tensors:  # the name is taken by an internal tensor; keep it unique
                name = self.fresh(name)
            self.add_tensor(name, info.dtype, info.shape, info.scale, info.zero_point)
            self.emit("Identity", f"{name}.identity", [pt], [name], {}, domain="", act_inputs=[0])
            pt = name
        self.prog.outputs.append(pt)

    def visit(self, node):
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise ModelError(f"node '{node.name}' uses op {node.domain}.{op}, which cannot be lowered",
                             "lower a model in the standard ONNX domain")
        if op == "Constant":
            at = _attrs_of(node)
            value = at.get("value")
            if value is None:
                for key in ("value_float", "value_int", "value_floats", "value_ints"):
                    if key in at:
                        value = np.asarray(at[key], dtype=np.float32 if "float" in key else np.int64)
            if value is None:
                raise ModelError(f"Constant node '{node.name}' holds no tensor", "re-export the model")
            self.vals[node.output[0]] = _Val("const", value=np.asarray(value), onnx_name=node.output[0])
            return
        ins = [self.vals.get(i) if i else None for i in node.input]
        for i, v in zip(node.input, ins):
            if i and v is None:
                raise ModelError(f"node '{node.name}' reads '{i}', which is not produced before it",
                                 "re-export the model")
        if op == "DequantizeLinear":
            return self.visit_dq(node, ins)
        if op == "QuantizeLinear":
            return self.visit_q(node, ins)
        real = [v for v in ins if v is not None]
        if real and all(v.kind == "const" for v in real) and op in FLOAT_OPS:
            outs = run_float_op(op, [None if v is None else v.value for v in ins], self.op_attrs(node))
            for o, val in zip(node.output, outs):
                self.vals[o] = _Val("const", value=np.asarray(val), onnx_name=o)
            return
        if not self.try_integer(node, ins):
            self.float_node(node, ins)

    def op_attrs(self, node):
        at = _attrs_of(node)
        if node.op_type == "Split":
            at["_num_outputs"] = len(node.output)
        return at

    def visit_dq(self, node, ins):
        x = ins[0]
        qp = self.q_params(node)
        out = node.output[0]
        if qp is not None and x.kind == "const":
            scale, zp, axis, _ = qp
            q = np.asarray(x.value)
            if scale.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                fval = (q.astype(np.int64) - zp.reshape(shape).astype(np.int64)).astype(np.float32) * \
                    scale.reshape(shape)
            else:
                fval = (q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale
            self.vals[out] = _Val("const", value=fval, qint=q, qscale=scale, qzp=zp,
                                  qaxis=axis if scale.size > 1 else None, onnx_name=out)
            return
        if qp is not None and x.kind == "int" and qp[0].size == 1:
            scale, zp, _, dt = qp
            self.vals[out] = _Val("qview", pt=x.pt, scale=float(scale.reshape(-1)[0]),
                                  zp=int(zp.reshape(-1)[0]), dtype=x.dtype, onnx_name=out)
            return
        self.float_node(node, ins)

    def visit_q(self, node, ins):
        x = ins[0]
        qp = self.q_params(node)
        out = node.output[0]
        if qp is None or qp[0].size != 1 or qp[3] not in INT_DTYPES:
            return self.float_node(node, ins)
        scale, zp, _, dt = qp
        s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
        if x.kind == "const":
            self.vals[out] = _Val("const", value=_q_of(x.value, s, z, dt), onnx_name=out)
            return
        if x.kind == "qview":
            if self.same_params(x, s, z, dt):
                self.vals[out] = _Val("int", pt=x.pt, scale=s, zp=z, dtype=dt, onnx_name=out)
            else:
                pt = self.emit_requant(x, s, z, dt, dtype_range(dt), out)
                self.vals[out] = _Val("int", pt=pt, scale=s, zp=z, dtype=dt, onnx_name=out)
            return
        if x.kind == "int":  # Q of an integer tensor: not a QDQ form we know
            return self.float_node(node, ins)
        pt = self.fresh(out)
        self.add_tensor(pt, dt, self.shape(out), s, z)
        self.emit("Quantize", f"{node.name or out}.quantize", [x.pt], [pt],
                  {"scale": s, "zero_point": z, "dtype": dt}, cls="agnostic", act_inputs=[0])
        self.stats["integer_kernels"] += 1
        self.vals[out] = _Val("int", pt=pt, scale=s, zp=z, dtype=dt, onnx_name=out)

    @staticmethod
    def same_params(v: _Val, s, z, dt) -> bool:
        return np.float32(v.scale) == np.float32(s) and v.zp == z and v.dtype == dt

    def emit_requant(self, x: _Val, s, z, dt, clamp, base) -> str:
        pt = self.fresh(base)
        self.add_tensor(pt, dt, self.prog.tensors[x.pt].shape, s, z)
        consts = self.requant_consts(pt, np.float64(x.scale) / np.float64(s))
        self.emit("Requant", f"{pt}.requant", [x.pt] + consts, [pt],
                  {"x_zero_point": x.zp, "y_zero_point": z, "qmin": clamp[0], "qmax": clamp[1], "dtype": dt},
                  cls="agnostic", act_inputs=[0])
        self.stats["integer_kernels"] += 1
        return pt

    def float_node(self, node, ins):
        op = node.op_type
        if op not in FLOAT_OPS:
            if not self.plan_only:
                raise ModelError(f"--emit program: op {op} (node '{node.name}') has no integer kernel on "
                                 f"{self.target.name} and no float implementation in the program interpreter",
                                 "emit qdq (the default) or qop: ONNX Runtime runs this op in float there")
            self.no_program_kernel[node.name or node.output[0]] = op
        in_names, act, cc = [], [], []
        for idx, (i, v) in enumerate(zip(node.input, ins)):
            if v is None:
                in_names.append("")
                continue
            in_names.append(self.materialize_float(v, i))
            if v.kind != "const":
                act.append(idx)
            elif np.asarray(v.value).size > 1:
                cc.append(idx)
        outs = []
        for o in node.output:
            if not o:
                outs.append("")
                continue
            dt = self.elem.get(o)
            dtype = str(helper.tensor_dtype_to_np_dtype(dt)) if dt else "float32"
            pt = self.fresh(o)
            self.add_tensor(pt, dtype, self.shape(o))
            outs.append(pt)
            if dtype in INT_DTYPES:
                self.vals[o] = _Val("int", pt=pt, dtype=dtype, onnx_name=o)
            else:
                self.vals[o] = _Val("float", pt=pt, onnx_name=o)
        elementwise = op in FLOAT_ELEMENTWISE and len([o for o in outs if o]) == 1
        self.emit(op, node.name or f"{op}_{len(self.pending)}", in_names, outs, _attrs_of(node), domain="",
                  act_inputs=act, cls="agnostic" if elementwise and act else "plain", channel_consts=cc)
        self.stats["float_ops"] += 1

    # ------------------------------------------------------------------ integer groups
    def q_tail(self, node):
        """(Q nodes, activation node or None) when the op's only use is [Relu|Clip] -> Q."""
        if len([o for o in node.output if o]) != 1:
            return None
        out = node.output[0]
        if out in self.graph_outputs:
            return None
        users = self.consumers.get(out, [])
        act = None
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip") and node.op_type not in ("Relu", "Clip"):
            act = users[0]
            if act.output[0] in self.graph_outputs:
                return None
            users = self.consumers.get(act.output[0], [])
            if act.op_type == "Clip" and self.clip_bounds(act) is None:
                return None
        if not users or any(u.op_type != "QuantizeLinear" for u in users):
            return None
        params = [self.q_params(u) for u in users]
        if any(p is None or p[0].size != 1 or p[3] not in INT_DTYPES for p in params):
            return None
        first = params[0]
        for p in params[1:]:
            if not (np.array_equal(p[0], first[0]) and np.array_equal(p[1], first[1]) and p[3] == first[3]):
                return None
        return users, act, (float(first[0].reshape(-1)[0]), int(first[1].reshape(-1)[0]), first[3])

    def clip_bounds(self, node):
        at = _attrs_of(node)
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
                    lo = max(lo, int(_q_of(a, s, z, dt)))
                if b is not None:
                    hi = min(hi, int(_q_of(b, s, z, dt)))
                name = f"clip({a}, {b})"
        return lo, hi, name

    def try_integer(self, node, ins) -> bool:
        op = node.op_type
        handler = {
            "Conv": self.lower_conv, "Gemm": self.lower_gemm, "MatMul": self.lower_matmul,
            "Add": self.lower_add, "Mul": self.lower_mul, "Concat": self.lower_concat,
            "MaxPool": self.lower_maxpool, "AveragePool": self.lower_avgpool,
            "GlobalAveragePool": self.lower_gap, "Resize": self.lower_resize,
        }.get(op)
        if handler is None and op in LUT_OPS:
            handler = self.lower_lut
        if handler is None and op in MOVE_OPS:
            handler = self.lower_move
        if handler is None:
            return False
        tail = self.q_tail(node)
        if tail is None:
            if op not in ("Conv", "Gemm", "MatMul") or len(node.output) != 1:
                return False
            # int8 in, float out: the output is not quantized (TensorRT-style placement)
        ok = handler(node, ins, tail)
        if ok:
            self.stats["integer_kernels"] += 1
            if tail is not None:
                qs, act, _ = tail
                if act is not None:
                    self.consumed.add(id(act))
                for q in qs:
                    self.consumed.add(id(q))
        return ok

    def bind_tail(self, tail, pt, s, z, dt):
        for q in tail[0]:
            self.vals[q.output[0]] = _Val("int", pt=pt, scale=s, zp=z, dtype=dt, onnx_name=q.output[0])

    def out_name(self, tail, node):
        return self.fresh(tail[0][0].output[0] if tail is not None else node.output[0])

    def _qview(self, v):
        return v is not None and v.kind == "qview" and v.dtype in INT_DTYPES

    def _qconst(self, v, per_tensor=True):
        return (v is not None and v.kind == "const" and v.qint is not None and v.qint.dtype.kind in "iu"
                and (not per_tensor or v.qscale.size == 1))

    # ---- conv
    def lower_conv(self, node, ins, tail) -> bool:
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        if not self._qview(x) or not self._qconst(w, per_tensor=False) or w.qint.dtype != np.int8:
            return False
        wq = np.asarray(w.qint)
        if wq.ndim != 4 or np.any(w.qzp != 0) or (w.qscale.size > 1 and w.qaxis not in (0, -4)):
            return False
        at = _attrs_of(node)
        group = int(at.get("group", 1))
        oc, icg, kh, kw = wq.shape
        ic = icg * group
        strides = list(at.get("strides", [1, 1]))
        dil = list(at.get("dilations", [1, 1]))
        auto = at.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            xs = self.shape(node.input[0])
            if xs is None or len(xs) != 4 or not all(isinstance(d, int) for d in xs[2:]):
                return False
            from .interpreter import same_pads

            pads = same_pads(xs[2:], [kh, kw], strides, dil, auto)
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        else:
            pads = list(at.get("pads", [0, 0, 0, 0]))
        s_x = np.float32(x.scale)
        s_w = np.broadcast_to(np.asarray(w.qscale, dtype=np.float32).reshape(-1), (oc,))
        fbias = ybias = None
        if tail is None:  # float output: the bias stays float, added after the rescale
            fbias = self.float_bias(b, oc)
            bias = np.zeros(oc, dtype=np.int64) if fbias is not None else None
        elif self.keeps_float_bias(b):  # float epilogue: the float bias is added before rounding
            ybias = self.float_bias(b, oc)
            bias = np.zeros(oc, dtype=np.int64) if ybias is not None else None
        else:
            bias = self.int_bias(b, s_x, s_w, oc)
        if bias is None:
            return False
        bias = bias - np.int64(x.zp) * wq.reshape(oc, -1).astype(np.int64).sum(axis=1)
        if np.any(np.abs(bias) > 2 ** 31 - 1):
            return False
        base = self.out_name(tail, node)
        attrs = {"group": group, "in_channels": ic, "out_channels": oc, "kernel_shape": [kh, kw],
                 "strides": strides, "pads": pads, "dilations": dil, "x_zero_point": x.zp}
        if tail is None:  # float output: y = float(acc) * (s_x * s_w) + float bias
            scale_c = (s_x * s_w).astype(np.float32)
            consts = [self.add_const(f"{base}.scale", scale_c), self.add_const(f"{base}.float_bias", fbias)]
            attrs.update({"y_zero_point": 0, "qmin": 0, "qmax": 0, "dtype": "float32", "output": "float",
                          "activation": "none"})
            dt, s_y, z_y = "float32", None, None
        else:
            _, act, (s_y, z_y, dt) = tail
            lo, hi, actname = self.out_clamp(act, s_y, z_y, dt)
            m = (np.float64(s_x) * s_w.astype(np.float64)) / np.float64(s_y)
            if self.float_requant:
                m = (s_x * s_w).astype(np.float32) / np.float32(s_y)
            consts = self.requant_consts(base, m)
            if ybias is not None:
                consts.append(self.add_const(f"{base}.y_bias", self.scaled_bias(ybias, s_y)))
            attrs.update({"y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt, "activation": actname})
        out_shape = self.shape(tail[0][0].output[0] if tail else node.output[0])
        if out_shape is None or len(out_shape) != 4:
            out_shape = [None, oc, None, None]  # no shape inference: the channels are known anyway
        self.add_tensor(base, dt, out_shape, s_y, z_y)
        bname = self.add_const(f"{base}.bias", bias.astype(np.int32))
        wname = self.add_const(f"{base}.weight", wq)
        p = self.emit("Conv", node.name or base, [x.pt, wname, bname] + consts, [base], attrs, cls="conv",
                      act_inputs=[0], conv={"onnx_node": node.name or base, "w": wq, "ic": ic, "oc": oc,
                                            "group": group, "kernel": (kh, kw), "stride": tuple(strides),
                                            "dilation": tuple(dil)},
                      channel_vectors=list(range(2, 3 + len(consts))))
        if tail is None:
            self.vals[node.output[0]] = _Val("float", pt=base, onnx_name=node.output[0])
        else:
            self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def float_bias(self, b, n) -> Optional[np.ndarray]:
        """The float32 bias (zeros without one) of a float-output kernel, or None."""
        if b is None:
            return np.zeros(n, dtype=np.float32)
        if b.kind != "const":
            return None
        v = np.asarray(b.value, dtype=np.float32).reshape(-1)
        return np.ascontiguousarray(np.broadcast_to(v, (n,))) if v.size in (1, n) else None

    def keeps_float_bias(self, b) -> bool:
        """A float-scale target adds a bias the QDQ model leaves in float (TensorRT
        placement: quantize_bias false) in its float epilogue, unrounded; rounding it to
        int32 in units of s_x * s_w moved results across rounding ties (0.1 % of a layer's
        elements on PP-OCR cls for cuda)."""
        return (self.float_requant and b is not None and b.kind == "const"
                and not (b.qint is not None and b.qint.dtype == np.int32))

    @staticmethod
    def scaled_bias(fbias, s_y) -> np.ndarray:
        """A float bias in units of the output step, float32 (one rounding)."""
        return (np.asarray(fbias, dtype=np.float64) / np.float64(s_y)).astype(np.float32)

    def int_bias(self, b, s_x, s_w, n) -> Optional[np.ndarray]:
        """int64 bias in units of s_x * s_w[c] (None when it cannot be had)."""
        if b is None:
            return np.zeros(n, dtype=np.int64)
        if b.kind != "const":
            return None
        acc_scale = (np.float32(s_x) * np.asarray(s_w, dtype=np.float32)).astype(np.float64)
        if b.qint is not None and b.qint.dtype == np.int32:
            bq = np.broadcast_to(np.asarray(b.qint, dtype=np.int64).reshape(-1), (n,))
            bs = np.broadcast_to(np.asarray(b.qscale, dtype=np.float64).reshape(-1), (n,))
            if np.all(np.asarray(b.qzp) == 0) and np.allclose(bs, acc_scale, rtol=1e-6, atol=0):
                return bq.copy()
            return np.rint(bq * bs / acc_scale).astype(np.int64)
        bv = np.asarray(b.value, dtype=np.float64).reshape(-1)
        if bv.size not in (1, n):
            return None
        return np.rint(np.broadcast_to(bv, (n,)) / acc_scale).astype(np.int64)

    # ---- gemm / matmul
    def lower_gemm(self, node, ins, tail) -> bool:
        at = _attrs_of(node)
        if at.get("transA", 0) or float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
            return False
        a, w = ins[0], ins[1]
        if not self._qconst(w, per_tensor=False):
            return False
        wq = np.asarray(w.qint)
        if wq.ndim != 2 or wq.dtype != np.int8 or np.any(w.qzp != 0):
            return False
        trans = int(at.get("transB", 0))
        wt = wq if trans else wq.T  # [N, K]
        if w.qscale.size > 1 and w.qaxis not in ((0, -2) if trans else (1, -1)):
            return False
        return self._emit_gemm(node, ins, tail, a, wt, w.qscale, ins[2] if len(ins) > 2 else None)

    def lower_matmul(self, node, ins, tail) -> bool:
        a, w = ins[0], ins[1]
        if not self._qconst(w, per_tensor=False):
            return False
        wq = np.asarray(w.qint)
        if wq.ndim != 2 or wq.dtype != np.int8 or np.any(w.qzp != 0):
            return False
        if w.qscale.size > 1 and w.qaxis not in (1, -1):
            return False
        return self._emit_gemm(node, ins, tail, a, wq.T, w.qscale, None)

    def _emit_gemm(self, node, ins, tail, a, wt, wscale, b) -> bool:
        if not self._qview(a):
            return False
        n = wt.shape[0]
        s_a = np.float32(a.scale)
        s_w = np.broadcast_to(np.asarray(wscale, dtype=np.float32).reshape(-1), (n,))
        fbias = self.float_bias(b, n) if tail is None or self.keeps_float_bias(b) else None
        bias = (np.zeros(n, dtype=np.int64) if fbias is not None else None) \
            if tail is None or self.keeps_float_bias(b) else self.int_bias(b, s_a, s_w, n)
        if bias is None:
            return False
        base = self.out_name(tail, node)
        attrs = {"a_zero_point": a.zp, "in_features": int(wt.shape[1]), "out_features": int(n)}
        if tail is None:
            consts = [self.add_const(f"{base}.scale", (s_a * s_w).astype(np.float32)),
                      self.add_const(f"{base}.float_bias", fbias)]
            attrs.update({"y_zero_point": 0, "qmin": 0, "qmax": 0, "dtype": "float32", "output": "float",
                          "activation": "none"})
            dt, s_y, z_y = "float32", None, None
        else:
            _, act, (s_y, z_y, dt) = tail
            lo, hi, actname = self.out_clamp(act, s_y, z_y, dt)
            m = np.float64(s_a) * s_w.astype(np.float64) / np.float64(s_y)
            if self.float_requant:
                m = (s_a * s_w).astype(np.float32) / np.float32(s_y)
            consts = self.requant_consts(base, m)
            if fbias is not None:
                consts.append(self.add_const(f"{base}.y_bias", self.scaled_bias(fbias, s_y)))
            attrs.update({"y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt, "activation": actname})
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0] if tail else node.output[0]), s_y, z_y)
        wname = self.add_const(f"{base}.weight", np.ascontiguousarray(wt))
        bname = self.add_const(f"{base}.bias", bias.astype(np.int32))
        self.emit("Gemm", node.name or base, [a.pt, wname, bname] + consts, [base], attrs, act_inputs=[0])
        if tail is None:
            self.vals[node.output[0]] = _Val("float", pt=base, onnx_name=node.output[0])
        else:
            self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    # ---- elementwise
    def _operand(self, v, hint):
        """(program tensor, scale, zp, is_const) of a quantized operand, or None."""
        if self._qview(v):
            return v.pt, v.scale, v.zp, False
        if self._qconst(v) and v.qint.dtype in (np.int8, np.uint8):
            name = self.add_const(f"{hint}.const", np.asarray(v.qint))
            return name, float(np.asarray(v.qscale).reshape(-1)[0]), int(np.asarray(v.qzp).reshape(-1)[0]), True
        return None

    def lower_add(self, node, ins, tail) -> bool:
        if len(ins) != 2:
            return False
        if self.scalar_operand_lut(node, ins, tail):
            return True
        a = self._operand(ins[0], node.input[0])
        b = self._operand(ins[1], node.input[1])
        if a is None or b is None or (a[3] and b[3]):
            return False
        _, act, (s_y, z_y, dt) = tail
        lo, hi, actname = self.out_clamp(act, s_y, z_y, dt)
        base = self.out_name(tail, node)
        if self.float_requant:
            consts = [self.add_const(f"{base}.a_scale", np.float32(np.float32(a[1]) / np.float32(s_y))),
                      self.add_const(f"{base}.b_scale", np.float32(np.float32(b[1]) / np.float32(s_y)))]
        else:
            twice = 2.0 * max(a[1], b[1])
            consts = (self.requant_consts(f"{base}.a", np.float64(a[1]) / twice)
                      + self.requant_consts(f"{base}.b", np.float64(b[1]) / twice)
                      + self.requant_consts(base, twice / ((1 << ADD_LEFT_SHIFT) * np.float64(s_y))))
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0]), s_y, z_y)
        acts = [i for i, o in enumerate((a, b)) if not o[3]]
        cc = [i for i, o in enumerate((a, b)) if o[3]]
        self.emit("Add", node.name or base, [a[0], b[0]] + consts, [base],
                  {"a_zero_point": a[2], "b_zero_point": b[2], "y_zero_point": z_y, "qmin": lo, "qmax": hi,
                   "dtype": dt, "left_shift": ADD_LEFT_SHIFT, "activation": actname},
                  cls="agnostic", act_inputs=acts, channel_consts=cc)
        self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def lower_mul(self, node, ins, tail) -> bool:
        if len(ins) != 2:
            return False
        if self.scalar_operand_lut(node, ins, tail):
            return True
        a = self._operand(ins[0], node.input[0])
        b = self._operand(ins[1], node.input[1])
        if a is None or b is None or (a[3] and b[3]):
            return False
        _, act, (s_y, z_y, dt) = tail
        lo, hi, actname = self.out_clamp(act, s_y, z_y, dt)
        base = self.out_name(tail, node)
        if self.float_requant:
            m = np.float32(a[1]) * np.float32(b[1]) / np.float32(s_y)
        else:
            m = np.float64(a[1]) * np.float64(b[1]) / np.float64(s_y)
        consts = self.requant_consts(base, m)
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0]), s_y, z_y)
        acts = [i for i, o in enumerate((a, b)) if not o[3]]
        cc = [i for i, o in enumerate((a, b)) if o[3]]
        self.emit("Mul", node.name or base, [a[0], b[0]] + consts, [base],
                  {"a_zero_point": a[2], "b_zero_point": b[2], "y_zero_point": z_y, "qmin": lo, "qmax": hi,
                   "dtype": dt, "activation": actname}, cls="agnostic", act_inputs=acts, channel_consts=cc)
        self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def lower_concat(self, node, ins, tail) -> bool:
        _, act, (s_y, z_y, dt) = tail
        if any(not self._qview(v) for v in ins):
            return False
        rank = len(self.shape(node.input[0]) or [])
        if not rank:
            return False
        axis = int(_attrs_of(node)["axis"])
        axis = axis + rank if axis < 0 else axis
        lo, hi, _ = self.out_clamp(act, s_y, z_y, dt)
        parts = []
        for i, v in enumerate(ins):
            if self.same_params(v, s_y, z_y, dt) and act is None:
                parts.append(v.pt)
            else:
                parts.append(self.emit_requant(v, s_y, z_y, dt, (lo, hi), f"{node.input[i]}.requant"))
        base = self.out_name(tail, node)
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0]), s_y, z_y)
        self.emit("Concat", node.name or base, parts, [base], {"axis": axis, "dtype": dt}, cls="agnostic",
                  act_inputs=list(range(len(parts))))
        self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def _pool_attrs(self, node, with_dil=True):
        at = _attrs_of(node)
        if len(at.get("kernel_shape", [])) != 2 or int(at.get("storage_order", 0)):
            return None
        kh, kw = at["kernel_shape"]
        strides = list(at.get("strides", [1, 1]))
        dil = list(at.get("dilations", [1, 1]))
        auto = at.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            xs = self.shape(node.input[0])
            if xs is None or len(xs) != 4 or not all(isinstance(d, int) for d in xs[2:]):
                return None
            from .interpreter import same_pads

            pads = same_pads(xs[2:], [kh, kw], strides, dil, auto)
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        else:
            pads = list(at.get("pads", [0, 0, 0, 0]))
        out = {"kernel_shape": [kh, kw], "strides": strides, "pads": pads, "ceil_mode": int(at.get("ceil_mode", 0))}
        if with_dil:
            out["dilations"] = dil
        elif dil != [1, 1]:
            return None
        return out, at

    def _finish_same_scale(self, node, tail, pt_tmp, x: _Val):
        """Bind an op whose integer output keeps x's parameters; requant when Q differs."""
        _, act, (s_y, z_y, dt) = tail
        lo, hi, _ = self.out_clamp(act, s_y, z_y, dt)
        tmp = _Val("qview", pt=pt_tmp, scale=x.scale, zp=x.zp, dtype=x.dtype)
        if self.same_params(x, s_y, z_y, dt) and act is None:
            self.bind_tail(tail, pt_tmp, s_y, z_y, dt)
        else:
            pt = self.emit_requant(tmp, s_y, z_y, dt, (lo, hi), tail[0][0].output[0])
            self.bind_tail(tail, pt, s_y, z_y, dt)

    def lower_maxpool(self, node, ins, tail) -> bool:
        x = ins[0]
        if not self._qview(x) or len([o for o in node.output if o]) != 1:
            return False
        pa = self._pool_attrs(node)
        if pa is None:
            return False
        base = self.fresh(node.output[0])
        self.add_tensor(base, x.dtype, self.shape(node.output[0]), x.scale, x.zp)
        self.emit("MaxPool", node.name or base, [x.pt], [base], pa[0], cls="agnostic", act_inputs=[0])
        self._finish_same_scale(node, tail, base, x)
        return True

    def lower_avgpool(self, node, ins, tail) -> bool:
        x = ins[0]
        if not self._qview(x):
            return False
        pa = self._pool_attrs(node, with_dil=False)
        if pa is None:
            return False
        attrs, at = pa
        _, act, (s_y, z_y, dt) = tail
        lo, hi, _ = self.out_clamp(act, s_y, z_y, dt)
        base = self.out_name(tail, node)
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0]), s_y, z_y)
        ratio = self.add_const(f"{base}.scale_ratio", np.asarray([np.float64(x.scale) / np.float64(s_y)]))
        attrs.update({"count_include_pad": int(at.get("count_include_pad", 0)), "x_zero_point": x.zp,
                      "y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt})
        self.emit("AveragePool", node.name or base, [x.pt, ratio], [base], attrs, cls="agnostic", act_inputs=[0])
        self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def lower_gap(self, node, ins, tail) -> bool:
        x = ins[0]
        xs = self.shape(node.input[0])
        if not self._qview(x) or xs is None or len(xs) != 4:
            return False
        _, act, (s_y, z_y, dt) = tail
        lo, hi, _ = self.out_clamp(act, s_y, z_y, dt)
        base = self.out_name(tail, node)
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0]), s_y, z_y)
        ratio = self.add_const(f"{base}.scale_ratio", np.asarray([np.float64(x.scale) / np.float64(s_y)]))
        self.emit("GlobalAveragePool", node.name or base, [x.pt, ratio], [base],
                  {"x_zero_point": x.zp, "y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt},
                  cls="agnostic", act_inputs=[0])
        self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def lower_resize(self, node, ins, tail) -> bool:
        x = ins[0]
        at = _attrs_of(node)
        xs = self.shape(node.input[0])
        if not self._qview(x) or at.get("mode", "nearest") != "nearest" or xs is None or len(xs) != 4:
            return False
        scales = sizes = None
        for idx, v in enumerate(ins[1:], 1):
            if v is None:
                continue
            if v.kind != "const":
                return False
            arr = np.asarray(v.value)
            if arr.size == 0:
                continue
            if (len(ins) == 2 and idx == 1) or idx == 2:
                scales = arr.astype(np.float64)
            elif idx == 3:
                sizes = arr.astype(np.int64)
        if sizes is not None:
            if sizes.size != 4 or sizes[0] != xs[0] or sizes[1] != xs[1]:
                return False
            attrs = {"sizes": [int(sizes[2]), int(sizes[3])]}
        elif scales is not None:
            if scales.size != 4 or scales[0] != 1 or scales[1] != 1:
                return False
            attrs = {"scales": [float(scales[2]), float(scales[3])]}
        else:
            return False
        if at.get("exclude_outside", 0) or "axes" in at:
            return False
        attrs.update({"mode": "nearest",
                      "coordinate_transformation_mode": at.get("coordinate_transformation_mode", "half_pixel"),
                      "nearest_mode": at.get("nearest_mode", "round_prefer_floor")})
        if self.model.opset_import and self._opset() < 11:
            attrs["coordinate_transformation_mode"] = "asymmetric"
            attrs["nearest_mode"] = "floor"
        base = self.fresh(node.output[0])
        self.add_tensor(base, x.dtype, self.shape(node.output[0]), x.scale, x.zp)
        self.emit("Resize", node.name or base, [x.pt], [base], attrs, cls="agnostic", act_inputs=[0])
        self._finish_same_scale(node, tail, base, x)
        return True

    def _opset(self):
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return imp.version
        return 13

    def lower_lut(self, node, ins, tail) -> bool:
        x = ins[0]
        if not self._qview(x) or any(v is not None and v.kind != "const" for v in ins[1:]):
            return False
        return self._emit_lut(node, ins, 0, tail)

    def scalar_operand_lut(self, node, ins, tail) -> bool:
        """Add / Mul of an 8-bit tensor and a scalar constant is a unary function of the
        tensor: a lookup table computed like the QDQ model (float32, then QuantizeLinear).

        The two-operand fixed-point Add rescales the constant with 2**-left_shift
        precision, which decides rounding ties wrongly when the exact result sits next to
        one: HardSwish's clip(x + 3, 0, 6) at the output scale 6/127 maps x = 0 to
        63.50000024, which the Add kernel rounded to 63 (ONNX Runtime and the exact value:
        64), on 1-7 % of the elements of such layers of PP-OCR. A table has no such error."""
        if tail is None:
            return False
        xi = next((i for i, v in enumerate(ins) if self._qview(v)), None)
        if xi is None:
            return False
        c = ins[1 - xi]
        if c is None or c.kind != "const" or np.asarray(c.value).size != 1:
            return False
        rank = self.shape(node.input[xi])
        if np.ndim(c.value) > (len(rank) if rank is not None else 0):
            return False  # the constant would add dimensions
        return self._emit_lut(node, ins, xi, tail)

    def _emit_lut(self, node, ins, xi, tail) -> bool:
        """A Lut kernel for `node` as a function of its xi-th input (the others constant):
        table = Q_out(act(f(DQ_in(q)))) for every q of the input type, in float32."""
        x = ins[xi]
        _, act, (s_y, z_y, dt) = tail
        lo, hi = dtype_range(x.dtype)
        q = np.arange(lo, hi + 1, dtype=np.int64)
        xf = (q - x.zp).astype(np.float32) * np.float32(x.scale)
        args = [xf if i == xi else (None if v is None else v.value) for i, v in enumerate(ins)]
        y = run_float_op(node.op_type, args, _attrs_of(node))[0]
        if act is not None:
            y = run_float_op(act.op_type, [y] + [None if not i else self.vals[i].value for i in act.input[1:]],
                             _attrs_of(act))[0]
        table = _q_of(np.asarray(y, dtype=np.float32).reshape(-1), s_y, z_y, dt)
        if table.size != q.size:
            return False
        base = self.out_name(tail, node)
        self.add_tensor(base, dt, self.shape(tail[0][0].output[0]), s_y, z_y)
        tname = self.add_const(f"{base}.table", table)
        self.emit("Lut", node.name or base, [x.pt, tname], [base], {"function": node.op_type, "dtype": dt},
                  cls="agnostic", act_inputs=[0])
        self.bind_tail(tail, base, s_y, z_y, dt)
        return True

    def lower_move(self, node, ins, tail) -> bool:
        x = ins[0]
        if not self._qview(x) or any(v is not None and v.kind != "const" for v in ins[1:]):
            return False
        consts = [("" if v is None else self.add_const(f"{node.input[i + 1]}", v.value))
                  for i, v in enumerate(ins[1:])]
        base = self.fresh(node.output[0])
        self.add_tensor(base, x.dtype, self.shape(node.output[0]), x.scale, x.zp)
        op = "Identity" if node.op_type == "Dropout" else node.op_type
        ins_names = [x.pt] + ([] if op == "Identity" else consts)
        attrs = {} if op == "Identity" else _attrs_of(node)
        self.emit(op, node.name or base, ins_names, [base], attrs, domain="", act_inputs=[0])
        self._finish_same_scale(node, tail, base, x)
        return True

    # ------------------------------------------------------------------ planning
    def plan(self, stored: Optional[dict] = None) -> LayoutPlan:
        plan = LayoutPlan(target=self.target.name, no_program_kernel=dict(self.no_program_kernel))
        given = {}
        if stored and stored.get("target") == self.target.name:
            given = {d["node"]: d for d in stored.get("convs", [])}
        layout_of: Dict[str, str] = {n: PLAIN for n in self.prog.tensors}
        for p in self.pending:
            k = p.kernel
            if p.cls == "conv":
                c = p.conv
                if c["onnx_node"] in given:
                    d = ConvDecision(**given[c["onnx_node"]])
                else:
                    d = decide_conv(c["onnx_node"], c["ic"], c["oc"], c["group"], c["kernel"], c["stride"],
                                    c["dilation"], self.target)
                p.decision = d
                p.layout = d.layout
                plan.convs.append(d)
            elif p.cls == "agnostic":
                p.layout = self._agnostic_layout(p, layout_of)
            else:
                p.layout = PLAIN
            for o in k.outputs:
                if o:
                    layout_of[o] = p.layout if self._rank4(o) or p.cls == "conv" else PLAIN
            plan.kernels[k.name] = p.layout
        self.layout_of_final = layout_of
        return plan

    def _rank4(self, name) -> bool:
        info = self.prog.tensors.get(name)
        return info is not None and info.shape is not None and len(info.shape) == 4

    def _agnostic_layout(self, p: _Pending, layout_of) -> str:
        k = p.kernel
        acts = [k.inputs[i] for i in p.act_inputs]
        cands = [layout_of.get(t, PLAIN) for t in acts]
        choice = next((c for c in cands if c != PLAIN), PLAIN)
        if choice == PLAIN:
            return PLAIN
        infos = [self.prog.tensors[t] for t in acts]
        if any(i.shape is None or len(i.shape) != 4 or i.channels is None for i in infos):
            return PLAIN
        if not all(self._rank4(o) and self.prog.tensors[o].channels is not None for o in k.outputs if o):
            return PLAIN
        blk = block_of(choice)
        if k.op == "Concat":
            if k.attrs["axis"] == 1 and blk > 1 and any(i.channels % blk for i in infos[:-1]):
                return PLAIN
        elif len(acts) > 1 or p.channel_consts or not k.is_kernel:
            chans = {i.channels for i in infos}
            if len(chans) != 1:
                return PLAIN
            c = chans.pop()
            for idx in p.channel_consts:
                arr = self.prog.constants[k.inputs[idx]]
                if not (arr.size == 1 or _per_channel_shape(arr.shape, c)):
                    return PLAIN
            out = self.prog.tensors[k.outputs[0]]
            if out.channels != c:
                return PLAIN
        return choice

    # ------------------------------------------------------------------ emission
    def build(self, plan: LayoutPlan) -> Program:
        prog = self.prog
        current: Dict[str, str] = {n: PLAIN for n in prog.tensors}
        converted: Dict[tuple, str] = {}
        nodes: List[Kernel] = []
        for p in self.pending:
            k = p.kernel
            if p.cls == "conv":
                d = p.decision
                need = {0: d.input_layout}
            else:
                need = {i: p.layout for i in p.act_inputs}
            for i, want in need.items():
                src = k.inputs[i]
                have = current.get(src, PLAIN)
                if not src or same_activation_form(have, want):
                    continue
                key = (src, want)
                if key not in converted:
                    info = prog.tensors[src]
                    if p.cls == "conv" and info.channels is None:
                        # a conv's input channels are its weight's, whatever shape inference saw
                        info.channels = d.ic
                        if info.shape is None or len(info.shape) != 4:
                            info.shape = [None, d.ic, None, None]
                    if info.shape is None or len(info.shape) != 4 or info.channels is None:
                        raise ModelError(f"tensor '{src}' needs layout {want} but its shape is unknown",
                                         "give the model static channel counts (run shape inference)")
                    name = self.fresh(f"{src}.{want}")
                    prog.tensors[name] = TensorInfo(name=name, dtype=info.dtype, layout=want, shape=info.shape,
                                                    channels=info.channels, scale=info.scale,
                                                    zero_point=info.zero_point)
                    nodes.append(Kernel("LayoutConvert", self.fresh(f"{name}.convert"), [src], [name],
                                        {"src": have, "dst": want, "channels": info.channels,
                                         "pad_value": int(info.zero_point or 0)}))
                    current[name] = want
                    converted[key] = name
                    plan.conversions.append({"tensor": src, "src": have, "dst": want})
                k.inputs[i] = converted[key]
            if p.cls == "conv":
                self._pack_conv(p)
            elif p.layout != PLAIN:
                if k.is_kernel:
                    k.attrs["layout"] = p.layout
                for idx in p.channel_consts:
                    name = k.inputs[idx]
                    arr = prog.constants[name]
                    if arr.size > 1:  # a per-channel constant, laid out like the activations
                        c = self.prog.tensors[k.outputs[0]].channels
                        packed = self.fresh(f"{name}.{p.layout}")
                        prog.constants[packed] = to_layout(arr.reshape(1, c, 1, 1), p.layout, 0)
                        prog.tensors[packed] = TensorInfo(name=packed, dtype=str(arr.dtype), layout=p.layout,
                                                          shape=[1, c, 1, 1], channels=c)
                        k.inputs[idx] = packed
            elif k.domain == DOMAIN and k.op in AGNOSTIC:
                k.attrs["layout"] = PLAIN
            for o in k.outputs:
                if o:
                    lay = p.layout if (self._rank4(o) or p.cls == "conv") else PLAIN
                    current[o] = lay
                    prog.tensors[o].layout = lay
            nodes.append(k)
        # graph outputs are delivered in NCHW
        for idx, o in enumerate(prog.outputs):
            if current.get(o, PLAIN) != PLAIN:
                info = prog.tensors[o]
                name = self.fresh(f"{o}.NCHW")
                prog.tensors[name] = TensorInfo(name=name, dtype=info.dtype, shape=info.shape,
                                                channels=info.channels, scale=info.scale, zero_point=info.zero_point)
                nodes.append(Kernel("LayoutConvert", self.fresh(f"{name}.convert"), [o], [name],
                                    {"src": current[o], "dst": PLAIN, "channels": info.channels,
                                     "pad_value": int(info.zero_point or 0)}))
                plan.conversions.append({"tensor": o, "src": current[o], "dst": PLAIN})
                prog.outputs[idx] = name
        prog.nodes = nodes
        prog.plan = plan.to_json()
        prog.plan["stats"] = dict(self.stats)
        used = {i for n in nodes for i in n.inputs if i}
        for name in [c for c in prog.constants if c not in used]:
            del prog.constants[name]
            prog.tensors.pop(name, None)
        prog.validate()
        return prog

    def _pack_conv(self, p: _Pending):
        prog, k, d = self.prog, p.kernel, p.decision
        w = p.conv["w"]
        packed = pack_weight(w, d.layout, d.kind, groups=d.group)
        prog.constants[k.inputs[1]] = packed
        info = prog.tensors[k.inputs[1]]
        info.shape, info.layout = list(packed.shape), d.layout
        # per-output-channel vectors (bias, multiplier, shift or scale) padded to the block
        ocp = d.oc_padded if is_blocked(d.layout) else d.oc
        for idx in p.channel_vectors:
            name = k.inputs[idx]
            v = np.asarray(prog.constants[name]).reshape(-1)
            if v.size == 1:
                v = np.broadcast_to(v, (d.oc,))
            if ocp != v.size:
                v = np.concatenate([v, np.zeros(ocp - v.size, dtype=v.dtype)])
            prog.constants[name] = np.ascontiguousarray(v)
            prog.tensors[name].shape = [int(ocp)]
        k.attrs.update({"kind": d.kind, "layout": d.layout, "in_layout": d.input_layout,
                        "reason": d.reason})


def _per_channel_shape(shape, c) -> bool:
    s = tuple(shape)
    return s in ((1, c, 1, 1), (c, 1, 1))


# ============================================================================= entry points

def plan_layouts(source, target=None) -> LayoutPlan:
    """Recognise the integer kernels of a QDQ model and plan their layouts for `target`."""
    lw = _Lowerer(_to_model(source), resolve_target(target), plan_only=True)
    lw.recognise()
    plan = lw.plan()
    # conversions are counted the same way emission inserts them
    lw.build(plan)
    return plan


def lower_to_program(source, target=None) -> Program:
    """Lower a QDQ model (IR, ONNX model or path) to a Program for `target`.

    A layout plan stored by the lower-layout pass in an IR's notes is honoured for the
    convs it names (when it was made for the same target).
    """
    target = resolve_target(target)
    stored = None
    if hasattr(source, "ann"):
        stored = source.ann.notes.get("layout_plan")
    lw = _Lowerer(_to_model(source), target)
    lw.recognise()
    plan = lw.plan(stored)
    prog = lw.build(plan)
    prog.meta["source_graph"] = lw.model.graph.name or ""
    return prog


def program_exporter(ir, ctx) -> onnx.ModelProto:
    """The `exporter` option of qcompiler.driver.build.build for `--emit program`: the IR (after the
    target's pipeline) lowered for ctx.target, as the ONNX form of the program. The
    lowering summary lands in ctx.report["program"]."""
    from .program import program_to_onnx

    prog = lower_to_program(ir, ctx.target)
    ctx.report["program"] = {"target": prog.target, "requant": prog.requant, "rounding": prog.rounding,
                             "kernels": prog.op_counts(), "conv_layouts": prog.plan.get("conv_layouts", {}),
                             "layout_conversions": prog.plan.get("num_conversions", 0),
                             "conv_decisions": {d["node"]: f"{d['layout']} ({d['reason']})"
                                                for d in prog.plan.get("convs", [])}}
    return program_to_onnx(prog)
