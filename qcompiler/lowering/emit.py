"""Emission: the recognised kernels written in their planned layouts. A LayoutConvert is
inserted where a kernel needs its input in another layout than it has (once per tensor
and layout), conv weights are packed for their layout and kind and their per-channel
vectors padded to whole blocks, per-channel constants of blocked kernels laid out like
their activations, outputs delivered in NCHW, and unused constants dropped."""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..errors import ModelError
from .layout_plan import LayoutPlan, is_rank4
from .layouts import PLAIN, is_blocked, pack_weight, same_activation_form, to_layout
from .program import DOMAIN, Kernel, Program, TensorInfo
from .recognise.state import Pending

__all__ = ["emit_program"]

# kernels that run in whatever layout their inputs have
AGNOSTIC = frozenset({"Add", "Mul", "Requant", "Lut", "MaxPool", "AveragePool", "GlobalAveragePool",
                      "Resize", "Concat", "Quantize", "Dequantize"})


def emit_program(lw, plan: LayoutPlan) -> Program:
    prog = lw.prog
    current: Dict[str, str] = {n: PLAIN for n in prog.tensors}
    converted: Dict[tuple, str] = {}
    nodes: List[Kernel] = []
    for p in lw.pending:
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
                name = lw.fresh(f"{src}.{want}")
                prog.tensors[name] = TensorInfo(name=name, dtype=info.dtype, layout=want, shape=info.shape,
                                                channels=info.channels, scale=info.scale,
                                                zero_point=info.zero_point)
                nodes.append(Kernel("LayoutConvert", lw.fresh(f"{name}.convert"), [src], [name],
                                    {"src": have, "dst": want, "channels": info.channels,
                                     "pad_value": int(info.zero_point or 0)}))
                current[name] = want
                converted[key] = name
                plan.conversions.append({"tensor": src, "src": have, "dst": want})
            k.inputs[i] = converted[key]
        if p.cls == "conv":
            pack_conv(lw, p)
        elif p.layout != PLAIN:
            if k.is_kernel:
                k.attrs["layout"] = p.layout
            for idx in p.channel_consts:
                name = k.inputs[idx]
                arr = prog.constants[name]
                if arr.size > 1:  # a per-channel constant, laid out like the activations
                    c = lw.prog.tensors[k.outputs[0]].channels
                    packed = lw.fresh(f"{name}.{p.layout}")
                    prog.constants[packed] = to_layout(arr.reshape(1, c, 1, 1), p.layout, 0)
                    prog.tensors[packed] = TensorInfo(name=packed, dtype=str(arr.dtype), layout=p.layout,
                                                      shape=[1, c, 1, 1], channels=c)
                    k.inputs[idx] = packed
        elif k.domain == DOMAIN and k.op in AGNOSTIC:
            k.attrs["layout"] = PLAIN
        for o in k.outputs:
            if o:
                lay = p.layout if (is_rank4(lw, o) or p.cls == "conv") else PLAIN
                current[o] = lay
                prog.tensors[o].layout = lay
        nodes.append(k)
    # graph outputs are delivered in NCHW
    for idx, o in enumerate(prog.outputs):
        if current.get(o, PLAIN) != PLAIN:
            info = prog.tensors[o]
            name = lw.fresh(f"{o}.NCHW")
            prog.tensors[name] = TensorInfo(name=name, dtype=info.dtype, shape=info.shape,
                                            channels=info.channels, scale=info.scale, zero_point=info.zero_point)
            nodes.append(Kernel("LayoutConvert", lw.fresh(f"{name}.convert"), [o], [name],
                                {"src": current[o], "dst": PLAIN, "channels": info.channels,
                                 "pad_value": int(info.zero_point or 0)}))
            plan.conversions.append({"tensor": o, "src": current[o], "dst": PLAIN})
            prog.outputs[idx] = name
    prog.nodes = nodes
    prog.plan = plan.to_json()
    prog.plan["stats"] = dict(lw.stats)
    used = {i for n in nodes for i in n.inputs if i}
    for name in [c for c in prog.constants if c not in used]:
        del prog.constants[name]
        prog.tensors.pop(name, None)
    prog.validate()
    return prog


def pack_conv(lw, p: Pending):
    prog, k, d = lw.prog, p.kernel, p.decision
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
