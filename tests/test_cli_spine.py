"""The command line over the compiler spine: build (pipelines, dumps, plugins, safe output),
passes, inspect, diff, help, and one-line errors. In-process through qcompiler.cli.main.main,
plus real subprocesses of the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_same_outputs, op_count, random_feeds, save
from qcompiler.cli.main import main
from fixtures import models

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugins" / "count_convs.py"


def cli(capsys, *args):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, match=None):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    if match:
        assert match in lines[0], lines[0]


def mul_by_one_model() -> onnx.ModelProto:
    """conv_bn_relu with Relu -> Mul(1.0) -> Sigmoid appended (a Mul the plugin removes)."""
    m = models.conv_bn_relu()
    g = m.graph
    old_out = g.output[0].name
    relu = next(n for n in g.node if n.op_type == "Relu")
    relu.output[0] = "relu_out"
    g.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    g.node.extend([helper.make_node("Mul", ["relu_out", "one"], ["scaled"], name="times_one"),
                   helper.make_node("Sigmoid", ["scaled"], [old_out], name="sigmoid")])
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.fixture
def model_path(tmp_path):
    return save(mul_by_one_model(), tmp_path / "model.onnx")


# ----------------------------------------------------------------------------- build
def test_build_with_pipeline(capsys, tmp_path, model_path):
    out = tmp_path / "out.onnx"
    code, _, err = cli(capsys, "build", model_path, "-o", out, "--pipeline", "canonicalize,fold-bn")
    assert code == 0, err
    assert f"wrote {out}" in err
    assert "[1/2] canonicalize" in err and "[2/2] fold-bn" in err
    m = onnx.load(out)
    assert op_count(m, "BatchNormalization") == 0
    assert_same_outputs(model_path, m, random_feeds(m))


def test_build_default_pipeline_and_output_name(capsys, tmp_path, model_path):
    code, _, err = cli(capsys, "build", model_path, "-q")
    assert code == 0, err
    assert err == ""
    out = tmp_path / "model.opt.onnx"
    assert out.is_file()
    assert_same_outputs(model_path, str(out), random_feeds(onnx.load(model_path)))


def test_build_with_plugin_dumps_and_report(capsys, tmp_path, model_path):
    out, dumps, report = tmp_path / "out.onnx", tmp_path / "dumps", tmp_path / "report.json"
    code, _, err = cli(capsys, "build", model_path, "-o", out, "--plugin", PLUGIN,
                       "--add-pass", "count-convs:after=canonicalize", "--dump-dir", dumps, "--report", report)
    assert code == 0, err
    assert "count-convs" in err
    index = json.loads((dumps / "index.json").read_text())
    assert [e["pass"] for e in index] == ["input", "canonicalize", "count-convs", "fold-bn", "fuse-conv-bias-act"]
    for ext in (".onnx", ".txt", ".diff"):
        assert (dumps / f"02-count-convs{ext}").is_file()
    assert "- times_one = Mul(" in (dumps / "02-count-convs.diff").read_text()
    rep = json.loads(report.read_text())
    assert rep["passes"]["count-convs"] == {"convs": 1, "mul_by_one_removed": 1}
    m = onnx.load(out)
    assert op_count(m, "Mul") == 0
    assert_same_outputs(model_path, m, random_feeds(m))


def test_plugin_pass_requires_canonical(capsys, tmp_path, model_path):
    code, _, err = cli(capsys, "build", model_path, "-o", tmp_path / "o.onnx", "--plugin", PLUGIN,
                       "--pipeline", "count-convs,canonicalize")
    assert_one_line_error(code, err, "'count-convs' requires 'canonical'")
    assert not (tmp_path / "o.onnx").exists()


def test_build_refuses_to_overwrite_without_force(capsys, tmp_path, model_path):
    out = tmp_path / "out.onnx"
    assert cli(capsys, "build", model_path, "-o", out, "-q")[0] == 0
    before = out.read_bytes()
    code, _, err = cli(capsys, "build", model_path, "-o", out, "-q")
    assert_one_line_error(code, err, "already exists")
    assert "--force" in err
    assert out.read_bytes() == before
    code, _, err = cli(capsys, "build", model_path, "-o", out, "-q", "--force")
    assert code == 0, err


def test_build_refuses_output_equal_to_input(capsys, tmp_path, model_path):
    before = Path(model_path).read_bytes()
    for extra in ((), ("--force",)):
        code, _, err = cli(capsys, "build", model_path, "-o", model_path, *extra)
        assert_one_line_error(code, err, "is the input model")
    # also through another spelling of the same path
    other = Path(model_path).parent / "." / Path(model_path).name
    code, _, err = cli(capsys, "build", model_path, "-o", other, "--force")
    assert_one_line_error(code, err, "is the input model")
    assert Path(model_path).read_bytes() == before


@pytest.mark.parametrize("args, match", [
    (["--pipeline", "fold-bn"], "'fold-bn' requires 'canonical'"),
    (["--pipeline", "fuse-conv-bias-act,canonicalize"], "put it before 'fuse-conv-bias-act'"),
    (["--pipeline", "canonicalize,fold-b"], "did you mean 'fold-bn'"),
    (["--add-pass", "fold-bn:sometime=canonicalize"], "cannot read --add-pass"),
    (["--add-pass", "fold-bn:after=nothing"], "'nothing' is not in the pipeline"),
    (["--plugin", "no_such_plugin.py"], "no_such_plugin.py"),
])
def test_build_pipeline_errors_are_one_line(capsys, tmp_path, model_path, args, match):
    code, _, err = cli(capsys, "build", model_path, "-o", tmp_path / "o.onnx", *args)
    assert_one_line_error(code, err, match)


def test_build_error_on_bad_model(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    code, _, err = cli(capsys, "build", bad, "-o", tmp_path / "o.onnx")
    assert_one_line_error(code, err, "bad.onnx")
    code, _, err = cli(capsys, "build", tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx")
    assert_one_line_error(code, err, "does not exist")


def test_plugin_with_a_syntax_error(capsys, tmp_path, model_path):
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text("def run(:\n")
    code, _, err = cli(capsys, "build", model_path, "-o", tmp_path / "o.onnx", "--plugin", plugin)
    assert_one_line_error(code, err, "syntax error")


def test_debug_shows_traceback(capsys, tmp_path):
    code, _, err = cli(capsys, "build", tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx", "--debug")
    assert code == 2
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ")


def test_click_usage_errors_are_one_line(capsys, model_path):
    code, _, err = cli(capsys, "build", model_path, "--no-such-option")
    assert_one_line_error(code, err, "--no-such-option")
    code, _, err = cli(capsys, "frobnicate")
    assert_one_line_error(code, err)


# ----------------------------------------------------------------------------- other commands
def test_passes_lists_requires_provides(capsys):
    code, out, _ = cli(capsys, "passes")
    assert code == 0
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("fold-bn "))
    assert "requires: canonical" in lines[i + 1] and "bn-folded" in lines[i + 1]
    for name in ("canonicalize", "fuse-conv-bias-act"):
        assert any(line.startswith(name + " ") for line in lines)


def test_inspect(capsys, model_path):
    code, out, _ = cli(capsys, "inspect", model_path)
    assert code == 0
    assert "opset:   13" in out
    assert "nodes: 5" in out
    assert "input:   input:f32[1,3,16,16]" in out
    ops = {line.split()[0]: int(line.split()[1]) for line in out.split("ops:")[1].strip().splitlines()}
    assert ops == {"BatchNormalization": 1, "Conv": 1, "Mul": 1, "Relu": 1, "Sigmoid": 1}


def test_inspect_bad_file_is_one_line(capsys, tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    code, _, err = cli(capsys, "inspect", p)
    assert_one_line_error(code, err, "is empty")


def test_diff_of_two_dump_steps(capsys, tmp_path, model_path):
    dumps = tmp_path / "dumps"
    assert cli(capsys, "build", model_path, "-o", tmp_path / "o.onnx", "--dump-dir", dumps, "-q")[0] == 0
    for a, b in ((dumps / "01-canonicalize.onnx", dumps / "02-fold-bn.onnx"),
                 (dumps / "01-canonicalize.txt", dumps / "02-fold-bn.txt"),
                 (dumps / "01-canonicalize", dumps / "02-fold-bn")):
        code, out, err = cli(capsys, "diff", a, b)
        assert code == 0, err
        assert out.startswith("# ") and "1 removed" in out
        assert "- bn = BatchNormalization(" in out
        assert "~ conv = Conv(" in out
    code, out, _ = cli(capsys, "diff", dumps / "02-fold-bn", dumps / "02-fold-bn")
    assert code == 0 and "0 added, 0 removed, 0 changed" in out


def test_diff_missing_step_is_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "diff", tmp_path / "01-x.txt", tmp_path / "02-y.txt")
    assert_one_line_error(code, err, "does not exist")


@pytest.mark.parametrize("command", [[], ["build"], ["passes"], ["inspect"], ["diff"], ["targets"],
                                     ["targets", "show"]])
def test_help_for_every_command(capsys, command):
    code, out, err = cli(capsys, *command, "--help")
    assert code == 0, err
    assert "Usage:" in out
    assert err == ""


def test_every_command_has_help_text():
    from qcompiler.cli.main import cli as group

    for name, cmd in group.commands.items():
        assert cmd.help, f"command '{name}' has no help text"


# ----------------------------------------------------------------------------- console script
def _console_script() -> str:
    exe = Path(sys.executable).parent / ("qcompiler.exe" if os.name == "nt" else "qcompiler")
    assert exe.exists(), f"console script not installed next to {sys.executable}"
    return str(exe)


def test_console_script_build_with_plugin(tmp_path, model_path):
    out, dumps = tmp_path / "out.onnx", tmp_path / "dumps"
    proc = subprocess.run([_console_script(), "build", model_path, "-o", str(out), "--plugin", str(PLUGIN),
                           "--add-pass", "count-convs:after=canonicalize", "--dump-dir", str(dumps)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (dumps / "02-count-convs.onnx").is_file()
    assert_same_outputs(model_path, str(out), random_feeds(onnx.load(model_path)))
    # a second run without --force: one-line error, exit code 2, no traceback
    proc = subprocess.run([_console_script(), "build", model_path, "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "already exists" in proc.stderr and "Traceback" not in proc.stderr


def test_plugin_pass_keeps_shape_changing_and_output_muls():
    """The example pass only removes a Mul by one that changes nothing visible."""
    from qcompiler.driver.build import build

    one5 = numpy_helper.from_array(np.ones((1, 1, 1, 1, 1), np.float32), "one5")  # broadcasts x up to rank 5
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Mul", ["x", "one5"], ["y5"], name="rank_up"),
             helper.make_node("Mul", ["x", "two"], ["x2"], name="times_two"),
             helper.make_node("Mul", ["one", "x2"], ["out"], name="times_one_at_output")]
    g = helper.make_graph(nodes, "muls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                          [helper.make_tensor_value_info("y5", TensorProto.FLOAT, [1, 1, 2, 3, 4]),
                           helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 3, 4])],
                          [one5, one, two])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    res = build(m, pipeline=["canonicalize", "count-convs"], plugins=[str(PLUGIN)])
    assert res.report["passes"]["count-convs"] == {"convs": 0, "mul_by_one_removed": 0}
    assert op_count(res.model, "Mul") == 3
    assert_same_outputs(m, res.model, random_feeds(m))
