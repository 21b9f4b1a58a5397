"""Declarative graph rewrites written in the target language's pattern syntax.

    from qcompiler.rewrite import rewrite, explain

    def fused(b, m):                       # b: the IR's gateway (+ b.op), m: the Match
        conv = m["Conv"]
        return b.op("FusedConv", *conv.inputs, domain="com.microsoft",
                    activation="Relu", **conv.attrs)

    result = rewrite(ir, "Conv(x, w:const, b?:const) -> Relu", fused)
    result.rewritten, result.rejected      # counts and reasons, for the pass report
    explain(ir, "Conv(x, w:const) -> Relu", "conv3")   # why it does not match there

Semantics (docs/rewrite.md has the long form):
- Anchors are the nodes present when `rewrite` starts whose op opens the pattern, visited
  in the IR's node order (topological: the pass manager sorts after every pass), in the
  default ONNX domain. The first match wins: its nodes are never part of a later match.
- A match never swallows a tensor that is a graph output or read outside the match, except
  the last node's first output (the matcher's chain rule; a match's nodes may not expose a
  second output in use either).
- `check(match)` returns None to accept or a reason (str) to reject; rejected matches take
  no nodes.
- `replacement(builder, match)` edits the graph through the IR's gateway. It returns the
  tensor that now carries the match's output (then every reader of the old output, graph
  output included, reads it and the match's nodes nobody reads any more are dropped), or
  None when it changed what it needed in place (an annotation, an input).
- `repeat=True`: after a rewrite that dropped nodes but kept its anchor, the anchor is
  matched again (Conv -> BatchNormalization -> BatchNormalization folds both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Optional, Union

from qcompiler.errors import UsageError
from qcompiler.target.model import PatternDef
from qcompiler.target.parser import parse_pattern
from qcompiler.target.patterns import Failure, Match, Matcher, compile_pattern

Pattern = Union[str, PatternDef, Matcher]
Check = Callable[[Match], Optional[str]]
DEFAULT_DOMAINS = ("", None, "ai.onnx")


@dataclass
class RewriteResult:
    """What one `rewrite` call did: matched = rewritten + rejected."""

    name: str
    pattern: str
    matched: int = 0
    rewritten: int = 0
    rejected: list = field(default_factory=list)  # (anchor node name, reason), in node order

    def report(self) -> dict:
        """For `ctx.pass_report(...)`: counts, and each rejection's reason by anchor."""
        return {"matched": self.matched, "rewritten": self.rewritten,
                "rejected": dict(self.rejected)}

    def __bool__(self) -> bool:
        return self.rewritten > 0


class Builder:
    """The IR's mutation gateway for a replacement: every IR method (`constant`,
    `add_node`, `set_input`, `replace_node`, ...) plus `op`, which adds one node."""

    def __init__(self, ir, match: Match):
        self.ir = ir
        self.match = match

    def __getattr__(self, name: str):
        return getattr(self.ir, name)

    def op(self, op: str, *inputs, domain: Optional[str] = None, name: Optional[str] = None,
           **attrs):
        """Add an `op` node reading `inputs`; returns its output tensor. The node is named
        after the match's last node unless `name` is given."""
        node = self.ir.add_node(op, list(inputs), attrs=attrs, domain=domain,
                                name=name or f"{self.match.nodes[-1].name}_{op}")
        return node.outputs[0]


def matcher(pattern: Pattern, name: str = "rewrite") -> Matcher:
    """A compiled pattern: text (the target language's chain syntax), a PatternDef or a
    Matcher. Bad text raises TargetError with the position."""
    if isinstance(pattern, Matcher):
        return pattern
    if isinstance(pattern, PatternDef):
        return compile_pattern(pattern)
    if isinstance(pattern, str):
        return _compiled(pattern, name)
    raise UsageError(f"a rewrite pattern must be text or a compiled Matcher, got "
                     f"{type(pattern).__name__}", "e.g. 'Conv(x, w:const) -> Relu'")


@lru_cache(maxsize=256)
def _compiled(text: str, name: str) -> Matcher:
    return compile_pattern(parse_pattern(text, name))


def match(ir, pattern: Pattern, node) -> Union[Match, Failure]:
    """The pattern matched at `node` (a Match), or why not (a falsy Failure with `.reason`)."""
    return _match(matcher(pattern), node, {id(t) for t in ir.graph.outputs}, set(), set())


def _match(m: Matcher, node, graph_outputs: set, taken: set, dead) -> Union[Match, Failure]:
    result = m.match_ids(node, graph_outputs, taken, dead)
    if not result:
        return result
    foreign = next((n for n in result.nodes if n.domain not in DEFAULT_DOMAINS), None)
    if foreign is not None:
        return Failure(m.name, node, f"{foreign.op} '{foreign.name}' is in domain "
                                     f"'{foreign.domain}'; patterns name default-domain ONNX ops")
    return result


def _exposed_output(m: Match, graph_outputs: set, dead: set) -> Optional[str]:
    """A reason when a matched node's second output is in use (the match would hide it)."""
    for node in m.nodes:
        for t in node.outputs[1:]:
            if id(t) in graph_outputs or any(id(c) not in dead for c in t.outputs):
                return f"{node.op} '{node.name}' has a second output in use ('{t.name}')"
    return None


def _unread(node, graph_outputs: set, dead: set) -> bool:
    return bool(node.outputs) and not any(
        id(t) in graph_outputs or any(id(c) not in dead for c in t.outputs) for t in node.outputs)


def rewrite(ir, pattern: Pattern, replacement: Callable[[Builder, Match], Any], *,
            check: Optional[Check] = None, name: Optional[str] = None,
            repeat: bool = False) -> RewriteResult:
    """Rewrite every match of `pattern` in `ir` (see the module docstring)."""
    m = matcher(pattern, name or "rewrite")
    result = RewriteResult(name or m.name, m.pattern.chain_text())
    anchors = set(m.pattern.anchor_ops)
    taken: set[int] = set()
    dead: dict[int, Any] = {}  # dropped nodes, removed in one go at the end
    graph_outputs = {id(t) for t in ir.graph.outputs}  # again after each replacement
    for node in [n for n in ir.graph.nodes if n.op in anchors]:
        while id(node) not in dead and id(node) not in taken and node.outputs:
            found = _match(m, node, graph_outputs, taken, dead)
            if not found:
                break
            result.matched += 1
            why = (check(found) if check is not None else None) or \
                _exposed_output(found, graph_outputs, dead)
            if why:
                result.rejected.append((node.name, why))
                break
            old = found.output  # before the replacement: it may move the last node's outputs
            new = replacement(Builder(ir, found), found)
            result.rewritten += 1
            dropped = 0
            if new is not None and new is not old:
                ir.replace_uses(old, new)
            graph_outputs = {id(t) for t in ir.graph.outputs}
            if new is not None:
                for n in reversed(found.nodes):  # readers first: a chain dies from its end
                    if _unread(n, graph_outputs, dead):
                        dead[id(n)] = n
                        dropped += 1
            taken.update(id(n) for n in found.nodes)
            if not (repeat and dropped and id(node) not in dead):
                break
            taken.discard(id(node))  # match again at the surviving anchor
    ir.remove_nodes(dead.values())
    return result


def explain(ir, pattern: Pattern, node_name: str, *, check: Optional[Check] = None) -> str:
    """One sentence: why `pattern` does (not) match at the node named `node_name`."""
    m = matcher(pattern)
    node = next((n for n in ir.graph.nodes if n.name == node_name), None)
    if node is None:
        import difflib

        near = difflib.get_close_matches(node_name, [n.name for n in ir.graph.nodes], n=1)
        raise UsageError(f"no node named '{node_name}' in the graph",
                         f"did you mean '{near[0]}'?" if near else "node names are in "
                         "'qcompiler inspect MODEL' or the --dump-dir .txt files")
    text = m.pattern.chain_text()
    found = match(ir, m, node)
    if not found:
        return f"{text} does not match at {node.op} '{node.name}': {found.reason}"
    chain = " -> ".join(f"{n.op} '{n.name}'" for n in found.nodes)
    why = (check(found) if check is not None else None) or \
        _exposed_output(found, {id(t) for t in ir.graph.outputs}, set())
    if why:
        return f"{text} matches {chain}, but the match is rejected: {why}"
    return f"{text} matches {chain}"


def register_rewrite(pass_name: str, pattern: Pattern, *, check: Optional[Check] = None,
                     requires=("canonical",), provides=(), repeat: bool = False):
    """Decorator: a replacement function becomes a registered pass that rewrites
    `pattern` and reports the RewriteResult counts."""
    from qcompiler.pipeline.registry import Pass, register_pass

    def wrap(replacement):
        def run(self, ir, ctx) -> bool:
            result = rewrite(ir, pattern, replacement, check=check, name=pass_name,
                             repeat=repeat)
            ctx.pass_report(self.name).update(result.report())
            return bool(result)

        doc = (replacement.__doc__ or f"rewrite {pattern}").strip()
        cls = type(replacement.__name__, (Pass,), {"run": run, "__doc__": doc,
                                                   "__module__": replacement.__module__})
        register_pass(pass_name, requires=requires, provides=provides)(cls)
        return replacement

    return wrap
