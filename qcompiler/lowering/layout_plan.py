"""The layout plan: a layout for every conv from the target's layout rules (conv_layout),
layout-agnostic kernels (add, mul, requant, lut, pooling, resize, concat, elementwise
float ops) following their inputs where their channels allow, everything else NCHW.
Conversions are counted where emission inserts them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .conv_layout import ConvDecision, decide_conv
from .layouts import PLAIN, block_of
from .recognise.state import Pending

__all__ = ["LayoutPlan", "plan_kernel_layouts"]


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


def plan_kernel_layouts(lw, stored: Optional[dict] = None) -> LayoutPlan:
    plan = LayoutPlan(target=lw.target.name, no_program_kernel=dict(lw.no_program_kernel))
    given = {}
    if stored and stored.get("target") == lw.target.name:
        given = {d["node"]: d for d in stored.get("convs", [])}
    layout_of: Dict[str, str] = {n: PLAIN for n in lw.prog.tensors}
    for p in lw.pending:
        k = p.kernel
        if p.cls == "conv":
            c = p.conv
            if c["onnx_node"] in given:
                d = ConvDecision(**given[c["onnx_node"]])
            else:
                d = decide_conv(c["onnx_node"], c["ic"], c["oc"], c["group"], c["kernel"], c["stride"],
                                c["dilation"], lw.target)
            p.decision = d
            p.layout = d.layout
            plan.convs.append(d)
        elif p.cls == "agnostic":
            p.layout = agnostic_layout(lw, p, layout_of)
        else:
            p.layout = PLAIN
        for o in k.outputs:
            if o:
                layout_of[o] = p.layout if is_rank4(lw, o) or p.cls == "conv" else PLAIN
        plan.kernels[k.name] = p.layout
    return plan


def is_rank4(lw, name) -> bool:
    info = lw.prog.tensors.get(name)
    return info is not None and info.shape is not None and len(info.shape) == 4


def agnostic_layout(lw, p: Pending, layout_of) -> str:
    k = p.kernel
    acts = [k.inputs[i] for i in p.act_inputs]
    cands = [layout_of.get(t, PLAIN) for t in acts]
    choice = next((c for c in cands if c != PLAIN), PLAIN)
    if choice == PLAIN:
        return PLAIN
    infos = [lw.prog.tensors[t] for t in acts]
    if any(i.shape is None or len(i.shape) != 4 or i.channels is None for i in infos):
        return PLAIN
    if not all(is_rank4(lw, o) and lw.prog.tensors[o].channels is not None for o in k.outputs if o):
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
            arr = lw.prog.constants[k.inputs[idx]]
            if not (arr.size == 1 or _per_channel_shape(arr.shape, c)):
                return PLAIN
        out = lw.prog.tensors[k.outputs[0]]
        if out.channels != c:
            return PLAIN
    return choice


def _per_channel_shape(shape, c) -> bool:
    s = tuple(shape)
    return s in ((1, c, 1, 1), (c, 1, 1))
