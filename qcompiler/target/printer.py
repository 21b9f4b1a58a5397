"""Target -> text in the target language.

`format_target` prints the RESOLVED target (inheritance applied, defaults written out), so
what it prints parses back to an equal Target and shows exactly what a build will use.
"""

from __future__ import annotations

from qcompiler.target.model import Constraint, LayoutRule, PatternDef, QuantScheme, Target

_WIDTH = 96


def _scheme_words(s: QuantScheme) -> list[str]:
    words = []
    if s.dtype is not None:
        words.append(s.dtype)
    if s.symmetric is not None:
        words.append("symmetric" if s.symmetric else "asymmetric")
    if s.granularity == "per_tensor":
        words.append("per_tensor")
    elif s.granularity == "per_channel":
        words.append(f"per_channel(axis={s.axis})")
    if s.narrow:
        words.append("narrow")
    if s.reduce_range:
        words.append("reduce_range")
    if s.pair_safe:
        words.append("pair_safe")
    return words


def format_scheme(s: QuantScheme) -> str:
    head = s.role if s.op is None else f"{s.role} for {s.op}"
    return f"{head:<11} " + " ".join(_scheme_words(s))


def format_constraints(constraints: tuple[Constraint, ...]) -> str:
    return " and ".join(str(c) for c in constraints)


def format_pattern(p: PatternDef) -> str:
    """One line when it fits, else the where/benefit clauses on their own lines."""
    head = f"pattern {p.name} : {p.chain_text()}"
    where = f"where {format_constraints(p.constraints)}" if p.constraints else ""
    one = " ".join(x for x in (head, where, f"benefit {p.benefit}") if x)
    if len(one) + 2 <= _WIDTH:
        return one
    return "\n".join([head] + [f"    {x}" for x in (where, f"benefit {p.benefit}") if x])


def format_layout_rule(r: LayoutRule) -> str:
    text = f"layout {', '.join(r.ops)} {r.layout}"
    if r.input_layout:
        text += f" input {r.input_layout}"
    if r.constraints:
        text += f" when {format_constraints(r.constraints)}"
    return text


def _list_stmt(keyword: str, items: tuple[str, ...], indent: str) -> list[str]:
    """`keyword a, b, c`, wrapped after a comma when a line grows past the width."""
    lines: list[str] = []
    current = f"{indent}{keyword} "
    cont = indent + " " * (len(keyword) + 1)
    fresh = True
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if not fresh and len(current) + 1 + len(piece) > _WIDTH:
            lines.append(current)
            current, fresh = cont, True
        current += piece if fresh else " " + piece
        fresh = False
    lines.append(current)
    return lines


def format_target(target: Target) -> str:
    """The resolved target as target-language text that parses back to an equal Target."""
    ind = "  "
    out: list[str] = []
    if len(target.lineage) > 1:
        out.append("# resolved: " + " <- ".join(target.lineage) + " (inheritance applied)")
    out.append(f'target {target.name} "{target.description}" {{')
    out.append(f"{ind}# quantization")
    for s in (target.activation, target.weight, target.bias, *target.overrides):
        out.append(ind + format_scheme(s))
    out.append(f"{ind}{'accumulator':<11} {target.accumulator}")
    out.append(f"{ind}{'rounding':<11} {target.rounding}")
    out.append(f"{ind}{'calibration':<11} {target.calibration}")
    req = target.requant
    req_text = f"{req.style}({req.precision})" if req.precision else req.style
    out.append(f"{ind}{'requant':<11} {req_text}")
    if target.patterns:
        out.append("")
        out.append(f"{ind}# legal INT8 patterns")
        for p in target.patterns:
            out.extend(ind + line for line in format_pattern(p).split("\n"))
    lists = (("passthrough", target.passthrough_ops), ("share_scale", target.share_scale_ops),
             ("float", target.float_ops))
    if any(items for _, items in lists):
        out.append("")
        out.append(f"{ind}# op lists")
        for kw, items in lists:
            if items:
                out.extend(_list_stmt(kw, items, ind))
    out.append("")
    out.append(f"{ind}placement {{")
    pl = target.placement
    for key, value in vars(pl).items():
        text = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) \
            else value
        out.append(f"{ind}{ind}{key} {text}")
    out.append(f"{ind}}}")
    out.append("")
    out.append(f"{ind}# layouts")
    for rule in target.layout_rules:
        out.append(ind + format_layout_rule(rule))
    if target.pad_channels is not None:
        out.append(f"{ind}pad_channels {target.pad_channels}")
    out.append(f"{ind}fallback {target.fallback_layout}")
    out.append("")
    out.extend(_list_stmt("pipeline", target.pipeline, ind))
    if target.isa:
        out.extend(_list_stmt("isa", target.isa, ind))
    out.append("}")
    return "\n".join(out) + "\n"
