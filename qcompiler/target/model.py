"""The resolved target: frozen dataclasses that passes read.

Every object keeps the source position it came from (`pos`), which is excluded from
equality: two targets are equal when they say the same thing, wherever they said it.
A `Target` is always resolved: inheritance applied, defaults filled in, every name
checked. Passes never see a half-built one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from qcompiler.target.names import DTYPES


@dataclass(frozen=True)
class Pos:
    """A place in a target file: 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def _pos():
    return field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class QuantScheme:
    """How one role (activation, weight, bias) is quantized, optionally for one op only.

    A role's default scheme (`op is None`) is complete. A per-op override (`op` set) holds
    only what it changes; the fields it leaves as None come from the role's default
    (`Target.scheme(role, op)` merges them).
    """

    role: str
    op: str | None = None
    dtype: str | None = None
    symmetric: bool | None = None
    granularity: str | None = None  # "per_tensor" | "per_channel"
    axis: int | None = None  # set when granularity == "per_channel"
    narrow: bool | None = None  # symmetric range without the lowest value: [-127, 127]
    reduce_range: bool | None = None  # one bit less: 7-bit weights for u8s8 on AVX2
    pair_safe: bool | None = None  # weights: |q| of adjacent reduction pairs sums to <= 128
    pos: Pos | None = _pos()

    @property
    def per_channel(self) -> bool:
        return self.granularity == "per_channel"

    @property
    def signed(self) -> bool:
        return DTYPES[self.dtype][1]

    @property
    def bits(self) -> int:
        """Effective bits: the dtype's width, one less with reduce_range."""
        width = DTYPES[self.dtype][0]
        return width - 1 if self.reduce_range else width

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        low = -(1 << (self.bits - 1))
        return low + 1 if self.narrow else low

    @property
    def qmax(self) -> int:
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        high = (1 << self.bits) - 1
        return high - 1 if self.narrow else high

    def merged_over(self, base: "QuantScheme") -> "QuantScheme":
        """This override's fields over `base`'s (a role default)."""
        pick = lambda mine, theirs: theirs if mine is None else mine  # noqa: E731
        gran = pick(self.granularity, base.granularity)
        axis = self.axis if self.granularity is not None else base.axis
        return QuantScheme(
            role=self.role,
            op=self.op,
            dtype=pick(self.dtype, base.dtype),
            symmetric=pick(self.symmetric, base.symmetric),
            granularity=gran,
            axis=axis if gran == "per_channel" else None,
            narrow=pick(self.narrow, base.narrow),
            reduce_range=pick(self.reduce_range, base.reduce_range),
            pair_safe=pick(self.pair_safe, base.pair_safe),
            pos=self.pos,
        )


@dataclass(frozen=True)
class Requant:
    """How an int32 accumulator is brought back to the output's scale.

    fixed_point: an integer multiplier in Q31 (or Q15) and a right shift (gemmlowp style).
    float_scale: a float32 multiply (ONNX Runtime's MLAS, TensorRT's epilogue).
    """

    style: str  # "fixed_point" | "float_scale"
    precision: str | None = None  # "q31" | "q15" with fixed_point
    pos: Pos | None = _pos()


@dataclass(frozen=True)
class Placement:
    """Where Q/DQ pairs go (see docs/target-language.md, "placement").

    quantize_weighted_outputs: put a Q/DQ on the output of Conv/MatMul/Gemm/ConvTranspose.
        TensorRT: false (the consumer's input Q/DQ is what makes the conv INT8 out).
    quantize_bias: give biases their own int32 quantization. TensorRT: false (it keeps
        the bias in float and fuses it).
    residual_add: "quantize_both" inputs of a residual Add, or "quantize_skip_only"
        (TensorRT: the other input is fused into the producing conv).
    qdq_per_consumer: a dedicated Q/DQ pair per consumer of a tensor (TensorRT) instead of
        one pair shared by all consumers.
    matmul_float_output: the target runs a MatMul/Gemm with int8 inputs and a float output
        (ONNX Runtime: MatMulIntegerToFloat, QGemm); transformer-placement then leaves the
        outputs that no integer kernel reads float.
    float_elementwise_depth: a region of connected elementwise kernels whose values are
        rounded this many times or more in a row runs in float instead (pass
        float-elementwise-chains); 0: never.
    """

    quantize_weighted_outputs: bool = True
    quantize_bias: bool = True
    residual_add: str = "quantize_both"
    qdq_per_consumer: bool = False
    matmul_float_output: bool = False
    float_elementwise_depth: int = 0


# --------------------------------------------------------------------------- patterns


@dataclass(frozen=True)
class Operand:
    """One input of a pattern step: `x`, `w:const`, `b?:const`, `xs*`, `_`."""

    name: str
    const: bool = False
    optional: bool = False
    variadic: bool = False
    pos: Pos | None = _pos()

    @property
    def bound(self) -> bool:
        """Whether the matcher records this operand in its bindings (`_` is not)."""
        return self.name != "_"

    def __str__(self) -> str:
        text = self.name
        if self.optional:
            text += "?"
        if self.variadic:
            text += "*"
        if self.const:
            text += ":const"
        return text


@dataclass(frozen=True)
class Step:
    """One op of a pattern chain: `Conv(x, w:const)`, `(Relu | Clip)?`."""

    ops: tuple[str, ...]
    operands: tuple[Operand, ...] | None = None  # None: any inputs
    optional: bool = False
    pos: Pos | None = _pos()

    def __str__(self) -> str:
        text = self.ops[0] if len(self.ops) == 1 else "(" + " | ".join(self.ops) + ")"
        if self.operands is not None:
            text += "(" + ", ".join(str(o) for o in self.operands) + ")"
        if self.optional:
            text += "?"
        return text


@dataclass(frozen=True)
class Term:
    """One side of a constraint: a variable, `var % n`, or an integer."""

    var: str | None = None
    modulo: int | None = None
    value: int | None = None

    def __str__(self) -> str:
        if self.var is None:
            return str(self.value)
        return f"{self.var} % {self.modulo}" if self.modulo is not None else self.var


@dataclass(frozen=True)
class Constraint:
    """`lhs op rhs` (op in == != < <= > >=) or `lhs in [values]` / `lhs not in [values]`.

    Parsed into data; the matcher evaluates it over integers, never as Python.
    """

    lhs: Term
    op: str
    rhs: Term | None = None
    values: tuple[int, ...] | None = None
    pos: Pos | None = _pos()

    @property
    def variables(self) -> tuple[str, ...]:
        if self.rhs is None or self.rhs.var is None:
            return (self.lhs.var,) if self.lhs.var is not None else ()
        return (self.lhs.var, self.rhs.var) if self.lhs.var is not None else (self.rhs.var,)

    def __str__(self) -> str:
        if self.values is not None:
            return f"{self.lhs} {self.op} [{', '.join(str(v) for v in self.values)}]"
        return f"{self.lhs} {self.op} {self.rhs}"


@dataclass(frozen=True)
class PatternDef:
    """A legal INT8 pattern: a forward chain of steps, constraints on the first step's
    node, and a benefit that decides overlaps (higher wins)."""

    name: str
    steps: tuple[Step, ...]
    constraints: tuple[Constraint, ...] = ()
    benefit: int = 1
    pos: Pos | None = _pos()

    @property
    def anchor_ops(self) -> tuple[str, ...]:
        return self.steps[0].ops

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(op for step in self.steps for op in step.ops)

    def chain_text(self) -> str:
        return " -> ".join(str(s) for s in self.steps)


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class LayoutRule:
    """`layout Conv NCHW44 [input NCHW] [when ...]`: ops in `layout` when the constraints
    hold; `input_layout` when the op reads another layout than it writes (the first-layer
    rule: an NCHW image into an NCHW44 conv)."""

    ops: tuple[str, ...]
    layout: str
    input_layout: str | None = None
    constraints: tuple[Constraint, ...] = ()
    pos: Pos | None = _pos()


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class Target:
    """A resolved target description."""

    name: str
    description: str
    activation: QuantScheme
    weight: QuantScheme
    bias: QuantScheme
    overrides: tuple[QuantScheme, ...] = ()  # per-op partial schemes, (role, op) unique
    rounding: str = "half_to_even"
    calibration: str = "minmax"  # the activation calibration method when the user names none
    requant: Requant = Requant("float_scale")
    accumulator: str = "int32"
    patterns: tuple[PatternDef, ...] = ()
    passthrough_ops: tuple[str, ...] = ()
    share_scale_ops: tuple[str, ...] = ()
    float_ops: tuple[str, ...] = ()
    placement: Placement = Placement()
    layout_rules: tuple[LayoutRule, ...] = ()
    pad_channels: int | None = None
    fallback_layout: str = "NCHW"
    pipeline: tuple[str, ...] = ()
    # instruction sets the generated C may use (qcompiler.codegen); () = portable C only
    isa: tuple[str, ...] = ()
    # the chain of targets this one was resolved from, itself first: ("x86-avx2", "x86")
    lineage: tuple[str, ...] = field(default=(), compare=False)
    source: str | None = field(default=None, compare=False)
    pos: Pos | None = _pos()

    # ---- schemes
    def scheme(self, role: str, op: str | None = None) -> QuantScheme:
        """The complete scheme for `role`, with the per-op override for `op` applied."""
        base = {"activation": self.activation, "weight": self.weight, "bias": self.bias}[role]
        if op is not None:
            for o in self.overrides:
                if o.role == role and o.op == op:
                    return o.merged_over(base)
        return base

    # ---- patterns
    def pattern(self, name: str) -> PatternDef:
        for p in self.patterns:
            if p.name == name:
                return p
        raise KeyError(name)

    def patterns_for(self, op: str) -> tuple[PatternDef, ...]:
        """Patterns whose first step can be `op`, highest benefit first."""
        found = [p for p in self.patterns if op in p.anchor_ops]
        return tuple(sorted(found, key=lambda p: -p.benefit))

    def iter_pattern_ops(self) -> Iterator[str]:
        for p in self.patterns:
            yield from p.ops

    @property
    def legal_ops(self) -> frozenset[str]:
        """Every op that appears in some pattern."""
        return frozenset(self.iter_pattern_ops())

    # ---- op lists
    def is_passthrough(self, op: str) -> bool:
        return op in self.passthrough_ops

    def shares_scale(self, op: str) -> bool:
        return op in self.share_scale_ops

    def stays_float(self, op: str) -> bool:
        return op in self.float_ops

    # ---- layouts
    def layout_rules_for(self, op: str) -> tuple[LayoutRule, ...]:
        return tuple(r for r in self.layout_rules if op in r.ops)
