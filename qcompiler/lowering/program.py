"""The lowered program: integer kernels in a target layout, and its one-file format.

A `Program` is a list of nodes in execution order. Integer kernels live in the custom
domain `qcompiler.program`; ops that stay float (and integer data movement such as
Reshape on int8 in NCHW) keep their standard ONNX op type and attributes. Packed
weights, int32 biases and requantization constants are named constants.

On disk a program is an ONNX model (it opens in Netron): the kernels are nodes, the
constants initializers, every tensor has a value_info whose doc_string states its layout,
and the model's metadata_props hold the target, its rounding and requant style, the
per-tensor table (layout, logical shape, dtype, quantization parameters) and the layout
plan. docs/program-format.md documents every op, attribute and layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError

DOMAIN = "qcompiler.program"
FORMAT = "qcompiler.program/1"

__all__ = ["DOMAIN", "FORMAT", "TensorInfo", "Kernel", "Program", "program_to_onnx",
           "program_from_onnx", "save_program", "load_program"]

_NP_OF = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "int8": np.int8,
    "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
    "int64": np.int64, "bool": np.bool_,
}


@dataclass
class TensorInfo:
    """One tensor of a program.

    shape is the logical shape (NCHW order for 4-D activations; None for unknown dims),
    layout the physical layout, channels the real (unpadded) channel count of a 4-D
    tensor, scale / zero_point the quantization parameters of an integer activation.
    """

    name: str
    dtype: str
    layout: str = "NCHW"
    shape: Optional[List[Optional[int]]] = None
    channels: Optional[int] = None
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    def physical_shape(self) -> Optional[List[Optional[int]]]:
        if self.shape is None:
            return None
        from .layouts import block_of

        if self.layout == "NCHW" or len(self.shape) != 4:
            return list(self.shape)
        n, c, h, w = self.shape
        if self.layout == "NHWC":
            return [n, h, w, c]
        k = block_of(self.layout)
        return [n, None if c is None else -(-c // k), h, w, k]


@dataclass
class Kernel:
    op: str
    name: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any] = field(default_factory=dict)
    domain: str = DOMAIN

    @property
    def is_kernel(self) -> bool:
        return self.domain == DOMAIN


@dataclass
class Program:
    target: str
    rounding: str
    requant: str  # "fixed_point" | "float_scale"
    nodes: List[Kernel] = field(default_factory=list)
    tensors: Dict[str, TensorInfo] = field(default_factory=dict)
    constants: Dict[str, np.ndarray] = field(default_factory=dict)
    inputs: List[str] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)
    plan: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def producer(self, name: str) -> Optional[Kernel]:
        for n in self.nodes:
            if name in n.outputs:
                return n
        return None

    def op_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for n in self.nodes:
            key = n.op if n.is_kernel else f"{n.op} (onnx)"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def conversions(self) -> int:
        return sum(1 for n in self.nodes if n.is_kernel and n.op == "LayoutConvert")

    def summary(self) -> str:
        lines = [f"program for target {self.target} (requant {self.requant}, rounding {self.rounding})",
                 f"  {len(self.nodes)} nodes, {len(self.constants)} constants, "
                 f"{self.conversions()} layout conversions"]
        for op, n in self.op_counts().items():
            lines.append(f"  {n:5d}  {op}")
        for d in self.plan.get("convs", []):
            lines.append(f"  conv {d['node']}: {d['layout']} ({d['reason']})")
        return "\n".join(lines)

    def validate(self) -> None:
        """Every node input is a program input, a constant or an earlier output."""
        known = set(self.inputs) | set(self.constants)
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in known:
                    raise ModelError(f"program node '{n.name}' reads '{i}', which nothing produces earlier",
                                     "the program file is damaged; lower the model again")
            known.update(o for o in n.outputs if o)
        for o in self.outputs:
            if o not in known:
                raise ModelError(f"program output '{o}' is not produced", "lower the model again")


# ----------------------------------------------------------------------------- ONNX form

def _elem_type(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(_NP_OF.get(dtype, np.float32)))


def _value_info(t: TensorInfo) -> onnx.ValueInfoProto:
    shape = t.physical_shape()
    dims = None if shape is None else [d if isinstance(d, int) and d >= 0 else None for d in shape]
    vi = helper.make_tensor_value_info(t.name, _elem_type(t.dtype), dims)
    parts = [f"layout={t.layout}"]
    if t.channels is not None:
        parts.append(f"channels={t.channels}")
    if t.scale is not None:
        parts.append(f"scale={t.scale!r} zero_point={t.zero_point}")
    vi.doc_string = " ".join(parts)
    return vi


def _attr_value(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_attr_value(x) for x in v]
    return v


def program_to_onnx(prog: Program) -> onnx.ModelProto:
    nodes = []
    for k in prog.nodes:
        attrs = {}
        for key, v in k.attrs.items():
            v = _attr_value(v)
            if isinstance(v, list) and len(v) == 0:
                attrs[key] = helper.make_attribute(key, [], attr_type=onnx.AttributeProto.INTS)
                continue
            attrs[key] = v
        node = helper.make_node(k.op, list(k.inputs), list(k.outputs), name=k.name,
                                domain=k.domain if k.domain else None)
        for key, v in attrs.items():
            node.attribute.append(v if isinstance(v, onnx.AttributeProto) else helper.make_attribute(key, v))
        nodes.append(node)
    inits = [numpy_helper.from_array(np.asarray(v, order="C"), name) for name, v in prog.constants.items()]
    ins = [_value_info(prog.tensors[n]) for n in prog.inputs]
    outs = [_value_info(prog.tensors[n]) for n in prog.outputs]
    io = set(prog.inputs) | set(prog.outputs) | set(prog.constants)
    vis = [_value_info(t) for name, t in prog.tensors.items() if name not in io]
    graph = helper.make_graph(nodes, f"qcompiler_program_{prog.target}", ins, outs, inits, value_info=vis)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="qcompiler")
    model.ir_version = 8
    meta = {
        "qcompiler.format": FORMAT,
        "qcompiler.target": prog.target,
        "qcompiler.rounding": prog.rounding,
        "qcompiler.requant": prog.requant,
        "qcompiler.tensors": json.dumps({n: _tensor_json(t) for n, t in prog.tensors.items()},
                                        separators=(",", ":")),
        "qcompiler.plan": json.dumps(prog.plan, separators=(",", ":")),
    }
    for k, v in prog.meta.items():
        meta.setdefault(f"qcompiler.meta.{k}", str(v))
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return model


def _tensor_json(t: TensorInfo) -> dict:
    d = asdict(t)
    d.pop("name")
    return {k: v for k, v in d.items() if v is not None}


def program_from_onnx(model: onnx.ModelProto) -> Program:
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("qcompiler.format") != FORMAT:
        raise ModelError("the file is not a qcompiler program (no 'qcompiler.format' metadata)",
                         "write one with 'qcompiler build --emit program'")
    try:
        table = json.loads(meta["qcompiler.tensors"])
        plan = json.loads(meta.get("qcompiler.plan", "{}"))
    except (KeyError, ValueError) as e:
        raise ModelError(f"the program's tensor table is damaged ({type(e).__name__})",
                         "lower the model again") from None
    tensors = {name: TensorInfo(name=name, **d) for name, d in table.items()}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: _from_attr(a) for a in n.attribute}
        nodes.append(Kernel(op=n.op_type, name=n.name, inputs=list(n.input), outputs=list(n.output),
                            attrs=attrs, domain=n.domain or ""))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    extra = {k[len("qcompiler.meta."):]: v for k, v in meta.items() if k.startswith("qcompiler.meta.")}
    prog = Program(target=meta.get("qcompiler.target", ""), rounding=meta.get("qcompiler.rounding", ""),
                   requant=meta.get("qcompiler.requant", "fixed_point"), nodes=nodes, tensors=tensors,
                   constants=constants, inputs=[i.name for i in model.graph.input if i.name not in constants],
                   outputs=[o.name for o in model.graph.output], plan=plan, meta=extra)
    prog.validate()
    return prog


def _from_attr(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, list):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
    return v


def save_program(prog: Program, path: Union[str, os.PathLike], force: bool = True) -> Path:
    """Write the program as one ONNX file, atomically (temporary file, then rename)."""
    from ..ir.io import save_model

    prog.validate()
    return save_model(program_to_onnx(prog), path, force=force)


def load_program(path: Union[str, os.PathLike]) -> Program:
    from ..ir.io import read_model

    return program_from_onnx(read_model(path))
