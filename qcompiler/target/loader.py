"""Finding target files, applying `extends`, and checking the resolved target.

Inheritance: a child starts from its parent's resolved target, applies its `drop`
statements (which must name something the parent has), then its other statements. A
statement replaces the parent's statement of the same kind (and name):

- `activation` / `weight` / `bias`: the whole role scheme; `ROLE for OP` overrides by (role, op)
- `pattern NAME`: by name, keeping the parent's position in the order; new names are appended
- `passthrough` / `share_scale` / `float`: the whole list
- `placement { KEY VALUE }`: by key
- `layout OPS ...`: the child's layout rules replace every parent rule for the ops they name
- `rounding`, `calibration`, `requant`, `accumulator`, `pad_channels`, `fallback`, `pipeline`, `isa`: replaced

A parent named in `extends NAME` is looked up first as `NAME.qtarget` next to the child
file, then among the shipped targets.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Iterable

from qcompiler.errors import TargetError
from qcompiler.target import names as N
from qcompiler.target.model import (
    LayoutRule,
    PatternDef,
    Placement,
    Pos,
    QuantScheme,
    Requant,
    Target,
)
from qcompiler.target.parser import Stmt, TargetDecl, error_at, parse_decl

SUFFIX = ".qtarget"
_LOAD_HINT = "give a shipped target name (`qcompiler targets` lists them) or a path to a .qtarget file"

_DEFAULT_BIAS = QuantScheme(role="bias", dtype="int32", symmetric=True, granularity="per_tensor",
                            narrow=False, reduce_range=False, pair_safe=False)

_shipped_cache: dict[str, Target] = {}


# --------------------------------------------------------------------------- locating files


def _shipped_dir():
    return resources.files("qcompiler.targets")


def shipped_target_names() -> list[str]:
    """Names of the targets that ship with qcompiler, sorted."""
    out = []
    for entry in _shipped_dir().iterdir():
        if entry.name.endswith(SUFFIX) and entry.is_file():
            out.append(entry.name[: -len(SUFFIX)])
    return sorted(out)


def shipped_target_path(name: str) -> str:
    """Where the shipped target `name` lives (for messages and `targets show`)."""
    return str(_shipped_dir().joinpath(name + SUFFIX))


def _read_shipped(name: str) -> tuple[str, str]:
    entry = _shipped_dir().joinpath(name + SUFFIX)
    return entry.read_text("utf-8"), str(entry)


def _read_file(path: Path, label: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TargetError(f"cannot read target file {label}: {exc.strerror or exc}",
                          _LOAD_HINT) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetError(f"{label}: not a UTF-8 text file (byte {exc.start})",
                          "target files are UTF-8 text") from None


def _looks_like_path(text: str) -> bool:
    return text.endswith(SUFFIX) or "/" in text or os.sep in text


# --------------------------------------------------------------------------- public API


def load_target(name_or_path: "str | os.PathLike | Target") -> Target:
    """Load a target: a shipped name ("arm64") or a path to a .qtarget file.

    A Target passed in is returned as it is. Raises TargetError (one line) on any problem.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(str(name_or_path)):
        label = os.fspath(name_or_path)
        path = Path(label)
        if not path.is_file():
            raise TargetError(f"target file not found: {label}", _LOAD_HINT)
        text = _read_file(path, label)
        return _resolve_text(text, label, path.parent)
    name = str(name_or_path)
    cached = _shipped_cache.get(name)
    if cached is not None:
        return cached
    shipped = shipped_target_names()
    if name not in shipped:
        raise TargetError(f"unknown target '{name}'{N.did_you_mean(name, shipped)}",
                          "shipped targets: " + ", ".join(shipped)
                          + "; or give a path to a .qtarget file")
    text, label = _read_shipped(name)
    target = _resolve_text(text, label, None)
    _shipped_cache[name] = target
    return target


def resolve_target(target):
    """None stays None; a name or path is loaded; a Target is returned as it is."""
    if target is None or isinstance(target, Target):
        return target
    return load_target(target)


def parse_target(text: str, filename: str = "<string>",
                 search_dir: str | os.PathLike | None = None) -> Target:
    """Parse and resolve target text. Parents come from `search_dir`, then shipped targets."""
    return _resolve_text(text, filename, Path(search_dir) if search_dir is not None else None)


def list_targets() -> list[tuple[str, str]]:
    """(name, description) of every shipped target, sorted by name."""
    return [(name, load_target(name).description) for name in shipped_target_names()]


# --------------------------------------------------------------------------- resolution


def _resolve_text(text: str, filename: str, directory: Path | None) -> Target:
    decl = parse_decl(text, filename)
    return _resolve(decl, directory, [])


def _find_parent(decl: TargetDecl, directory: Path | None) -> tuple[TargetDecl, Path | None]:
    name = decl.parent
    assert name is not None
    if directory is not None:
        candidate = directory / (name + SUFFIX)
        if candidate.is_file():
            label = str(candidate)
            return parse_decl(_read_file(candidate, label), label), directory
    shipped = shipped_target_names()
    if name in shipped:
        text, label = _read_shipped(name)
        return parse_decl(text, label), None
    known: list[str] = list(shipped)
    if directory is not None and directory.is_dir():
        known += [p.name[: -len(SUFFIX)] for p in directory.glob("*" + SUFFIX)]
    raise error_at(decl.parent_pos, f"unknown parent target '{name}'{N.did_you_mean(name, known)}",
                   "a parent is NAME.qtarget next to this file or a shipped target: "
                   + ", ".join(shipped))


def _resolve(decl: TargetDecl, directory: Path | None, stack: list[str]) -> Target:
    chain = stack + [decl.name]
    parent: Target | None = None
    if decl.parent is not None:
        if decl.parent in chain:
            raise error_at(decl.parent_pos,
                           "circular extends: " + " -> ".join(chain + [decl.parent]),
                           "a target cannot extend itself, directly or through its parents")
        pdecl, pdir = _find_parent(decl, directory)
        if pdecl.name != decl.parent:
            raise error_at(pdecl.name_pos,
                           f"this file declares target '{pdecl.name}' but is used as the "
                           f"parent '{decl.parent}' of '{decl.name}'",
                           "the file NAME.qtarget must declare `target NAME`")
        parent = _resolve(pdecl, pdir, chain)
    return _Resolver(decl, parent).run()


class _Resolver:
    def __init__(self, decl: TargetDecl, parent: Target | None):
        self.decl = decl
        self.parent = parent
        p = parent
        self.schemes: dict[str, QuantScheme | None] = {
            "activation": p.activation if p else None,
            "weight": p.weight if p else None,
            "bias": p.bias if p else None,
        }
        self.overrides: dict[tuple[str, str], QuantScheme] = {
            (o.role, o.op): o for o in (p.overrides if p else ())
        }
        self.single: dict[str, object] = {
            "rounding": p.rounding if p else "half_to_even",
            "calibration": p.calibration if p else "minmax",
            "requant": p.requant if p else Requant("float_scale"),
            "accumulator": p.accumulator if p else "int32",
            "pad_channels": p.pad_channels if p else None,
            "fallback": p.fallback_layout if p else "NCHW",
            "pipeline": p.pipeline if p else None,
            "isa": p.isa if p else (),
        }
        self.single_pos: dict[str, Pos | None] = {}
        self.patterns: dict[str, PatternDef] = {pt.name: pt for pt in (p.patterns if p else ())}
        self.oplists: dict[str, list[str]] = {
            "passthrough": list(p.passthrough_ops) if p else [],
            "share_scale": list(p.share_scale_ops) if p else [],
            "float": list(p.float_ops) if p else [],
        }
        self.oplist_pos: dict[tuple[str, str], Pos | None] = {}
        placement = p.placement if p else Placement()
        self.placement: dict[str, object] = dict(vars(placement))
        self.layout_rules: list[LayoutRule] = list(p.layout_rules if p else ())

    def fail(self, pos: Pos | None, message: str, hint: str | None = None):
        raise error_at(pos, message, hint)

    def run(self) -> Target:
        stmts = self.decl.statements
        for st in stmts:
            if st.kind == "drop":
                self.drop(st)
        child_rules: list[LayoutRule] = []
        for st in stmts:
            kind = st.kind
            if kind == "drop":
                continue
            if kind == "scheme":
                self.schemes[st.key] = st.value
            elif kind == "override":
                self.overrides[st.key] = st.value
            elif kind == "pattern":
                self.patterns[st.key] = st.value
            elif kind == "oplist":
                self.oplists[st.key] = list(st.value)
                for op, opos in zip(st.value, st.item_pos):
                    self.oplist_pos[(st.key, op)] = opos
            elif kind == "placement":
                self.placement[st.key] = st.value
            elif kind == "layout":
                child_rules.append(st.value)
            else:
                self.single[kind] = st.value
                self.single_pos[kind] = st.pos
        if child_rules:
            covered = {op for rule in child_rules for op in rule.ops}
            self.layout_rules = self._without_ops(self.layout_rules, covered) + child_rules
        return self.build()

    @staticmethod
    def _without_ops(rules: Iterable[LayoutRule], ops: set[str]) -> list[LayoutRule]:
        kept = []
        for rule in rules:
            rest = tuple(op for op in rule.ops if op not in ops)
            if rest == rule.ops:
                kept.append(rule)
            elif rest:
                kept.append(LayoutRule(rest, rule.layout, rule.input_layout, rule.constraints,
                                       rule.pos))
        return kept

    def drop(self, st: Stmt) -> None:
        kind, name = st.value
        if self.parent is None:
            self.fail(st.pos, f"'drop {kind} {name}' needs a parent: target '{self.decl.name}' "
                              "extends nothing", "drop removes something a parent target defines")
        pname = self.parent.name
        if kind == "pattern":
            if name not in self.patterns:
                self.fail(st.pos, f"cannot drop pattern '{name}': {pname} has no such pattern"
                                  f"{N.did_you_mean(name, self.patterns)}")
            del self.patterns[name]
        elif kind == "layout":
            if not any(name in r.ops for r in self.layout_rules):
                self.fail(st.pos, f"cannot drop layout {name}: {pname} has no layout rule for it")
            self.layout_rules = self._without_ops(self.layout_rules, {name})
        else:
            items = self.oplists[kind]
            if name not in items:
                self.fail(st.pos, f"cannot drop {name} from {kind}: it is not in {pname}'s "
                                  f"{kind} list{N.did_you_mean(name, items)}")
            items.remove(name)

    def build(self) -> Target:
        decl = self.decl
        for role in ("activation", "weight"):
            if self.schemes[role] is None:
                self.fail(decl.pos, f"target '{decl.name}' has no {role} scheme (required), e.g. "
                                    f"'{role} int8 symmetric per_tensor'")
        if not self.single["pipeline"]:
            self.fail(decl.pos, f"target '{decl.name}' has no pipeline (required), e.g. "
                                "'pipeline canonicalize, fold-bn, ...'")
        self._check_lists()
        return Target(
            name=decl.name,
            description=decl.description,
            activation=self.schemes["activation"],  # type: ignore[arg-type]
            weight=self.schemes["weight"],  # type: ignore[arg-type]
            bias=self.schemes["bias"] or _DEFAULT_BIAS,
            overrides=tuple(self.overrides.values()),
            rounding=self.single["rounding"],  # type: ignore[arg-type]
            calibration=self.single["calibration"],  # type: ignore[arg-type]
            requant=self.single["requant"],  # type: ignore[arg-type]
            accumulator=self.single["accumulator"],  # type: ignore[arg-type]
            patterns=tuple(self.patterns.values()),
            passthrough_ops=tuple(self.oplists["passthrough"]),
            share_scale_ops=tuple(self.oplists["share_scale"]),
            float_ops=tuple(self.oplists["float"]),
            placement=Placement(**self.placement),  # type: ignore[arg-type]
            layout_rules=tuple(self.layout_rules),
            pad_channels=self.single["pad_channels"],  # type: ignore[arg-type]
            fallback_layout=self.single["fallback"],  # type: ignore[arg-type]
            pipeline=tuple(self.single["pipeline"]),  # type: ignore[arg-type]
            isa=tuple(self.single["isa"]),  # type: ignore[arg-type]
            lineage=(decl.name,) + (self.parent.lineage if self.parent else ()),
            source=decl.file,
            pos=decl.pos,
        )

    def _where(self, kind: str, op: str) -> Pos | None:
        return self.oplist_pos.get((kind, op)) or self.decl.pos

    def _check_lists(self) -> None:
        floats = self.oplists["float"]
        for kind in ("passthrough", "share_scale"):
            for op in self.oplists[kind]:
                if op in floats:
                    pos = self._where(kind, op) if (kind, op) in self.oplist_pos else \
                        self._where("float", op)
                    self.fail(pos, f"{op} is listed both as float and as {kind}",
                              "an op either stays float or passes quantization through")
        anchors: dict[str, str] = {}
        for pt in self.patterns.values():
            for op in pt.anchor_ops:
                anchors.setdefault(op, pt.name)
        for op in floats:
            if op in anchors:
                pos = self._where("float", op)
                pat = self.patterns[anchors[op]]
                if (("float", op) not in self.oplist_pos) and pat.pos is not None:
                    pos = pat.pos
                self.fail(pos, f"{op} is listed as float but pattern '{anchors[op]}' makes it "
                               "INT8", f"drop the pattern or remove {op} from the float list")
