"""Patterns compiled to matchers over onnx-graphsurgeon graphs.

One matcher serves the fusion passes and target legality. It needs nothing but gs nodes
and tensors (`op`, `inputs`, `outputs`, `attrs`, `name`; tensors' producers and consumers)
plus the graph, to see which tensors are graph outputs.

    m = compile_pattern(target.pattern("conv_act")).match(node, graph)
    if m:   m.nodes, m.bindings["w"], m.pattern
    else:   m.reason   # "input channels 6 are not a multiple of 4"

Semantics of a chain `A(...) -> B? -> C`:
- the match is anchored at a node whose op is one of the first step's ops;
- each later step is the single consumer of the previous step's first output, and that
  output must be neither a graph output nor read by any other node: a fused kernel cannot
  expose its intermediate values. Where that fails the chain stops; an optional step is
  then skipped, a required one makes the whole match fail with the reason;
- in a later step the previous output is the first input (either input for commutative
  binary ops such as Add and Mul) and the operand list, when given, lists all inputs with
  the chained one first;
- `where` constraints are checked on the anchor node. Variables: ic, oc (from the weight's
  shape when it is known, else from the activation shapes), group, kernel, stride,
  dilation (one value per spatial axis: a constraint holds when it holds on every axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable

import onnx_graphsurgeon as gs

from qcompiler.target.model import Constraint, LayoutRule, Operand, PatternDef, Step, Target, Term
from qcompiler.target.names import CONSTRAINT_VARS

COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum", "Mean", "And", "Or", "Xor", "Equal",
                         "BitwiseAnd", "BitwiseOr", "BitwiseXor"})
# ops whose input 1 is a weight and input 2 a bias (for reason wording and variables)
WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger"})
# nodes the legality report never lists: they are the quantization itself or constants
_SILENT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                         "Constant"})


# --------------------------------------------------------------------------- results


@dataclass
class Match:
    """A successful match: the nodes in chain order, operand bindings, the pattern.

    `slots` holds one entry per pattern step: its node, or None for a skipped optional
    step. `m["w"]` is an operand's tensor, `m["Relu"]` the node of the step that matched
    that op; either is None where an optional part is absent (KeyError: not in the pattern).
    """

    pattern: str
    nodes: list
    bindings: dict[str, Any]
    benefit: int
    pattern_def: PatternDef = field(repr=False)
    slots: tuple = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, name: str):
        if name in self.bindings:
            return self.bindings[name]
        for node in self.slots:
            if node is not None and node.op == name:
                return node
        steps = self.pattern_def.steps
        if any(o.name == name for s in steps for o in (s.operands or ()) if o.bound) or \
                any(name in s.ops for s in steps):
            return None  # an optional operand or step that is absent here
        names = [o.name for s in steps for o in (s.operands or ()) if o.bound]
        names += [op for s in steps for op in s.ops]
        raise KeyError(f"'{name}' is not in pattern {self.pattern_def.chain_text()!r} "
                       f"(names: {', '.join(dict.fromkeys(names))})")

    def get(self, name: str, default=None):
        value = self[name]
        return default if value is None else value

    @property
    def anchor(self):
        return self.nodes[0]

    @property
    def output(self):
        """The tensor the fused kernel produces (the last node's first output)."""
        return self.nodes[-1].outputs[0]


@dataclass
class Failure:
    """Why a pattern did not match at a node (`reason` is one human sentence)."""

    pattern: str
    node: Any
    reason: str
    progress: int = 0  # how far the matcher got; the report shows the furthest failure

    def __bool__(self) -> bool:
        return False


# --------------------------------------------------------------------------- tensor facts


def _present(t) -> bool:
    return t is not None and bool(getattr(t, "name", ""))


def _producer(t):
    ins = getattr(t, "inputs", None) or []
    return ins[0] if ins else None


# ops whose output is a compile-time constant when all their inputs are
_CONST_PRESERVING = frozenset({"DequantizeLinear", "Identity", "Cast"})


def _const_root(t, depth: int = 0):
    """The gs.Constant (or Constant node) a tensor folds down to, or None."""
    if isinstance(t, gs.Constant):
        return t
    prod = _producer(t)
    if prod is None or depth > 8:
        return None
    if prod.op == "Constant":
        return prod
    if prod.op in _CONST_PRESERVING and prod.inputs and all(
            _const_root(i, depth + 1) is not None for i in prod.inputs if _present(i)):
        return _const_root(prod.inputs[0], depth + 1)
    return None


def is_const(t) -> bool:
    """A compile-time constant: a gs.Constant, a Constant node's output, or a
    DequantizeLinear / Identity / Cast of constants (a quantized weight in a Q/DQ graph)."""
    return _const_root(t) is not None


def tensor_shape(t) -> tuple[int, ...] | None:
    """The tensor's shape when every dimension is a known integer, else None."""
    if t is None:
        return None
    shape = None
    if getattr(t, "shape", None) is not None:
        shape = tuple(t.shape)
    if shape is None or not all(isinstance(d, int) for d in shape):
        root = _const_root(t)
        if isinstance(root, gs.Constant):
            shape = tuple(root.shape)
        elif root is not None and "value" in root.attrs:  # a Constant node
            shape = tuple(getattr(root.attrs["value"], "shape", ()) or ())
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return shape


def _input(node, i):
    return node.inputs[i] if i < len(node.inputs) and _present(node.inputs[i]) else None


def _ints(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value)
    except TypeError:
        return None


def node_variables(node) -> dict[str, Any]:
    """Constraint variables of a node: ints, tuples (per spatial axis) or None (unknown)."""
    op, attrs = node.op, node.attrs
    x, w = _input(node, 0), _input(node, 1)
    out = node.outputs[0] if node.outputs else None
    xs, ws, os_ = tensor_shape(x), tensor_shape(w), tensor_shape(out)
    group = int(attrs.get("group", 1) or 1)
    ic = oc = None
    kernel = _ints(attrs.get("kernel_shape"))
    if op in ("Conv", "ConvInteger") and ws is not None and len(ws) >= 3:
        oc, ic = ws[0], ws[1] * group
        kernel = kernel or tuple(ws[2:])
    elif op == "ConvTranspose" and ws is not None and len(ws) >= 3:
        ic, oc = ws[0], ws[1] * group
        kernel = kernel or tuple(ws[2:])
    elif op in ("MatMul", "MatMulInteger") and ws is not None and len(ws) >= 2:
        ic, oc = ws[-2], ws[-1]
    elif op == "Gemm" and ws is not None and len(ws) == 2:
        ic, oc = (ws[1], ws[0]) if int(attrs.get("transB", 0)) else (ws[0], ws[1])
    if ic is None:
        if op in ("MatMul", "Gemm", "MatMulInteger"):
            ic = xs[-1] if xs else None
            oc = os_[-1] if os_ else None
        else:
            ic = xs[1] if xs is not None and len(xs) >= 2 else None
            oc = os_[1] if os_ is not None and len(os_) >= 2 else None
    spatial = len(kernel) if kernel else (len(xs) - 2 if xs is not None and len(xs) > 2 else 1)
    stride = _ints(attrs.get("strides")) or (1,) * spatial
    dilation = _ints(attrs.get("dilations")) or (1,) * spatial
    return {"ic": ic, "oc": oc, "group": group, "kernel": kernel, "stride": stride,
            "dilation": dilation}


# --------------------------------------------------------------------------- constraints


def _term_value(term: Term, env: dict[str, Any]):
    if term.var is None:
        return term.value
    value = env.get(term.var)
    if value is None or term.modulo is None:
        return value
    if isinstance(value, tuple):
        return tuple(v % term.modulo for v in value)
    return value % term.modulo


_CMP = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _pairs(a, b) -> list[tuple[int, int]] | None:
    ta, tb = isinstance(a, tuple), isinstance(b, tuple)
    if ta and tb:
        return list(zip(a, b)) if len(a) == len(b) else None
    if ta:
        return [(v, b) for v in a]
    if tb:
        return [(a, v) for v in b]
    return [(a, b)]


def _show(value) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value) if value else "()"
    return str(value)


def check_constraint(c: Constraint, env: dict[str, Any], what: str) -> str | None:
    """None when `c` holds on `env`; otherwise the reason, in words. `what` names the node."""
    for var in c.variables:
        if env.get(var) is None:
            return f"cannot check '{c}': {CONSTRAINT_VARS[var]} of {what} is unknown"
    lhs = _term_value(c.lhs, env)
    if c.values is not None:
        items = list(lhs) if isinstance(lhs, tuple) else [lhs]
        inside = all(v in c.values for v in items)
        if inside == (c.op == "in"):
            return None
        raw = env[c.lhs.var]
        shown = f"{c.lhs} = {_show(lhs)}" if c.lhs.modulo is not None else \
            f"{CONSTRAINT_VARS[c.lhs.var]} {_show(raw)}"
        verb = "is not in" if c.op == "in" else "is in"
        return f"{shown} {verb} [{', '.join(str(v) for v in c.values)}]"
    assert c.rhs is not None
    rhs = _term_value(c.rhs, env)
    pairs = _pairs(lhs, rhs)
    if pairs is not None and all(_CMP[c.op](a, b) for a, b in pairs):
        return None
    var = c.lhs.var or c.rhs.var
    raw = env[var]
    human = CONSTRAINT_VARS[var]
    if (c.lhs.var and c.lhs.modulo and c.op == "==" and c.rhs.var is None
            and c.rhs.value == 0):
        verb = "are" if var in ("ic", "oc") else "is"
        return f"{human} {_show(raw)} {verb} not a multiple of {c.lhs.modulo}"
    values = ", ".join(f"{v}={_show(env[v])}" for v in dict.fromkeys(c.variables))
    return f"needs {c}, but {values}"


# --------------------------------------------------------------------------- matcher


def _describe_node(node) -> str:
    return f"{node.op} '{node.name}'" if node.name else node.op


def _operand_label(node, index: int, operand: Operand) -> str:
    if node.op in WEIGHTED and index == 1:
        role = "weight"
    elif node.op in WEIGHTED and index == 2:
        role = "bias"
    else:
        role = f"input {index}"
    name = "" if operand.name == "_" else f" ({operand.name})"
    return f"{role}{name}"


def _ops_text(step: Step) -> str:
    return step.ops[0] if len(step.ops) == 1 else " or ".join(step.ops)


class Matcher:
    """A compiled pattern. `match(node, graph)` -> Match or Failure."""

    def __init__(self, pattern: PatternDef):
        self.pattern = pattern
        self.name = pattern.name
        self.steps = pattern.steps

    def __repr__(self) -> str:
        return f"<Matcher {self.name}: {self.pattern.chain_text()}>"

    def match(self, node, graph=None, exclude: Iterable | None = None,
              dead: Iterable | None = None) -> Match | Failure:
        """Match anchored at `node`. `graph` (gs.Graph or an object with `.graph`) lets the
        matcher see graph outputs; nodes in `exclude` (ids or nodes) are never taken;
        nodes in `dead` (ids or nodes: dropped by a rewrite, removed later) read nothing."""
        g = _graph_of(graph) if graph is not None else None
        graph_outputs = {id(t) for t in g.outputs} if g is not None else set()
        excluded = {x if isinstance(x, int) else id(x) for x in (exclude or ())}
        gone = {x if isinstance(x, int) else id(x) for x in (dead or ())}
        return self._match(node, graph_outputs, excluded, None, gone)

    def match_ids(self, node, graph_outputs, excluded, dead) -> Match | Failure:
        """`match` for whole-graph drivers that keep the id sets themselves (no copies):
        ids of the graph outputs, of nodes never to take, of dropped nodes."""
        return self._match(node, graph_outputs, excluded, None, dead)

    def _match(self, node, graph_outputs: set, excluded: set, env_cache: dict | None,
               dead: set | frozenset = frozenset()):
        first = self.steps[0]
        if node.op not in first.ops:
            return Failure(self.name, node, f"{node.op} is not {_ops_text(first)}", 0)
        if id(node) in excluded:
            return Failure(self.name, node, f"{_describe_node(node)} already belongs to "
                                            "another match", 0)
        bindings: dict[str, Any] = {}
        why = self._bind(first, node, None, bindings)
        if why:
            return Failure(self.name, node, why, 1)
        if self.pattern.constraints:
            env = env_cache.get(id(node)) if env_cache is not None else None
            if env is None:
                env = node_variables(node)
                if env_cache is not None:
                    env_cache[id(node)] = env
            for c in self.pattern.constraints:
                why = check_constraint(c, env, _describe_node(node))
                if why:
                    return Failure(self.name, node, why, 2)
        result = self._chain(1, [node], bindings, graph_outputs, excluded, (node,), dead)
        if isinstance(result, str):
            return Failure(self.name, node, result, 3)
        nodes, bindings, slots = result
        return Match(self.name, nodes, bindings, self.pattern.benefit, self.pattern, slots)

    # -- chain
    def _chain(self, i: int, nodes: list, bindings: dict, graph_outputs: set, excluded: set,
               slots: tuple, dead: set | frozenset):
        """Extend the chain from step i; returns (nodes, bindings, slots) or a failure reason."""
        if i == len(self.steps):
            return nodes, bindings, slots
        step = self.steps[i]
        prev = nodes[-1]
        cand, why = self._next(prev, step, graph_outputs, excluded, dead)
        if cand is not None:
            trial = dict(bindings)
            why = self._bind(step, cand, prev.outputs[0], trial)
            if not why:
                found = self._chain(i + 1, nodes + [cand], trial, graph_outputs, excluded,
                                    slots + (cand,), dead)
                if not isinstance(found, str):
                    return found
                why = found
        if step.optional:
            return self._chain(i + 1, nodes, bindings, graph_outputs, excluded, slots + (None,),
                               dead)
        return why or f"no {_ops_text(step)} after {_describe_node(prev)}"

    def _next(self, prev, step: Step, graph_outputs: set, excluded: set, dead):
        if not prev.outputs:
            return None, f"{_describe_node(prev)} has no output"
        out = prev.outputs[0]
        for extra in prev.outputs[1:]:
            if any(id(c) not in dead for c in extra.outputs) or id(extra) in graph_outputs:
                return None, (f"{_describe_node(prev)} has a second output in use, so it "
                              f"cannot be fused with a following {_ops_text(step)}")
        if id(out) in graph_outputs:
            return None, (f"{prev.op} output '{out.name}' is a graph output, so it cannot be "
                          f"fused into {_ops_text(step)}")
        consumers = [c for c in out.outputs if id(c) not in dead] if dead else list(out.outputs)
        if not consumers:
            return None, f"{prev.op} output has no consumer"
        if len(consumers) > 1:
            others = ", ".join(_describe_node(c) for c in consumers[:3])
            return None, f"{prev.op} output also feeds another node ({others})"
        cand = consumers[0]
        if cand.op not in step.ops:
            return None, f"{_describe_node(prev)} is followed by {cand.op}, not {_ops_text(step)}"
        if id(cand) in excluded:
            return None, f"{_describe_node(cand)} already belongs to another match"
        positions = [k for k, t in enumerate(cand.inputs) if t is out]
        if 0 not in positions and not (cand.op in COMMUTATIVE and 1 in positions):
            return None, (f"{_describe_node(cand)} reads {prev.op}'s output as input "
                          f"{positions[0] if positions else '?'}, the pattern needs input 0")
        return cand, None

    # -- operands
    def _bind(self, step: Step, node, chained, bindings: dict) -> str | None:
        inputs = list(node.inputs)
        while inputs and not _present(inputs[-1]):
            inputs.pop()
        order = list(range(len(inputs)))
        if chained is not None and inputs and inputs[0] is not chained and len(inputs) > 1 \
                and inputs[1] is chained:
            order[0], order[1] = 1, 0
        if step.operands is None:
            return None
        operands = step.operands
        for k, opnd in enumerate(operands):
            if opnd.variadic:
                rest = [inputs[order[j]] for j in range(k, len(inputs))]
                for j, t in zip(range(k, len(inputs)), rest):
                    if _present(t) and opnd.const and not is_const(t):
                        return (f"{_operand_label(node, order[j], opnd)} of "
                                f"{_describe_node(node)} is not a constant")
                if opnd.bound:
                    bindings[opnd.name] = tuple(t for t in rest if _present(t))
                return None
            t = inputs[order[k]] if k < len(inputs) else None
            if not _present(t):
                if opnd.optional:
                    continue
                return (f"{_describe_node(node)} has no {_operand_label(node, k, opnd)}")
            if opnd.const and not is_const(t):
                return (f"{_operand_label(node, order[k], opnd)} '{t.name}' of "
                        f"{_describe_node(node)} is not a constant")
            if opnd.bound:
                seen = bindings.get(opnd.name)
                if seen is not None and seen is not t:
                    return (f"operand '{opnd.name}' must be the same tensor each time it "
                            f"appears, but {_describe_node(node)} reads '{t.name}'")
                bindings[opnd.name] = t
        if len(inputs) > len(operands):
            return (f"{_describe_node(node)} has {len(inputs)} inputs, the pattern takes at "
                    f"most {len(operands)}")
        return None


@lru_cache(maxsize=512)
def compile_pattern(pattern: PatternDef) -> Matcher:
    """The matcher for a pattern (cached: patterns are immutable)."""
    return Matcher(pattern)


# --------------------------------------------------------------------------- whole graphs


def _graph_of(obj) -> gs.Graph:
    if isinstance(obj, gs.Graph):
        return obj
    inner = getattr(obj, "graph", None)
    if isinstance(inner, gs.Graph):
        return inner
    try:
        import onnx

        if isinstance(obj, onnx.ModelProto):
            return gs.import_onnx(obj)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"expected an IR, a gs.Graph or an onnx.ModelProto, got {type(obj).__name__}")


def match_all(ir_or_graph, target: Target, exclude=()) -> tuple[list[Match], dict[str, str]]:
    """Legal matches over a whole graph, and why every other node matched nothing.

    Greedy by benefit (then by size, then graph order): each node is in at most one
    match. A candidate that overlaps a taken node is matched again with the taken nodes
    excluded (so `Conv -> Relu?` can still take the Conv alone). Nodes named in `exclude`
    (kept float by an earlier pass) are in no match, the same way: a `MatMul -> Add?` whose
    bias Add must stay float still takes the MatMul. `reasons` maps node name to one
    sentence for nodes that are in no match, except pass-through ops, Q/DQ or Constant
    nodes (those are not failures) and the excluded nodes (their caller has the reason).
    """
    graph = _graph_of(ir_or_graph)
    nodes = list(graph.nodes)
    exclude = set(exclude)
    excluded = {id(n) for n in nodes if n.name in exclude}
    order = {id(n): i for i, n in enumerate(nodes)}
    graph_outputs = {id(t) for t in graph.outputs}
    pattern_rank = {p.name: i for i, p in enumerate(target.patterns)}
    by_op: dict[str, list[Matcher]] = {}
    for pat in sorted(target.patterns, key=lambda p: -p.benefit):
        for op in pat.anchor_ops:
            by_op.setdefault(op, []).append(compile_pattern(pat))
    env_cache: dict[int, dict] = {}
    candidates: list[Match] = []
    failures: dict[int, list[Failure]] = {}
    for node in nodes:
        if id(node) in excluded:
            continue
        for matcher in by_op.get(node.op, ()):
            result = matcher._match(node, graph_outputs, excluded, env_cache)
            if result:
                candidates.append(result)
            else:
                failures.setdefault(id(node), []).append(result)
    candidates.sort(key=lambda m: (-m.benefit, -len(m.nodes), order[id(m.anchor)],
                                   pattern_rank[m.pattern]))
    taken: set[int] = set(excluded)
    overlapped: dict[int, str] = {}
    matches: list[Match] = []
    for m in candidates:
        if id(m.anchor) in taken:
            continue
        if any(id(n) in taken for n in m.nodes):
            again = compile_pattern(m.pattern_def)._match(m.anchor, graph_outputs, taken,
                                                         env_cache)
            if not again:
                overlapped.setdefault(id(m.anchor), f"{m.pattern}: {again.reason}")
                continue
            m = again
        matches.append(m)
        taken.update(id(n) for n in m.nodes)
    matches.sort(key=lambda m: order[id(m.anchor)])

    reasons: dict[str, str] = {}
    anchors = {op for p in target.patterns for op in p.anchor_ops}
    inner = {op for p in target.patterns for s in p.steps[1:] for op in s.ops}
    for node in nodes:
        if id(node) in taken or node.op in _SILENT_OPS or target.is_passthrough(node.op):
            continue
        key = node.name or f"<{node.op} #{order[id(node)]}>"
        reasons[key] = _reason(node, target, failures.get(id(node), []),
                               overlapped.get(id(node)), anchors, inner)
    return matches, reasons


def _reason(node, target: Target, failures: list[Failure], overlapped: str | None,
            anchors: set, inner: set) -> str:
    op = node.op
    if target.stays_float(op):
        return f"{op} stays float on {target.name} (listed as float)"
    if overlapped:
        return overlapped
    if failures:
        best = max(failures, key=lambda f: f.progress)
        return f"{best.pattern}: {best.reason}"
    if op in inner and op not in anchors:
        return f"{op} is legal on {target.name} only fused after another op, and it was not"
    return f"{op} is not legal on {target.name}"
