"""The layout of each conv, decided from the target's layout rules.

The only layout decider: lower-layout's plan and the program export both call
`decide_conv`. Rules, channel padding, the fallback layout and the constraint evaluator
are the target's (`Target.layout_rules_for`, `qcompiler.target.patterns.check_constraint`);
this module only knows what each layout needs of a conv's channel counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import TargetError
from ..target import Target, load_target
from ..target.patterns import check_constraint
from .layouts import LAYOUTS, PLAIN, block_of, is_blocked, round_up

__all__ = ["ConvDecision", "decide_conv", "resolve_target"]


# ============================================================================= the target

def resolve_target(target) -> Target:
    """The Target lowering reads: a resolved Target, or a shipped name / .qtarget path.
    Every fact lowering uses (layout rules, padding, fallback, rounding, requant style)
    comes from it; lowering has no target facts of its own."""
    if target is None:
        raise TargetError("lowering needs a target", "pass a target name such as 'arm64' or a .qtarget path")
    if not isinstance(target, Target):
        target = load_target(target)
    for r in target.layout_rules:
        if r.layout not in LAYOUTS:
            raise TargetError(f"target '{target.name}' names layout '{r.layout}', which lowering does not know",
                              f"use one of {', '.join(LAYOUTS)}")
    return target


# ============================================================================= conv decisions

@dataclass
class ConvDecision:
    node: str  # ONNX node name
    layout: str
    input_layout: str
    kind: str  # dense | first | depthwise | group
    ic: int
    oc: int
    group: int
    ic_padded: int
    oc_padded: int
    reason: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _rule_holds(rule, env) -> bool:
    return all(check_constraint(c, env, "conv") is None for c in rule.constraints)


def decide_conv(node: str, ic: int, oc: int, group: int, kernel: Sequence[int], stride: Sequence[int],
                dilation: Sequence[int], target: Target) -> ConvDecision:
    """The layout of one conv: the first rule that holds; else with channels padded to the
    target's pad_channels (output channels first, then input channels, then both); else
    the fallback layout. The reason says which and why."""
    depthwise = group > 1 and group == ic and group == oc
    env0 = {"ic": ic, "oc": oc, "group": group, "kernel": tuple(kernel), "stride": tuple(stride),
            "dilation": tuple(dilation)}
    rules = target.layout_rules_for("Conv")
    p = target.pad_channels
    attempts = [(ic, oc, group)]
    if p:
        P = lambda n: round_up(n, p)  # noqa: E731
        if depthwise:
            attempts.append((P(ic), P(oc), P(group)))
        elif group == 1:
            attempts += [(ic, P(oc), 1), (P(ic), oc, 1), (P(ic), P(oc), 1)]
    seen = set()
    refusals = []
    for a_ic, a_oc, a_g in attempts:
        if (a_ic, a_oc, a_g) in seen:
            continue
        seen.add((a_ic, a_oc, a_g))
        env = dict(env0, ic=a_ic, oc=a_oc, group=a_g)
        for rule in rules:
            if not _rule_holds(rule, env):
                continue
            d = _decision(node, ic, oc, group, rule, target, padded=(a_ic, a_oc) != (ic, oc))
            if isinstance(d, str):
                refusals.append(d)
                continue
            return d
    layouts = sorted({r.layout for r in rules})
    if refusals:
        why = refusals[0]
    elif not rules:
        why = f"target {target.name} has no conv layout rule"
    else:
        pad = f" (also with channels padded to {p})" if p else ""
        why = (f"no {'/'.join(layouts)} rule holds for IC={ic}, OC={oc}, group={group}{pad}")
    fb = target.fallback_layout
    kind = "depthwise" if depthwise else ("group" if group > 1 else "dense")
    return ConvDecision(node, fb, fb, kind, ic, oc, group, ic, oc, f"{why}: keeps {fb}")


def _decision(node, ic, oc, group, rule, target, padded):
    layout = rule.layout
    k = block_of(layout)
    depthwise = group > 1 and group == ic and group == oc
    first = (group == 1 and rule.input_layout not in (None, layout) and layout in ("NCHW44", "NCHW44_DOT")
             and ic < 4)
    notes = []
    if depthwise:
        kind = "depthwise"
        icp = ocp = round_up(ic, k)
        text = f"depthwise: channel-wise {layout}"
        if icp != ic:
            notes.append(f"G={ic} not a multiple of {k}: padded to {icp}")
    elif group > 1:
        kind = "group"
        icg, ocg = ic // group, oc // group
        if is_blocked(layout) and (icg % k or ocg % k):
            return (f"group={group} with IC/g={icg}, OC/g={ocg}: grouped {layout} needs whole "
                    f"blocks of {k} per group")
        icp, ocp = ic, oc
        text = f"group={group} (IC/g={icg}, OC/g={ocg}): grouped {layout}"
    elif first:
        kind = "first"
        icp, ocp = ic, round_up(oc, k)
        text = f"IC={ic}: first-layer {layout} packing"
        if ocp != oc:
            notes.append(f"OC={oc} not a multiple of {k}: padded to {ocp}")
    else:
        kind = "dense"
        icp, ocp = round_up(ic, k), round_up(oc, k)
        if icp != ic:
            notes.append(f"IC={ic} not a multiple of {k}: padded to {icp}")
        if ocp != oc:
            notes.append(f"OC={oc} not a multiple of {k}: padded to {ocp}")
        text = f"IC={ic}, OC={oc}: dense {layout}" if not notes else f"dense {layout}"
    if (icp != ic or ocp != oc) and not target.pad_channels:
        return f"channels not a multiple of {k} and the target does not pad channels"
    reason = "; ".join(notes + [text]) if kind == "dense" else "; ".join([text] + notes)
    in_layout = PLAIN if kind == "first" else layout
    return ConvDecision(node, layout, in_layout, kind, ic, oc, group, icp, ocp, reason)
