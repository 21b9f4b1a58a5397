"""Text -> one target declaration, every name checked, every error one line with a position.

`parse_decl` runs the LALR parser (grammar.lark) and turns the tree into a `TargetDecl`: the
header (name, parent, description) and the statements in file order, already converted to
model objects. Inheritance is not applied here (see loader.py). Nothing is ever evaluated:
constraints become `Constraint` data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from qcompiler.errors import TargetError
from qcompiler.target import names as N
from qcompiler.target.model import (
    Constraint,
    LayoutRule,
    Operand,
    PatternDef,
    Pos,
    QuantScheme,
    Requant,
    Step,
    Term,
)

_HINT = "see docs/target-language.md for the target file syntax"


def error_at(pos: Pos | None, message: str, hint: str | None = _HINT) -> TargetError:
    """A TargetError whose message starts with FILE:LINE:COL."""
    text = f"{pos}: {message}" if pos is not None else message
    err = TargetError(text, hint)
    err.pos = pos  # type: ignore[attr-defined]
    return err


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("qcompiler.target").joinpath("grammar.lark").read_text("utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        # the LALR tables go to a file in the temp folder keyed by the grammar's hash and
        # lark's version: later processes load them instead of re-analysing (~0.1 s per build)
        cache=True,
    )


# a pattern on its own (the rewrite API): a chain and its clauses, without `pattern NAME :`
_PATTERN_RULE = "\npattern_text: chain pattern_clause*\n"


@lru_cache(maxsize=1)
def _pattern_parser() -> Lark:
    grammar = resources.files("qcompiler.target").joinpath("grammar.lark").read_text("utf-8")
    return Lark(grammar + _PATTERN_RULE, start="pattern_text", parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=True, cache=True)


def parse_pattern(text: str, name: str = "rewrite", filename: str = "<pattern>") -> PatternDef:
    """One pattern in the target language's syntax, e.g. `Conv(x, w:const) -> Relu?`
    (optionally followed by `where ...` and `benefit N`). Raises TargetError (one line)."""
    if not isinstance(text, str):
        raise error_at(None, f"a pattern must be text, got {type(text).__name__}",
                       "write it as in a target file, e.g. 'Conv(x, w:const) -> Relu'")
    try:
        tree = _pattern_parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    except LarkError as exc:  # pragma: no cover - lark internals
        raise error_at(Pos(filename, 1, 1), f"cannot parse: {exc}") from None
    builder = _Builder(filename)
    return builder.pattern(name, tree.children[0], tree.children[1:], builder.pos(tree))


# --------------------------------------------------------------------------- syntax errors

_NAMED_TERMINALS = {
    "NAME": "a name",
    "INT": "an integer",
    "STRING": 'a "quoted description"',
    "CMP": "a comparison (== != < <= > >=)",
    "$END": "end of file",
}


@lru_cache(maxsize=1)
def _terminal_text() -> dict[str, str]:
    table: dict[str, str] = {}
    for term in _parser().terminals:
        if term.name in _NAMED_TERMINALS:
            table[term.name] = _NAMED_TERMINALS[term.name]
        elif term.pattern.type == "str":
            table[term.name] = f"'{term.pattern.value}'"
        else:
            table[term.name] = term.name.lower()
    table.update({k: v for k, v in _NAMED_TERMINALS.items() if k not in table})
    return table


def _keyword_terminals() -> dict[str, str]:
    """Terminal name -> keyword, for the keywords that look like names."""
    out = {}
    for term in _parser().terminals:
        if term.pattern.type == "str" and term.pattern.value.replace("_", "").isalpha():
            out[term.name] = term.pattern.value
    return out


def _expected_text(expected: set[str] | frozenset[str]) -> str:
    table = _terminal_text()
    words = {table.get(name, name) for name in expected}
    statements = {f"'{kw}'" for kw in N.STATEMENT_KEYWORDS}
    if statements <= words:  # every statement keyword fits here: say so in two words
        words = (words - statements) | {"a statement"}
    items = sorted(words, key=lambda s: (s[0] == "'", s))
    if not items:
        return "something else"
    if len(items) == 1:
        return items[0]
    return "one of " + ", ".join(items)


def _layout_without_ops(exc: UnexpectedToken) -> bool:
    """Whether the parser stopped right after `layout LAYOUTNAME` (ops missing)."""
    try:
        stack = exc.interactive_parser.parser_state.value_stack  # type: ignore[union-attr]
    except AttributeError:
        return False
    if len(stack) < 2:
        return False
    kw, names = stack[-2], stack[-1]
    return (isinstance(kw, Token) and kw.type == "LAYOUT" and isinstance(names, Tree)
            and len(names.children) == 1 and str(names.children[0]) in N.LAYOUTS)


def _end_pos(text: str, filename: str) -> Pos:
    lines = text.split("\n")
    return Pos(filename, len(lines), len(lines[-1]) + 1)


def _syntax_error(exc: UnexpectedInput, text: str, filename: str) -> TargetError:
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = set(exc.expected or ())
        if tok.type == "$END":
            pos, got = _end_pos(text, filename), "end of file"
        else:
            pos = Pos(filename, tok.line or 1, tok.column or 1)
            got = f"'{tok.value}'" if tok.type != "STRING" else tok.value
        msg = f"expected {_expected_text(expected)}, got {got}"
        if tok.type == "NAME":
            keywords = _keyword_terminals()
            words = [keywords[t] for t in expected if t in keywords]
            msg += N.did_you_mean(str(tok.value), words)
        if _layout_without_ops(exc):
            return error_at(pos, msg, "a layout rule names its ops first, e.g. 'layout Conv "
                                      "NCHW44 when ic % 4 == 0'; patterns take no layout clause")
        return error_at(pos, msg)
    if isinstance(exc, UnexpectedCharacters):
        pos = Pos(filename, exc.line, exc.column)
        char = exc.char
        if char == '"':
            got = "an unterminated string (close the quote on the same line)"
        elif char.isprintable() and not char.isspace():
            got = f"'{char}'"
        else:
            got = f"character {ascii(char)}"
        return error_at(pos, f"expected {_expected_text(set(exc.allowed or ()))}, got {got}")
    if isinstance(exc, UnexpectedEOF):
        return error_at(
            _end_pos(text, filename),
            f"expected {_expected_text(set(exc.expected or ()))}, got end of file",
        )
    return error_at(Pos(filename, getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1),
                    "syntax error")


# --------------------------------------------------------------------------- declarations


@dataclass
class Stmt:
    """One statement of a target body, converted to model data.

    kind: scheme | override | rounding | calibration | requant | accumulator | pattern | drop | oplist |
          placement | layout | pad_channels | fallback | pipeline | isa
    key: what makes two statements "the same" (a duplicate in one file; an override
         across inheritance); None for layout rules, which are ordered, not keyed.
    """

    kind: str
    key: Any
    value: Any
    pos: Pos
    item_pos: tuple[Pos, ...] = ()


@dataclass
class TargetDecl:
    """One parsed target file, before inheritance is applied."""

    name: str
    description: str
    parent: str | None
    statements: list[Stmt]
    pos: Pos
    name_pos: Pos
    parent_pos: Pos | None
    file: str
    extra: dict = field(default_factory=dict)


def parse_decl(text: str, filename: str = "<string>") -> TargetDecl:
    """Parse one target file's text. Raises TargetError (one line) on any problem."""
    if not isinstance(text, str):
        raise error_at(None, f"{filename}: a target file must be text")
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    except LarkError as exc:  # pragma: no cover - lark internals
        raise error_at(Pos(filename, 1, 1), f"cannot parse: {exc}") from None
    except RecursionError:  # pragma: no cover
        raise error_at(Pos(filename, 1, 1), "file nests too deeply") from None
    return _Builder(filename).target(tree.children[0])


class _Builder:
    """Tree -> TargetDecl, checking every name against its vocabulary."""

    def __init__(self, filename: str):
        self.file = filename

    # ---- helpers
    def pos(self, item: Tree | Token) -> Pos:
        if isinstance(item, Token):
            return Pos(self.file, item.line or 1, item.column or 1)
        return Pos(self.file, item.meta.line, item.meta.column)

    def fail(self, item: Tree | Token | Pos, message: str, hint: str | None = _HINT):
        pos = item if isinstance(item, Pos) else self.pos(item)
        raise error_at(pos, message, hint)

    def check(self, tok: Token, vocabulary, what: str, hint: str | None = None) -> str:
        word = str(tok)
        if word not in vocabulary:
            self.fail(tok, f"unknown {what} '{word}'{N.did_you_mean(word, vocabulary)}", hint)
        return word

    def op(self, tok: Token) -> str:
        return self.check(tok, N.onnx_ops(), "op",
                          "op names are ONNX operator names (default domain), case-sensitive")

    def layout(self, tok: Token) -> str:
        return self.check(tok, N.LAYOUTS, "layout",
                          "known layouts: " + ", ".join(N.LAYOUTS))

    def integer(self, tok: Token, what: str, minimum: int | None = None) -> int:
        value = int(str(tok))
        if minimum is not None and value < minimum:
            self.fail(tok, f"{what} must be at least {minimum}, got {value}")
        return value

    @staticmethod
    def tokens(tree: Tree) -> list[Token]:
        return [c for c in tree.children if isinstance(c, Token)]

    def op_names(self, name_list: Tree, check_ops: bool = True) -> tuple[list[str], list[Pos]]:
        names, where = [], []
        for tok in self.tokens(name_list):
            name = self.op(tok) if check_ops else str(tok)
            if name in names:
                self.fail(tok, f"'{name}' is listed twice")
            names.append(name)
            where.append(self.pos(tok))
        return names, where

    # ---- target
    def target(self, tree: Tree) -> TargetDecl:
        children = list(tree.children)
        name_tok = children[0]
        parent = parent_pos = None
        idx = 1
        if isinstance(children[1], Tree) and children[1].data == "extends_clause":
            ptok = children[1].children[0]
            parent, parent_pos = str(ptok), self.pos(ptok)
            idx = 2
        elif children[1] is None:
            idx = 2
        desc_tok = children[idx]
        statements: list[Stmt] = []
        for st in children[idx + 1:]:
            if st is None:
                continue
            statements.extend(getattr(self, st.data)(st))
        self._check_duplicates(statements)
        return TargetDecl(
            name=str(name_tok),
            description=str(desc_tok)[1:-1].strip(),
            parent=parent,
            statements=statements,
            pos=self.pos(tree),
            name_pos=self.pos(name_tok),
            parent_pos=parent_pos,
            file=self.file,
        )

    def _check_duplicates(self, statements: list[Stmt]) -> None:
        seen: dict[tuple, Stmt] = {}
        for st in statements:
            if st.key is None:
                continue
            key = (st.kind, st.key)
            if key in seen:
                first = seen[key].pos
                self.fail(st.pos, f"duplicate {_describe(st)} (first at line {first.line}, "
                                  f"col {first.col})")
            seen[key] = st

    # ---- schemes
    def scheme_stmt(self, tree: Tree) -> list[Stmt]:
        role_tok = tree.children[0].children[0]
        role = str(role_tok)
        rest = tree.children[1:]
        for_ops: list[str] = []
        for_pos: list[Pos] = []
        if rest and rest[0] is None:
            rest = rest[1:]
        elif rest and isinstance(rest[0], Tree) and rest[0].data == "scheme_for":
            for_ops, for_pos = self.op_names(rest[0].children[0])
            rest = rest[1:]
        fields = self.scheme_options(role, [r for r in rest if r is not None], bool(for_ops))
        pos = self.pos(tree)
        if not for_ops:
            if fields.get("dtype") is None:
                self.fail(pos, f"the {role} scheme needs a dtype, one of "
                               + ", ".join(N.ROLE_DTYPES[role]))
            full = dict(symmetric=True, granularity="per_tensor", narrow=False,
                        reduce_range=False, pair_safe=False)
            full.update({k: v for k, v in fields.items() if v is not None})
            if full["granularity"] == "per_tensor":
                full["axis"] = None
            return [Stmt("scheme", role, QuantScheme(role=role, pos=pos, **full), pos)]
        if not any(v is not None for v in fields.values()):
            self.fail(pos, f"the {role} override for {', '.join(for_ops)} changes nothing")
        out = []
        for op, opos in zip(for_ops, for_pos):
            out.append(Stmt("override", (role, op), QuantScheme(role=role, op=op, pos=pos,
                                                                 **fields), opos))
        return out

    def scheme_options(self, role: str, options: list[Tree], override: bool) -> dict:
        fields: dict[str, Any] = dict(dtype=None, symmetric=None, granularity=None, axis=None,
                                      narrow=None, reduce_range=None, pair_safe=None)
        seen: dict[str, Token] = {}

        def once(slot: str, tok: Token, value: Any, label: str):
            if slot in seen:
                self.fail(tok, f"{label} conflicts with '{seen[slot]}' given before it")
            seen[slot] = tok
            fields[slot] = value

        for i, opt in enumerate(options):
            head = opt.children[0]
            word = str(head)
            if word not in N.DTYPES and word not in N.SCHEME_FLAGS:
                self._unknown_option(head, word, role, first=(i == 0))
            if opt.data != "option" and word != "per_channel":
                self.fail(head, f"'{word}' takes no arguments")
            if word in N.DTYPES:
                if word not in N.ROLE_DTYPES[role]:
                    self.fail(head, f"dtype {word} is not allowed for {role}; use one of "
                                    + ", ".join(N.ROLE_DTYPES[role]))
                once("dtype", head, word, f"dtype {word}")
            elif word in ("symmetric", "asymmetric"):
                once("symmetric", head, word == "symmetric", word)
            elif word == "per_tensor":
                once("granularity", head, "per_tensor", word)
            elif word == "per_channel":
                if opt.data == "option":
                    self.fail(head, "per_channel needs an axis, e.g. per_channel(axis=0)")
                key = opt.children[1]
                if str(key) != "axis":
                    self.fail(key, f"unknown per_channel argument '{key}', did you mean 'axis'?")
                if opt.data == "option_arg":
                    self.fail(key, "per_channel needs axis=N with an integer N, "
                                   "e.g. per_channel(axis=0)")
                once("granularity", head, "per_channel", word)
                fields["axis"] = int(str(opt.children[2]))
            elif word == "narrow":
                once("narrow", head, True, word)
            elif word == "pair_safe":
                if role != "weight":
                    self.fail(head, f"pair_safe applies to weights only, not to {role}")
                once("pair_safe", head, True, word)
            else:  # reduce_range
                once("reduce_range", head, True, word)
        return fields

    def _unknown_option(self, tok: Token, word: str, role: str, first: bool) -> None:
        dtypes = N.ROLE_DTYPES[role]
        best = N.suggest(word, list(N.DTYPES) + list(N.SCHEME_FLAGS))
        if best is None and not first:
            best = N.suggest(word, N.STATEMENT_KEYWORDS)
        if best in N.DTYPES or (best is None and first):
            what = "dtype"
            hint = "dtypes for " + role + ": " + ", ".join(dtypes)
        else:
            what = "scheme option"
            hint = "scheme options: " + ", ".join(N.SCHEME_FLAGS)
        tail = f", did you mean '{best}'?" if best else ""
        self.fail(tok, f"unknown {what} '{word}'{tail}", hint)

    # ---- single-valued statements
    def rounding_stmt(self, tree: Tree) -> list[Stmt]:
        tok = tree.children[0]
        mode = self.check(tok, N.ROUNDING_MODES, "rounding mode",
                          "rounding modes: " + ", ".join(N.ROUNDING_MODES))
        return [Stmt("rounding", "rounding", mode, self.pos(tree))]

    def calibration_stmt(self, tree: Tree) -> list[Stmt]:
        tok = tree.children[0]
        method = self.check(tok, N.CALIBRATION_METHODS, "calibration method",
                            "calibration methods: " + ", ".join(N.CALIBRATION_METHODS))
        return [Stmt("calibration", "calibration", method, self.pos(tree))]

    def requant_stmt(self, tree: Tree) -> list[Stmt]:
        opt = tree.children[0]
        head = opt.children[0]
        style = self.check(head, N.REQUANT_STYLES, "requant style",
                           "requant styles: fixed_point(q31), fixed_point(q15), float_scale")
        precision = None
        if style == "fixed_point":
            if opt.data != "option_arg":
                self.fail(head, "fixed_point needs a format, e.g. fixed_point(q31)")
            precision = self.check(opt.children[1], N.FIXED_POINT_FORMATS, "fixed-point format")
        elif opt.data != "option":
            self.fail(head, "float_scale takes no arguments")
        pos = self.pos(tree)
        return [Stmt("requant", "requant", Requant(style, precision, pos), pos)]

    def accumulator_stmt(self, tree: Tree) -> list[Stmt]:
        tok = tree.children[0]
        acc = self.check(tok, N.ACCUMULATORS, "accumulator dtype")
        return [Stmt("accumulator", "accumulator", acc, self.pos(tree))]

    def pad_stmt(self, tree: Tree) -> list[Stmt]:
        value = self.integer(tree.children[0], "pad_channels", minimum=1)
        return [Stmt("pad_channels", "pad_channels", value, self.pos(tree))]

    def fallback_stmt(self, tree: Tree) -> list[Stmt]:
        return [Stmt("fallback", "fallback", self.layout(tree.children[0]), self.pos(tree))]

    def pipeline_stmt(self, tree: Tree) -> list[Stmt]:
        known = N.pass_names()
        passes, where = [], []
        for tok in self.tokens(tree.children[0]):
            passes.append(self.check(tok, known, "pass",
                                     "`qcompiler passes` lists the registered passes"))
            where.append(self.pos(tok))
        return [Stmt("pipeline", "pipeline", tuple(passes), self.pos(tree), tuple(where))]

    def isa_stmt(self, tree: Tree) -> list[Stmt]:
        isas = tuple(self.check(tok, N.ISAS, "instruction set") for tok in self.tokens(tree.children[0]))
        return [Stmt("isa", "isa", isas, self.pos(tree))]

    # ---- op lists
    def oplist_stmt(self, tree: Tree) -> list[Stmt]:
        kind = str(tree.children[0].children[0])
        ops, where = self.op_names(tree.children[1])
        return [Stmt("oplist", kind, tuple(ops), self.pos(tree), tuple(where))]

    def drop_stmt(self, tree: Tree) -> list[Stmt]:
        kind = str(tree.children[0].children[0])
        out = []
        for tok in self.tokens(tree.children[1]):
            name = str(tok) if kind == "pattern" else self.op(tok)
            out.append(Stmt("drop", (kind, name), (kind, name), self.pos(tok)))
        return out

    # ---- placement
    def placement_stmt(self, tree: Tree) -> list[Stmt]:
        out = []
        for item in tree.children:
            if item is None:
                continue
            key_tok, val_tok = item.children
            key = self.check(key_tok, N.PLACEMENT_KEYS, "placement rule",
                             "placement rules: " + ", ".join(N.PLACEMENT_KEYS))
            allowed = N.PLACEMENT_KEYS[key]
            value = str(val_tok)
            if key in N.PLACEMENT_INT_KEYS:
                if not value.isdigit():
                    self.fail(val_tok, f"{key} takes an integer >= 0, got '{value}'")
                out.append(Stmt("placement", key, int(value), self.pos(item)))
                continue
            if value not in allowed:
                self.fail(val_tok, f"{key} takes {' or '.join(allowed)}, got '{value}'"
                                   f"{N.did_you_mean(value, allowed)}")
            typed: Any = {"true": True, "false": False}.get(value, value)
            out.append(Stmt("placement", key, typed, self.pos(item)))
        return out

    # ---- layouts
    def layout_stmt(self, tree: Tree) -> list[Stmt]:
        ops, _ = self.op_names(tree.children[0])
        layout = self.layout(tree.children[1])
        input_layout = None
        constraints: tuple[Constraint, ...] = ()
        for extra in tree.children[2:]:
            if extra is None:
                continue
            if extra.data == "layout_input":
                input_layout = self.layout(extra.children[0])
            else:
                constraints = self.constraints(extra.children[0])
        pos = self.pos(tree)
        rule = LayoutRule(tuple(ops), layout, input_layout, constraints, pos)
        return [Stmt("layout", None, rule, pos)]

    # ---- constraints
    def constraints(self, tree: Tree) -> tuple[Constraint, ...]:
        return tuple(self.constraint(c) for c in tree.children)

    def term(self, tree: Tree) -> Term:
        if tree.data == "int_term":
            return Term(value=int(str(tree.children[0])))
        var_tok = tree.children[0]
        var = self.check(var_tok, N.CONSTRAINT_VARS, "constraint variable",
                         "constraint variables: " + ", ".join(N.CONSTRAINT_VARS))
        if tree.data == "mod_term":
            mod = self.integer(tree.children[1], "the modulus", minimum=1)
            return Term(var=var, modulo=mod)
        return Term(var=var)

    def constraint(self, tree: Tree) -> Constraint:
        pos = self.pos(tree)
        lhs = self.term(tree.children[0])
        if tree.data == "compare":
            op = str(tree.children[1])
            rhs = self.term(tree.children[2])
            con = Constraint(lhs, op, rhs=rhs, pos=pos)
        else:
            values = tuple(int(str(t)) for t in self.tokens(tree.children[1]))
            op = "in" if tree.data == "member" else "not in"
            con = Constraint(lhs, op, values=values, pos=pos)
        if not con.variables:
            self.fail(pos, f"constraint '{con}' names no variable (use "
                           + ", ".join(N.CONSTRAINT_VARS) + ")")
        return con

    # ---- patterns
    def pattern_stmt(self, tree: Tree) -> list[Stmt]:
        name_tok = tree.children[0]
        pat = self.pattern(str(name_tok), tree.children[1], tree.children[2:], self.pos(tree))
        return [Stmt("pattern", pat.name, pat, self.pos(name_tok))]

    def pattern(self, name: str, chain: Tree, clauses: list, pos: Pos) -> PatternDef:
        steps = []
        for i, step_tree in enumerate(c for c in chain.children if isinstance(c, Tree)):
            steps.append(self.step(step_tree, first=(i == 0)))
        constraints: tuple[Constraint, ...] = ()
        benefit = 1
        seen: dict[str, Tree] = {}
        for clause in clauses:
            if clause is None:
                continue
            if clause.data in seen:
                word = "where" if clause.data == "where_clause" else "benefit"
                self.fail(clause, f"pattern {name} has two '{word}' clauses "
                                  f"(join conditions with 'and')")
            seen[clause.data] = clause
            if clause.data == "where_clause":
                constraints = self.constraints(clause.children[0])
            else:
                benefit = self.integer(clause.children[0], "benefit", minimum=0)
        return PatternDef(name, tuple(steps), constraints, benefit, pos)

    def step(self, tree: Tree, first: bool) -> Step:
        choice = tree.children[0]
        ops = []
        for tok in self.tokens(choice):
            if tok.type == "BAR":
                continue
            name = self.op(tok)
            if name in ops:
                self.fail(tok, f"'{name}' is listed twice in this step")
            ops.append(name)
        operands = None
        optional = False
        for extra in tree.children[1:]:
            if extra is None:
                continue
            if isinstance(extra, Token) and extra.type == "QMARK":
                optional = True
            elif isinstance(extra, Tree) and extra.data == "operands":
                operands = tuple(self.operand(o) for o in extra.children if o is not None)
        pos = self.pos(tree)
        if first and optional:
            self.fail(pos, "the first step of a pattern cannot be optional (it anchors the "
                           "match)")
        if operands is not None:
            self._check_operands(operands, first, pos)
        return Step(tuple(ops), operands, optional, pos)

    def operand(self, tree: Tree) -> Operand:
        name_tok = tree.children[0]
        optional = variadic = const = False
        for tok in tree.children[1:]:
            if tok is None:
                continue
            if tok.type == "QMARK":
                optional = True
            elif tok.type == "STAR":
                variadic = True
            else:
                self.check(tok, N.OPERAND_ANNOTATIONS, "operand annotation",
                           "operands are written name, name:const, name?:const or name*")
                const = True
        if optional and variadic:
            self.fail(name_tok, f"operand '{name_tok}' cannot be both optional (?) and "
                                "variadic (*)")
        return Operand(str(name_tok), const, optional, variadic, self.pos(name_tok))

    def _check_operands(self, operands: tuple[Operand, ...], first: bool, pos: Pos) -> None:
        if not operands and not first:
            self.fail(pos, "a later step needs at least one operand: the previous step's "
                           "output (write it as '_')")
        seen_optional = None
        for i, opnd in enumerate(operands):
            if opnd.variadic and i != len(operands) - 1:
                self.fail(opnd.pos, f"variadic operand '{opnd.name}*' must be the last one")
            if opnd.optional:
                seen_optional = opnd
            elif seen_optional is not None and not opnd.variadic:
                self.fail(opnd.pos, f"required operand '{opnd.name}' cannot follow optional "
                                    f"operand '{seen_optional.name}?'")
        if not first and operands:
            head = operands[0]
            if head.variadic or head.optional or head.const:
                self.fail(head.pos, "in a later step the first operand is the previous "
                                    "step's output: it cannot be optional, variadic or const")


def _describe(st: Stmt) -> str:
    if st.kind == "pattern":
        return f"pattern name '{st.key}'"
    if st.kind == "scheme":
        return f"'{st.key}' scheme"
    if st.kind == "override":
        return f"'{st.key[0]} for {st.key[1]}' override"
    if st.kind == "oplist":
        return f"'{st.key}' statement"
    if st.kind == "placement":
        return f"placement rule '{st.key}'"
    if st.kind == "drop":
        return f"'drop {st.key[0]} {st.key[1]}'"
    return f"'{st.kind}' statement"
