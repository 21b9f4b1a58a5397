"""The quantization plan is a typed annotation end to end, kernels are found in one place,
passes declare typed options that the manager checks before the first pass, and no pass
reads the report to decide what to do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures import models
from qcompiler import Pass, register_pass
from qcompiler.driver.build import build
from qcompiler.errors import PipelineError, UsageError
from qcompiler.ir.clone import clone_ir
from qcompiler.pipeline import all_passes, build_pipeline
from qcompiler.pipeline.manager import _snapshot
from qcompiler.pipeline.options import Option
from qcompiler.quant.plan import Kernel, Plan

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("qcompiler", "passes") for p in (ROOT / d).rglob("*.py"))


def _calib(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def _build(**kw):
    kw.setdefault("options", {})
    kw["options"].setdefault("evaluate", False)
    return build(models.conv_bn_relu(), kw.pop("target", "x86"), calib=_calib(), **kw)


# ------------------------------------------------------------------------------ the plan
def test_no_plan_travels_as_json_in_notes():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
            for i, line in enumerate(p.read_text().splitlines(), 1) if "quant_plan" in line]
    assert hits == []
    assert any("ann.plan" in p.read_text() for p in SOURCES)


def test_find_kernels_has_one_home():
    defs = [p.relative_to(ROOT) for p in SOURCES if re.search(r"^def (find_kernels|default_float_reason)\b",
                                                                p.read_text(), re.M)]
    assert defs == [Path("qcompiler/quant/kernels.py")]
    for name in ("insert_observers.py", "import_qdq.py"):
        text = (ROOT / "passes" / name).read_text()
        assert "from qcompiler.quant.kernels import" in text and "def _default_reason" not in text


def test_no_pass_reads_the_report():
    for p in (ROOT / "passes").glob("*.py"):
        text = p.read_text()
        assert not re.search(r"report(\.get\(|\[\"pipeline\"\])", text), p.name


def test_plan_is_typed_and_reaches_the_report():
    r = _build()
    plan = r.ir.ann.plan
    assert isinstance(plan, Plan) and plan.kernels and all(isinstance(k, Kernel) for k in plan.kernels)
    assert r.report["quantization"]["kernels"] == len(plan.kernels)
    assert r.report["quantization"]["quantized_tensors"] == len(plan.tensors)
    assert r.report["float_reasons"] == dict(sorted(plan.float_reasons.items()))
    assert "quant_plan" not in r.ir.ann.notes


def test_plan_survives_clone_and_snapshot_as_a_copy():
    r = _build()
    for copy in (clone_ir(r.ir), _snapshot(r.ir)):
        assert copy.ann.plan == r.ir.ann.plan and copy.ann.plan is not r.ir.ann.plan
        copy.ann.plan.kernels.clear()
        assert r.ir.ann.plan.kernels  # independent


def test_dynamic_mode_writes_a_typed_plan():
    r = build(models.matmul_bn(batch=1), "x86", options={"mode": "dynamic", "evaluate": False})
    assert isinstance(r.ir.ann.plan, Plan) and r.ir.ann.plan.tensors == []
    assert r.report["quantization"]["kernels"] == len(r.ir.ann.plan.kernels) > 0


def test_a_pass_that_needs_the_plan_says_which_pass_makes_it():
    with pytest.raises(Exception, match="needs the quantization plan.*insert-observers"):
        build(models.conv_bn_relu(), "x86", calib=_calib(), pipeline=["canonicalize", "test-needs-plan"],
              options={"evaluate": False})


@register_pass("test-needs-plan", requires={"canonical"}, provides={"observed"})
class _NeedsPlan(Pass):
    """Reads the plan without any pass having made it."""

    config = {}

    def run(self, ir, ctx):
        from qcompiler.quant.plan import require_plan

        require_plan(ir, self.name)
        return False


# ------------------------------------------------------------------- wants / offers
@register_pass("test-wants-means", requires={"calibrated"}, wants={"input-means"})
class _WantsMeans(Pass):
    """Records whether calibrate measured the input means for it."""

    config = {}

    def run(self, ir, ctx):
        ctx.pass_report(self.name)["means"] = sorted(ir.ann.notes.get("input_means") or {})
        return False


def test_calibrate_measures_means_only_when_a_later_pass_wants_them():
    base = ["canonicalize", "fold-bn", "fuse-conv-bias-act", "insert-observers", "calibrate"]
    with_means = _build(pipeline=base + ["test-wants-means"])
    assert with_means.report["passes"]["test-wants-means"]["means"]  # the conv's input
    without = _build(pipeline=base)
    assert "input_means" not in without.ir.ann.notes
    assert all_passes()["bias-correction"].wants == {"input-means"}
    assert "input-means" in all_passes()["calibrate"].offers


# ------------------------------------------------------------------------ options
def test_builtin_passes_declare_their_options():
    passes = all_passes()
    cal = passes["calibrate"].config
    assert cal["percentile"].type is float and cal["percentile"].default == 99.99
    assert passes["insert-observers"].config["keep_float"].type is list
    assert passes["fold-bn"].config == {}  # declares none, takes none
    builtins = [c for c in passes.values() if c.__module__.startswith("qcompiler.passes.")]
    assert len(builtins) >= 19 and all(c.config is not None for c in builtins)


@pytest.mark.parametrize("pass_options, match", [
    ({"calibrate": {"percentil": 99.0}}, r"pass 'calibrate' has no option 'percentil'.*did you mean 'percentile'"),
    ({"fold-bn": {"x": 1}}, r"pass 'fold-bn' has no option 'x'.*its options: none"),
    ({"calibrate": {"percentile": "high"}}, r"option 'percentile' of pass 'calibrate' is str 'high', not a number"),
    ({"insert-observers": {"keep_float": "conv*"}}, r"option 'keep_float' of pass 'insert-observers' .* not a list"),
    ({"calibrat": {"percentile": 99.0}}, r"pass options are given for 'calibrat', which is not in the pipeline"),
])
def test_bad_pass_options_are_one_line_usage_errors(pass_options, match):
    with pytest.raises(UsageError, match=match) as e:
        _build(pass_options=pass_options)
    assert "\n" not in str(e.value) and "hint:" in str(e.value)


def test_build_wide_options_are_checked_before_the_first_pass(tmp_path):
    with pytest.raises(UsageError, match=r"option 'percentile' of pass 'calibrate' is bool True, not a number"):
        _build(options={"percentile": True}, dump_dir=str(tmp_path / "dumps"))
    assert not list((tmp_path / "dumps").glob("01-*"))  # not even canonicalize ran
    with pytest.raises(UsageError, match=r"option 'emit' of pass 'fold-requant' is 'xml', not one of qdq, qop"):
        _build(options={"emit": "xml"})


def test_own_options_win_over_build_wide_ones_and_numbers_are_coerced():
    by_pass = _build(pass_options={"calibrate": {"calib_method": "percentile", "percentile": "99.0"}},
                     options={"percentile": 50.0})
    build_wide = _build(options={"calib_method": "percentile", "percentile": 99.0})
    assert by_pass.model.SerializeToString() == build_wide.model.SerializeToString()
    other = _build(options={"calib_method": "percentile", "percentile": 90.0})
    assert other.model.SerializeToString() != build_wide.model.SerializeToString()


def test_option_coercion_rules():
    assert Option(int, 0).coerce("12", "p", "n") == 12 and Option(int, 0).coerce(np.int64(3), "p", "n") == 3
    assert Option(float, 0.0).coerce(2, "p", "x") == 2.0
    for opt, bad in ((Option(int, 0), 1.5), (Option(int, 0), True), (Option(bool, False), "yes"),
                     (Option(list, ()), "a"), (Option(dict, None), [1])):
        with pytest.raises(UsageError, match="of pass 'p'"):
            opt.coerce(bad, "p", "k")
    assert Option(int, 0).coerce(None, "p", "n") is None


def test_undeclared_plugin_passes_take_options_unchecked():
    p = build_pipeline(["test-undeclared"], options={"test-undeclared": {"anything": [1, 2]}})
    assert p[0].options == {"anything": [1, 2]} and p[0].settings(None)["anything"] == [1, 2]


@register_pass("test-undeclared")
class _Undeclared(Pass):
    """A pass written before options were declared."""

    def run(self, ir, ctx):
        return False


def test_passes_command_lists_options():
    from qcompiler.cli.main import cli

    res = CliRunner().invoke(cli, ["passes"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("calibrate "))
    block = "\n".join(lines[i:i + 6])
    assert "option percentile: float = 99.99" in block and "offers: input-means" in block
    assert "option keep_float: list" in res.output and "wants: input-means" in res.output


def test_pipeline_error_is_not_masked_by_option_checks():
    with pytest.raises(PipelineError, match="requires 'observed'"):
        _build(pipeline=["canonicalize", "calibrate"], pass_options={"calibrate": {"percentile": 99.0}})
