"""Pipeline building (requires/provides, no reordering, --add-pass), the pass manager
(cleanup + sort + verify after every pass, errors named after the pass, keep-going) and dumps."""

from __future__ import annotations

import json

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from conftest import assert_same_outputs, random_feeds
from qcompiler import Pass, register_pass
from qcompiler.driver.build import FP32_PIPELINE, build
from qcompiler.errors import PassError, PipelineError, VerifyError
from qcompiler.ir import format_ir, load_ir
from qcompiler.pipeline import Context, PassManager, all_passes, build_pipeline
from qcompiler.pipeline.dumps import DumpInstrument
from qcompiler.pipeline.manager import parse_insertion
from fixtures import models


# ----------------------------------------------------------------------------- test passes
@register_pass("test-noop", requires={"canonical"})
class NoopPass(Pass):
    """Does nothing (pipeline-order tests)."""

    def run(self, ir, ctx):
        ctx.pass_report(self.name)["ran"] = True
        return False


@register_pass("test-dead-node")
class DeadNodePass(Pass):
    """Adds a node whose output nobody reads."""

    def run(self, ir, ctx):
        x = ir.graph.inputs[0]
        ir.add_node("Neg", [x], name="orphan", out_dtype=x.dtype, out_shape=x.shape)
        return True


@register_pass("test-corrupt")
class CorruptPass(Pass):
    """Leaves a node reading a tensor nothing produces (bypassing the gateway)."""

    def run(self, ir, ctx):
        node = next(n for n in ir.graph.nodes if n.op == "Relu")
        node.inputs[0] = gs.Variable("phantom", dtype=np.float32, shape=[1])
        return True


@register_pass("test-crash")
class CrashPass(Pass):
    """Half-edits the IR, then raises."""

    def run(self, ir, ctx):
        conv = next(n for n in ir.graph.nodes if n.op == "Conv")
        ir.rename_node(conv, "half_done")
        raise RuntimeError("boom")


@register_pass("test-user-error")
class UserErrorPass(Pass):
    """Raises a user-facing error."""

    def run(self, ir, ctx):
        raise PipelineError("the option 'x' is wrong", "set it right")


@register_pass("test-options")
class OptionsPass(Pass):
    """Records its options."""

    def run(self, ir, ctx):
        ctx.pass_report(self.name)["options"] = dict(self.options)
        return False


# ----------------------------------------------------------------------------- building
def names(pipeline):
    return [p.name for p in pipeline]


def test_fp32_pipeline_builds_in_order():
    assert names(build_pipeline(FP32_PIPELINE)) == list(FP32_PIPELINE)


def test_requirement_not_provided_is_refused_naming_both_passes():
    with pytest.raises(PipelineError) as e:
        build_pipeline(["fold-bn"])
    text = str(e.value)
    assert "'fold-bn'" in text and "'canonicalize'" in text and "'canonical'" in text
    assert "\n" not in text


def test_wrong_order_is_refused_not_reordered():
    with pytest.raises(PipelineError) as e:
        build_pipeline(["fuse-conv-bias-act", "canonicalize"])
    text = str(e.value)
    assert "'fuse-conv-bias-act'" in text and "'canonicalize'" in text
    assert "put it before" in text


def test_valid_orders_are_kept_as_given():
    order = ["canonicalize", "fuse-conv-bias-act", "fold-bn"]
    assert names(build_pipeline(order)) == order


def test_unknown_pass_suggests_the_nearest():
    with pytest.raises(PipelineError, match="unknown pass 'fold-b'.*did you mean 'fold-bn'"):
        build_pipeline(["canonicalize", "fold-b"])
    with pytest.raises(PipelineError, match="unknown pass 'canonicalise'.*did you mean 'canonicalize'"):
        build_pipeline(["canonicalise"])
    with pytest.raises(PipelineError, match="qcompiler passes"):
        build_pipeline(["zzzzzzzz"])


def test_empty_pipeline_is_refused():
    with pytest.raises(PipelineError, match="empty"):
        build_pipeline(["", " "])


def test_add_pass_after_before_and_end():
    assert names(build_pipeline(FP32_PIPELINE, ["test-noop:after=fold-bn"])) == [
        "canonicalize", "fold-bn", "test-noop", "fuse-conv-bias-act"]
    assert names(build_pipeline(FP32_PIPELINE, ["test-noop:before=fold-bn"])) == [
        "canonicalize", "test-noop", "fold-bn", "fuse-conv-bias-act"]
    assert names(build_pipeline(FP32_PIPELINE, ["test-noop"])) == list(FP32_PIPELINE) + ["test-noop"]


def test_add_pass_checks_requirements_and_anchor():
    with pytest.raises(PipelineError, match="'test-noop' requires 'canonical'"):
        build_pipeline(FP32_PIPELINE, ["test-noop:before=canonicalize"])
    with pytest.raises(PipelineError, match="'place-qdq-x' is not in the pipeline"):
        build_pipeline(FP32_PIPELINE, ["test-noop:after=place-qdq-x"])
    with pytest.raises(PipelineError, match="cannot read --add-pass"):
        build_pipeline(FP32_PIPELINE, ["test-noop:during=fold-bn"])
    with pytest.raises(PipelineError, match="cannot read --add-pass"):
        parse_insertion("test-noop:after=")


def test_pass_options_reach_the_pass():
    p = build_pipeline(["test-options"], options={"test-options": {"level": 3}})
    ctx = Context()
    PassManager(p).run(load_ir(models.conv_bn_relu()), ctx)
    assert ctx.report["passes"]["test-options"]["options"] == {"level": 3}


def test_registry_lists_builtins_with_requires_provides():
    passes = all_passes()
    assert passes["fold-bn"].requires == {"canonical"}
    assert "bn-folded" in passes["fold-bn"].provides
    assert "canonical" in passes["canonicalize"].provides
    assert passes["fuse-conv-bias-act"].description


def test_register_pass_rejects_non_passes_and_name_clashes():
    with pytest.raises(TypeError):
        register_pass("test-bad")(object)

    class Other(Pass):
        def run(self, ir, ctx):
            return False

    with pytest.raises(PipelineError, match="two passes are registered as 'fold-bn'"):
        register_pass("fold-bn")(Other)


# ----------------------------------------------------------------------------- manager
def run(pipeline, model=None, instruments=(), keep_going=False):
    ir = load_ir(model if model is not None else models.conv_bn_relu())
    ctx = Context()
    pm = PassManager(build_pipeline(pipeline), list(instruments), keep_going=keep_going)
    pm.run(ir, ctx)
    return ir, ctx, pm


def test_manager_removes_dead_nodes_after_each_pass():
    ir, ctx, pm = run(["test-dead-node"])
    assert all(n.name != "orphan" for n in ir.graph.nodes)
    assert pm.timings[0]["dead_nodes_removed"] == 1
    assert pm.timings[0]["changed"] is True


def test_manager_sorts_after_each_pass():
    @register_pass("test-append-front")
    class AppendFront(Pass):
        """Adds a node and puts it first although it reads the last node's input."""

        def run(self, ir, ctx):
            out = ir.graph.outputs[0]
            relu = ir.producer(out)
            neg = ir.add_node("Neg", [relu.outputs[0]], name="neg_out", out_dtype=out.dtype,
                              out_shape=out.shape)
            ir.replace_uses(out, neg.outputs[0], exclude=[neg])
            ir.graph.nodes.insert(0, ir.graph.nodes.pop())  # unsorted on purpose
            return True

    ir, _, _ = run(["test-append-front"])
    assert ir.graph.nodes[-1].name == "neg_out"
    assert [o.name for o in ir.graph.outputs] == ["output"]


def test_manager_reports_verifier_failure_with_pass_name():
    with pytest.raises(PassError) as e:
        run(["test-corrupt"])
    text = str(e.value)
    assert text.startswith("pass 'test-corrupt'")
    assert "phantom" in text and "nothing produces" in text
    assert isinstance(e.value.__cause__, VerifyError)


def test_manager_wraps_exceptions_with_pass_name():
    with pytest.raises(PassError, match=r"pass 'test-crash' failed: RuntimeError: boom"):
        run(["test-crash"])


def test_manager_keeps_user_errors_message_and_names_the_pass():
    with pytest.raises(PassError) as e:
        run(["test-user-error"])
    assert str(e.value) == "pass 'test-user-error': the option 'x' is wrong (hint: set it right)"
    assert e.value.exit_code == 2


def test_keep_going_restores_ir_and_records_skip():
    model = models.conv_bn_relu()
    before = format_ir(load_ir(model))
    ir, ctx, pm = run(["test-crash", "canonicalize", "test-corrupt", "fold-bn"], model, keep_going=True)
    skipped = ctx.report["skipped_passes"]
    assert [s["pass"] for s in skipped] == ["test-crash", "test-corrupt"]
    assert "boom" in skipped[0]["error"] and "phantom" in skipped[1]["error"]
    assert all(n.name != "half_done" for n in ir.graph.nodes)  # the half edit was rolled back
    assert [t["pass"] for t in pm.timings] == ["canonicalize", "fold-bn"]
    assert not any(n.op == "BatchNormalization" for n in ir.graph.nodes)
    ir.verify()
    # only the crashing passes were undone: restoring after test-crash gave back the input IR
    ir2, _, _ = run(["test-crash"], model, keep_going=True)
    assert format_ir(ir2) == before


def test_keep_going_result_still_matches_the_original():
    m = models.conv_bn_relu()
    res = build(m, pipeline=["canonicalize", "test-corrupt", "fold-bn", "fuse-conv-bias-act"], keep_going=True)
    assert res.report["skipped_passes"][0]["pass"] == "test-corrupt"
    assert_same_outputs(m, res.model, random_feeds(m))


def test_report_has_timings_and_pipeline():
    res = build(models.conv_bn_relu())
    assert res.report["pipeline"] == list(FP32_PIPELINE)
    assert [t["pass"] for t in res.report["pass_timings"]] == list(FP32_PIPELINE)
    assert all(t["seconds"] >= 0 for t in res.report["pass_timings"])


# ----------------------------------------------------------------------------- dumps
def test_dumps_write_every_step(tmp_path):
    d = tmp_path / "dumps"
    build(models.conv_bn_relu(), dump_dir=str(d))
    steps = ["00-input", "01-canonicalize", "02-fold-bn", "03-fuse-conv-bias-act"]
    for stem in steps:
        assert (d / f"{stem}.onnx").is_file()
        assert (d / f"{stem}.txt").is_file()
        if stem != "00-input":
            assert (d / f"{stem}.diff").is_file()
    index = json.loads((d / "index.json").read_text())
    assert [e["file"] for e in index] == steps
    assert [e["pass"] for e in index] == ["input"] + list(FP32_PIPELINE)
    assert (d / "index.txt").is_file()
    diff = (d / "02-fold-bn.diff").read_text()
    assert diff.startswith("# fold-bn:")
    assert "- bn = BatchNormalization(" in diff  # the BN was removed
    assert "~ conv = Conv(" in diff  # the conv changed (new weight, bias)
    # each dump opens again and prints what was dumped
    ir = load_ir(d / "02-fold-bn.onnx")
    assert format_ir(ir).splitlines()[1:] == (d / "02-fold-bn.txt").read_text().splitlines()[1:]
    assert not (d / "failed.txt").exists()


def test_dumps_on_failure_name_the_pass_and_keep_last_good(tmp_path):
    d = tmp_path / "dumps"
    with pytest.raises(PassError):
        build(models.conv_bn_relu(), pipeline=["canonicalize", "fold-bn", "test-corrupt", "fuse-conv-bias-act"],
              dump_dir=str(d))
    failed = (d / "failed.txt").read_text()
    assert "03-test-corrupt" in failed and "phantom" in failed
    assert "02-fold-bn" in failed
    assert (d / "02-fold-bn.onnx").is_file()
    load_ir(d / "02-fold-bn.onnx").verify()
    assert not list(d.glob("03-*"))
    assert [e["file"] for e in json.loads((d / "index.json").read_text())][-1] == "02-fold-bn"


def test_dumps_clear_an_old_run(tmp_path):
    d = tmp_path / "dumps"
    build(models.conv_bn_relu(), dump_dir=str(d))
    build(models.conv_bn_relu(), pipeline=["canonicalize"], dump_dir=str(d))
    assert sorted(p.name for p in d.glob("0*.onnx")) == ["00-input.onnx", "01-canonicalize.onnx"]


def test_dump_instrument_with_keep_going(tmp_path):
    d = tmp_path / "dumps"
    ir = load_ir(models.conv_bn_relu())
    pm = PassManager(build_pipeline(["canonicalize", "test-crash", "fold-bn"]), [DumpInstrument(d)],
                     keep_going=True)
    pm.run(ir, Context())
    index = [e["file"] for e in json.loads((d / "index.json").read_text())]
    assert index == ["00-input", "01-canonicalize", "03-fold-bn"]
    assert "02-test-crash" in (d / "failed.txt").read_text()
