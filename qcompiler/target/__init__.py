"""Target description language: grammar, parser, resolved Target model, pattern matchers.

    from qcompiler.target import load_target, format_target, list_targets
    t = load_target("arm64")            # a shipped target, or a path to a .qtarget file
    t.scheme("weight", "ConvTranspose")   # per-op override applied
    print(format_target(t))               # the resolved target, in the language itself
"""

from qcompiler.target.loader import (
    list_targets,
    load_target,
    parse_target,
    resolve_target,
    shipped_target_names,
    shipped_target_path,
)
from qcompiler.target.model import (
    Constraint,
    LayoutRule,
    Operand,
    PatternDef,
    Placement,
    Pos,
    QuantScheme,
    Requant,
    Step,
    Target,
    Term,
)
from qcompiler.target.patterns import (
    Failure,
    Match,
    Matcher,
    compile_pattern,
    match_all,
)
from qcompiler.target.printer import format_target

__all__ = [
    "Constraint", "LayoutRule", "Operand", "PatternDef", "Placement", "Pos", "QuantScheme",
    "Requant", "Step", "Target", "Term",
    "Failure", "Match", "Matcher", "compile_pattern", "match_all",
    "format_target", "list_targets", "load_target", "parse_target", "resolve_target", "shipped_target_names",
    "shipped_target_path",
]
