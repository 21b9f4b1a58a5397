"""Shipped targets load, round-trip through format_target, and say what their docs say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qcompiler.errors import TargetError
from qcompiler.target import (
    Target,
    format_target,
    list_targets,
    load_target,
    parse_target,
    shipped_target_names,
    shipped_target_path,
)

SHIPPED = ["arm64", "arm64-dot", "arm64-sym", "cuda", "x86", "x86-accurate", "x86-avx2"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "target-language.md"

BASE = """
target t "test" {
  activation int8 symmetric per_tensor
  weight int8 symmetric per_channel(axis=0)
  pipeline canonicalize, fold-bn
}
"""


def test_shipped_names():
    assert shipped_target_names() == SHIPPED
    names = [n for n, _ in list_targets()]
    assert names == SHIPPED
    assert all(desc and "\n" not in desc for _, desc in list_targets())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_loads_and_round_trips(name):
    t = load_target(name)
    assert isinstance(t, Target)
    assert t.name == name
    text = format_target(t)
    again = parse_target(text, f"{name}-formatted.qtarget")
    assert again == t
    # printing is stable: format(parse(format(t))) == format(t)
    body = lambda s: s.split("\n", 1)[1] if s.startswith("# resolved") else s  # noqa: E731
    assert body(format_target(again)) == body(text)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_by_path_equals_by_name(name):
    assert load_target(shipped_target_path(name)) == load_target(name)
    assert load_target(Path(shipped_target_path(name))) == load_target(name)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_cites_its_facts(name):
    text = Path(shipped_target_path(name)).read_text()
    assert text.startswith("#"), "each shipped target opens with a comment block of facts"
    assert "Facts this file encodes" in text


def test_unknown_shipped_name_suggests():
    with pytest.raises(TargetError) as e:
        load_target("arm65")
    assert "did you mean 'arm64'" in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_path():
    with pytest.raises(TargetError, match="not found"):
        load_target("no/such/file.qtarget")


def test_x86_facts():
    t = load_target("x86")
    a, w, b = t.activation, t.weight, t.bias
    assert (a.dtype, a.symmetric, a.per_channel) == ("uint8", False, False)
    assert (w.dtype, w.symmetric, w.per_channel, w.axis) == ("int8", True, True, 0)
    assert b.dtype == "int32"
    assert t.scheme("weight", "ConvTranspose").axis == 1
    assert t.scheme("weight", "ConvTranspose").dtype == "int8"
    assert t.scheme("weight", "Conv") == t.weight
    assert t.requant.style == "float_scale"
    assert t.rounding == "half_to_even"
    for op in ["Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Gather", "Slice",
               "Resize", "Expand", "Tile"]:
        assert t.is_passthrough(op), op
    assert t.stays_float("MaxPool") and not t.is_passthrough("MaxPool")  # ORT's u8 MaxPool is slow
    for op in ["Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "AveragePool",
               "GlobalAveragePool", "LeakyRelu", "Sigmoid", "Softmax"]:
        assert t.patterns_for(op), op
    assert "lower-layout" not in t.pipeline
    assert t.layout_rules == () and t.fallback_layout == "NCHW"
    p = t.placement
    assert p.quantize_weighted_outputs and p.quantize_bias and not p.qdq_per_consumer
    assert p.residual_add == "quantize_both"


def test_x86_avx2_makes_weight_pairs_safe_only():
    x86, avx2 = load_target("x86"), load_target("x86-avx2")
    assert avx2.lineage == ("x86-avx2", "x86")
    assert avx2.weight.pair_safe and not x86.weight.pair_safe and not avx2.weight.reduce_range
    assert (avx2.weight.bits, avx2.weight.qmin, avx2.weight.qmax) == (8, -127, 127)
    # the ConvTranspose override only changes the axis, so it inherits pair_safe
    assert avx2.scheme("weight", "ConvTranspose").pair_safe
    assert avx2.activation == x86.activation and avx2.patterns == x86.patterns
    assert avx2.pipeline == x86.pipeline


def test_arm64_facts():
    t = load_target("arm64")
    assert (t.activation.dtype, t.activation.symmetric) == ("int8", False)  # ORT/XNNPACK take a zero point
    assert load_target("arm64-sym").activation.symmetric  # zero-point-free int8 kernels
    assert (t.calibration, load_target("cuda").calibration) == ("mse", "mse")
    assert (t.weight.dtype, t.weight.symmetric, t.weight.per_channel) == ("int8", True, True)
    assert (t.weight.qmin, t.weight.qmax) == (-127, 127)
    assert (t.requant.style, t.requant.precision) == ("fixed_point", "q31")
    assert t.rounding == "single_rounding"
    assert t.pad_channels == 4 and t.fallback_layout == "NCHW"
    layouts = {r.layout for r in t.layout_rules_for("Conv")}
    assert layouts == {"NCHW44"}
    assert any(r.input_layout == "NCHW" for r in t.layout_rules_for("Conv"))
    assert t.pipeline[-1] == "lower-layout"
    assert "HardSwish" not in t.legal_ops


def test_arm64_dot_replaces_conv_layouts():
    t = load_target("arm64-dot")
    rules = t.layout_rules_for("Conv")
    assert [r.layout for r in rules] == ["NCHW44_DOT", "NCHW44_DOT", "NCHW44"]
    base = load_target("arm64")
    assert t.patterns == base.patterns and t.requant == base.requant


def test_cuda_facts():
    t = load_target("cuda")
    assert (t.activation.dtype, t.activation.symmetric) == ("int8", True)
    assert t.weight.per_channel and t.weight.axis == 0
    assert t.scheme("weight", "ConvTranspose").axis == 1
    p = t.placement
    assert not p.quantize_weighted_outputs
    assert p.residual_add == "quantize_skip_only"
    assert p.qdq_per_consumer
    assert t.shares_scale("Concat")
    assert [r.layout for r in t.layout_rules_for("Conv")] == ["NC32HW32", "NC4HW4"]
    assert t.pad_channels == 4


def test_pipelines_are_the_standard_order():
    std = ["canonicalize", "fold-bn", "fuse-conv-bias-act", "attention-mask", "smooth-quant",
           "transformer-placement", "float-elementwise-chains", "insert-observers", "calibrate",
           "unify-concat-scales", "place-qdq", "fold-requant", "quantize-gather", "lower-layout"]
    # storage and layout steps a runtime may not take; chains only where elementwise ops are INT8
    optional = {"quantize-gather", "lower-layout", "float-elementwise-chains"}
    for name in SHIPPED:
        pipe = list(load_target(name).pipeline)
        assert [p for p in std if p in pipe] == pipe, name  # the standard order, nothing else
        assert [p for p in std if p not in optional] == [p for p in pipe if p not in optional], name


# ------------------------------------------------------------------ language semantics


def test_minimal_target_defaults():
    t = parse_target(BASE)
    assert t.bias.dtype == "int32"
    assert t.rounding == "half_to_even" and t.requant.style == "float_scale"
    assert t.accumulator == "int32" and t.fallback_layout == "NCHW"
    assert t.patterns == () and t.layout_rules == ()
    assert parse_target(format_target(t)) == t


def test_positions_are_kept_but_not_compared():
    t = parse_target(BASE, "a.qtarget")
    u = parse_target("\n\n# moved\n" + BASE, "b.qtarget")
    assert t == u
    assert t.activation.pos.file == "a.qtarget" and u.activation.pos.line == t.activation.pos.line + 3


def test_pattern_is_parsed_into_data():
    t = parse_target(BASE.replace("  pipeline", """
  pattern conv_act : Conv(x, w:const, b?:const) -> (Relu | Clip)?
      where ic % 4 == 0 and kernel in [1, 3, 5] and group == ic and stride <= 2
      benefit 10
  pattern cat : Concat(xs*)
  pipeline"""))
    p = t.pattern("conv_act")
    assert p.benefit == 10 and p.anchor_ops == ("Conv",)
    assert p.steps[1].ops == ("Relu", "Clip") and p.steps[1].optional
    x, w, b = p.steps[0].operands
    assert (x.const, w.const, b.const, b.optional) == (False, True, True, True)
    c0, c1, c2, c3 = p.constraints
    assert (c0.lhs.var, c0.lhs.modulo, c0.op, c0.rhs.value) == ("ic", 4, "==", 0)
    assert (c1.lhs.var, c1.op, c1.values) == ("kernel", "in", (1, 3, 5))
    assert (c2.lhs.var, c2.rhs.var) == ("group", "ic")
    assert c3.op == "<="
    assert t.pattern("cat").steps[0].operands[0].variadic
    assert t.pattern("cat").benefit == 1


def _child(body: str, tmp_path: Path, parent: str = "arm64") -> Target:
    text = f'target child extends {parent} "a child" {{\n{body}\n}}\n'
    path = tmp_path / "child.qtarget"
    path.write_text(text)
    return load_target(path)


def test_child_overrides_statement_of_same_kind(tmp_path):
    base = load_target("arm64")
    t = _child("rounding half_to_even\nrequant float_scale", tmp_path)
    assert t.rounding == "half_to_even" and t.requant.style == "float_scale"
    assert t.activation == base.activation and t.patterns == base.patterns
    assert t.lineage == ("child", "arm64")


def test_child_pattern_replaces_by_name_and_keeps_order(tmp_path):
    base = load_target("arm64")
    t = _child("pattern mul : Mul(a, b) -> Relu?  benefit 7\n"
               "pattern leaky : LeakyRelu(x)", tmp_path)
    names = [p.name for p in t.patterns]
    assert names == [p.name for p in base.patterns] + ["leaky"]
    assert t.pattern("mul").benefit == 7 and len(t.pattern("mul").steps) == 2


def test_child_drops(tmp_path):
    t = _child("drop pattern relu, mul\ndrop passthrough Resize\ndrop float HardSwish\n"
               "pattern hswish : HardSwish(x)", tmp_path)
    names = {p.name for p in t.patterns}
    assert "relu" not in names and "mul" not in names and "hswish" in names
    assert not t.is_passthrough("Resize") and t.is_passthrough("MaxPool")
    assert not t.stays_float("HardSwish") and t.stays_float("Softmax")


def test_child_op_list_replaces_whole_list(tmp_path):
    t = _child("passthrough Reshape", tmp_path)
    assert t.passthrough_ops == ("Reshape",)


def test_child_placement_merges_by_key(tmp_path):
    t = _child("placement { qdq_per_consumer true }", tmp_path)
    assert t.placement.qdq_per_consumer and t.placement.quantize_weighted_outputs


def test_child_layout_rules_replace_parent_rules_per_op(tmp_path):
    t = _child("layout Conv NHWC", tmp_path, parent="cuda")
    assert [r.layout for r in t.layout_rules_for("Conv")] == ["NHWC"]
    # cuda's rules named Conv and ConvTranspose: ConvTranspose keeps its rules
    assert [r.layout for r in t.layout_rules_for("ConvTranspose")] == ["NC32HW32", "NC4HW4"]
    dropped = _child("drop layout ConvTranspose", tmp_path, parent="cuda")
    assert dropped.layout_rules_for("ConvTranspose") == ()


def test_parent_next_to_child_wins_over_shipped(tmp_path):
    (tmp_path / "mybase.qtarget").write_text(BASE.replace("target t", "target mybase"))
    t = _child("rounding half_away_from_zero", tmp_path, parent="mybase")
    assert t.lineage == ("child", "mybase") and t.patterns == ()


def test_override_merges_with_role_default():
    t = parse_target(BASE.replace("  pipeline", "  weight for Gemm asymmetric\n  pipeline"))
    s = t.scheme("weight", "Gemm")
    assert (s.dtype, s.symmetric, s.per_channel, s.axis) == ("int8", False, True, 0)


def test_format_output_is_the_language(tmp_path):
    text = format_target(load_target("x86-avx2"))
    assert text.startswith("# resolved: x86-avx2 <- x86")
    assert "extends" not in text  # inheritance is applied, not restated
    assert re.search(r"^  weight\s+int8 symmetric per_channel\(axis=0\) narrow pair_safe$",
                     text, re.M)
    p = tmp_path / "flat.qtarget"
    p.write_text(text)
    assert load_target(p) == load_target("x86-avx2")


# ------------------------------------------------------------------ the docs walk-through


def _doc_blocks() -> list[str]:
    return re.findall(r"```qtarget\n(.*?)```", DOC.read_text(), re.S)


def test_doc_example_parses():
    complete = [b for b in _doc_blocks()
                if re.search(r"^target ", b, re.M) and b.rstrip().endswith("}")]
    assert len(complete) >= 2, "docs/target-language.md has complete qtarget examples"
    for block in complete:
        t = parse_target(block, "doc-example.qtarget")
        assert parse_target(format_target(t)) == t


def test_write_your_own_target_walkthrough(tmp_path):
    # Step 1: copy the shipped arm64 file.
    mine = tmp_path / "mychip.qtarget"
    mine.write_text(Path(shipped_target_path("arm64")).read_text())
    # Step 2: rename it and change one line: float requantization instead of Q31.
    text = mine.read_text()
    text = text.replace('target arm64 "', 'target mychip "', 1)
    assert "  requant    fixed_point(q31)\n" in text
    text = text.replace("  requant    fixed_point(q31)\n", "  requant    float_scale\n")
    mine.write_text(text)
    # Step 3: load it.
    t = load_target(str(mine))
    assert t.name == "mychip" and t.requant.style == "float_scale"
    arm = load_target("arm64")
    assert t.patterns == arm.patterns and t.layout_rules == arm.layout_rules
    # The same change as a three-line child file.
    child = tmp_path / "mychip2.qtarget"
    child.write_text('target mychip2 extends arm64 "arm64 with float requant" {\n'
                     "  requant float_scale\n}\n")
    t2 = load_target(str(child))
    assert t2.requant == t.requant and t2.patterns == t.patterns
    # the doc shows exactly these edits
    doc = DOC.read_text()
    assert "requant    float_scale" in doc and "target mychip" in doc


def test_load_target_passes_a_target_through():
    t = load_target("cuda")
    assert load_target(t) is t
    assert hash(t) == hash(parse_target(format_target(t)))
