"""The layout plan: per-conv decisions with reasons, conversions only at region edges, and
the lower-layout pass on the IR."""

from __future__ import annotations

import dataclasses

import onnx

from qcompiler.ir import ir_to_model, load_ir
from qcompiler.lowering.conv_layout import decide_conv
from qcompiler.lowering.lower import lower_to_program, plan_layouts
from qcompiler.target import load_target, parse_target
from qcompiler.pipeline import Context
from qcompiler.pipeline.registry import get_pass

from test_lowering_models import inputs, qdq


def _decide(target, ic, oc, group, k=3):
    return decide_conv("c", ic, oc, group, (k, k), (1, 1), (1, 1), load_target(target))


def test_first_layer_ic3():
    d = _decide("arm64", 3, 16, 1)
    assert (d.layout, d.input_layout, d.kind) == ("NCHW44", "NCHW", "first")
    assert d.reason == "IC=3: first-layer NCHW44 packing"


def test_first_layer_ic3_oc6_padded():
    d = _decide("arm64", 3, 6, 1)
    assert (d.layout, d.kind, d.oc_padded) == ("NCHW44", "first", 8)
    assert d.reason == "IC=3: first-layer NCHW44 packing; OC=6 not a multiple of 4: padded to 8"


def test_oc6_padded_to_8():
    d = _decide("arm64", 16, 6, 1)
    assert (d.layout, d.kind, d.ic_padded, d.oc_padded) == ("NCHW44", "dense", 16, 8)
    assert d.reason == "OC=6 not a multiple of 4: padded to 8; dense NCHW44"


def test_depthwise_channel_wise():
    d = _decide("arm64", 32, 32, 32)
    assert (d.layout, d.kind) == ("NCHW44", "depthwise")
    assert d.reason == "depthwise: channel-wise NCHW44"
    d = _decide("arm64", 6, 6, 6)
    assert d.reason == "depthwise: channel-wise NCHW44; G=6 not a multiple of 4: padded to 8"


def test_grouped_conv_without_a_rule_keeps_nchw():
    d = _decide("arm64", 12, 12, 3)
    assert d.layout == "NCHW" and d.kind == "group"
    assert d.reason.endswith("keeps NCHW") and "group=3" in d.reason


def test_no_padding_target_falls_back():
    prof = dataclasses.replace(parse_target(
        'target strict extends arm64 "no padding" {\n layout Conv NCHW44 when group == 1 and ic % 4 == 0 and oc % 4 == 0\n}'),
        pad_channels=None)
    d = decide_conv("c", 16, 6, 1, (3, 3), (1, 1), (1, 1), prof)
    assert d.layout == "NCHW" and "oc=6" not in d.reason and "keeps NCHW" in d.reason


def test_dot_and_cuda_layouts():
    assert _decide("arm64-dot", 16, 16, 1).layout == "NCHW44_DOT"
    assert _decide("cuda", 64, 64, 1).reason == "IC=64, OC=64: dense NC32HW32"
    d = _decide("cuda", 3, 16, 1)
    assert d.layout == "NC4HW4" and d.reason.startswith("IC=3 not a multiple of 4: padded to 4")


def test_plan_counts_conversions_at_region_edges_only():
    q = qdq("mixed")
    plan = plan_layouts(q, "arm64").to_json()
    # NCHW44 region: entry after Quantize (first layer reads NCHW: none), the grouped conv
    # (NCHW), the concat of 6 + 8 channels (NCHW), the graph output; nothing else
    assert plan["conv_layouts"] == {"NCHW44": 8, "NCHW": 1}
    assert plan["num_conversions"] == len(plan["conversions"]) <= 5
    convs = {(c["tensor"], c["dst"]) for c in plan["conversions"]}
    assert len(convs) == len(plan["conversions"]), "a tensor is converted to a layout once"
    prog = lower_to_program(q, "arm64")
    assert prog.conversions() == plan["num_conversions"]
    for n in prog.nodes:
        if n.op == "LayoutConvert":
            assert n.attrs["src"] != n.attrs["dst"]


def test_plain_target_needs_no_conversions():
    plan = plan_layouts(qdq("mixed"), "x86").to_json()
    assert plan["num_conversions"] == 0


def _run_pass(ir, target):
    ctx = Context(target=target)
    changed = get_pass("lower-layout")().run(ir, ctx)
    return ctx, changed


def test_lower_layout_pass_annotates_the_ir():
    from qcompiler.target import load_target

    ir = load_ir(qdq("small"))
    target = load_target("arm64")
    ctx, changed = _run_pass(ir, target)
    assert changed
    ann = ir.ann.layout
    first = [v for v in ann.values() if "first-layer" in v]
    assert first == ["NCHW44 (IC=3: first-layer NCHW44 packing; OC=6 not a multiple of 4: padded to 8)"]
    assert any(v.startswith("NCHW44 (depthwise: channel-wise NCHW44") for v in ann.values())
    plan = ir.ann.notes["layout_plan"]
    assert plan["target"] == "arm64" and len(plan["convs"]) == len(ann) == 3
    rep = ctx.report["passes"]["lower-layout"]
    assert rep["convs"] == 3 and rep["padded_convs"] >= 2
    # the build report names each conv's layout and why
    assert rep["decisions"] == ann and any("first-layer" in v for v in rep["decisions"].values())
    # the graph stays valid QDQ ONNX and runs in ONNX Runtime
    model = ir_to_model(ir)
    onnx.checker.check_model(model)
    from qcompiler.lowering.verify import ort_session

    ort_session(model).run(None, {"input": inputs(1)[0]})
    # the printer shows the decisions
    from qcompiler.ir import format_ir

    assert "@layout=NCHW44 (IC=3: first-layer" in format_ir(ir)


def test_program_follows_the_stored_plan():
    ir = load_ir(qdq("small"))
    _run_pass(ir, load_target("arm64"))
    conv = next(d for d in ir.ann.notes["layout_plan"]["convs"] if d["kind"] == "dense")
    conv.update(layout="NCHW", input_layout="NCHW", ic_padded=conv["ic"], oc_padded=conv["oc"],
                reason="edited by hand")
    prog = lower_to_program(ir, "arm64")
    node = next(n for n in prog.nodes if n.op == "Conv" and n.attrs["reason"] == "edited by hand")
    assert node.attrs["layout"] == "NCHW"
    # still right
    from qcompiler.lowering.verify import verify_program

    rep = verify_program(prog, ir_to_model(ir), inputs(4), layerwise=True)
    assert all(t.max_steps <= 1 for t in rep.layers)


def test_pass_in_a_pipeline_with_our_quantizer():
    """canonicalize ... place-qdq, fold-requant, lower-layout from the arm64 target file,
    then the program from the IR."""
    from qcompiler.driver.build import build
    from qcompiler.lowering.verify import verify_program
    from test_lowering_models import small_net

    data = inputs(8, seed=50)
    res = build(small_net(), target="arm64", calib=lambda: iter({"input": x} for x in data))
    assert "lower-layout" in res.report["pipeline"]
    assert any("first-layer" in v for v in res.ir.ann.layout.values())
    prog = lower_to_program(res.ir, res.target)
    rep = verify_program(prog, res.model, inputs(6), layerwise=True)
    assert rep.layers and all(t.max_steps <= 1 for t in rep.layers), rep.format()
    assert rep.task_rate == 1.0


def test_concat_of_whole_blocks_stays_blocked():
    from test_lowering_models import HW, Net, quantize

    b = Net(5)
    x = b.conv("input", 3, 8, 3)
    cat = b.op("Concat", [b.conv(x, 8, 4, 1), b.conv(x, 8, 6, 3)], axis=1)  # 4 + 6: whole blocks first
    y = b.conv(cat, 10, 8, 1)
    q = quantize(b.model([1, 3, HW, HW], y))
    prog = lower_to_program(q, "arm64")
    concat = next(n for n in prog.nodes if n.op == "Concat")
    assert concat.attrs["layout"] == "NCHW44"
    assert prog.plan["num_conversions"] == 1  # only the graph output back to NCHW
    from qcompiler.lowering.verify import verify_program

    rep = verify_program(prog, q, inputs(3), task="none", layerwise=True)
    assert all(t.max_steps <= 1 for t in rep.layers), rep.format()
