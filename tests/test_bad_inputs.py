"""Bad inputs: every one fails cleanly through the real CLI.

Each case builds its inputs under ``in/`` (models, calibration data, target files,
plugins; text cases come from the corpus in tests/data/bad/, binary ones are generated
here), runs ``qcompiler build ...`` in-process with the working directory at the case's
temporary folder, and asserts:

- the documented exit code (2 for user errors);
- exactly one stderr line starts with "error:", it names the problem (a fragment), and
  no "Traceback" appears anywhere;
- nothing is left in ``out/`` (no output model, no report, no temporary files);
- every file under ``in/`` is byte-identical afterwards.

A few inputs that look odd but are valid (one calibration sample, symbolic dims only,
an unknown custom-domain op without calibration, ...) must build; they keep the same
invariants apart from the one output file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.cli.main import main
from fixtures.models import conv_bn_relu, residual_concat_net, with_external_data

CORPUS = Path(__file__).resolve().parent / "data" / "bad"
SHAPE = (1, 3, 16, 16)
OUT = "out/m.int8.onnx"


# ------------------------------------------------------------------------------ helpers
def _ir8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep hand-built models loadable by the installed onnxruntime."""
    model.ir_version = 8
    return model


def good_model() -> onnx.ModelProto:
    return conv_bn_relu(cin=3, cout=8, hw=16)


def save(model: onnx.ModelProto, name: str = "model.onnx") -> str:
    path = Path("in") / name
    onnx.save(model, str(path))
    return str(path)


def calib(n: int = 4, shape=SHAPE[1:], name: str = "calib.npy", dtype=np.float32, seed: int = 0) -> str:
    path = Path("in") / name
    np.save(path, np.random.default_rng(seed).random((n, *shape)).astype(dtype))
    return str(path)


def corpus(name: str, as_name: Optional[str] = None) -> str:
    dst = Path("in") / (as_name or name)
    shutil.copyfile(CORPUS / name, dst)
    return str(dst)


def tiny_graph(nodes, inputs, outputs, inits=(), opset: int = 13, extra_opsets=()) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "bad", list(inputs), list(outputs), list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return _ir8(helper.make_model(g, opset_imports=imports))


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def hash_tree(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def files_under(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def run_cli(args, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def error_lines(err: str) -> List[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------ cases
@dataclass
class Case:
    id: str
    setup: Callable[[], List[str]]  # runs in the case folder; returns the CLI args
    fragment: str
    code: int = 2


CASES: List[Case] = []


def case(id: str, fragment: str, code: int = 2):
    def wrap(fn):
        CASES.append(Case(id, fn, fragment, code))
        return fn

    return wrap


def build(model: str, *more: str, out: Optional[str] = OUT) -> List[str]:
    args = ["build", model]
    if out is not None:
        args += ["-o", out]
    return args + list(more)


# ---- models
@case("model-missing", "model file 'in/nope.onnx' does not exist")
def _():
    return build("in/nope.onnx")


@case("model-empty", "is empty")
def _():
    Path("in/model.onnx").write_bytes(b"")
    return build("in/model.onnx")


@case("model-truncated", "not a readable ONNX model")
def _():
    data = good_model().SerializeToString()
    Path("in/model.onnx").write_bytes(data[: len(data) // 2])
    return build("in/model.onnx")


@case("model-truncated-header", "in/model.onnx")
def _():
    Path("in/model.onnx").write_bytes(good_model().SerializeToString()[:7])
    return build("in/model.onnx")


@case("model-is-text", "in/model.onnx")
def _():
    return build(corpus("not_onnx.txt", "model.onnx"))


@case("model-is-png", "in/model.onnx")
def _():
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00"
           b"\x90\x91h6\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\r\xefF\xb8\x00\x00"
           b"\x00\x00IEND\xaeB`\x82")
    Path("in/model.onnx").write_bytes(png)
    return build("in/model.onnx")


@case("model-random-bytes", "in/model.onnx")
def _():
    Path("in/model.onnx").write_bytes(np.random.default_rng(7).bytes(4096))
    return build("in/model.onnx")


@case("model-is-a-tensor", "in/model.onnx")
def _():
    t = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "weight")
    Path("in/model.onnx").write_bytes(t.SerializeToString())
    return build("in/model.onnx")


@case("model-folder", "is a directory")
def _():
    os.mkdir("in/model.onnx")
    return build("in/model.onnx")


@case("model-missing-initializer", "missing an initializer")
def _():
    m = good_model()
    del m.graph.initializer[0]
    return build(save(m))


@case("model-cycle", "cycle")
def _():
    m = tiny_graph([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                    helper.make_node("Relu", ["a"], ["b"], name="n2")],
                   [vi("x", [1, 4])], [vi("a", [1, 4])])
    return build(save(m))


@case("model-duplicate-tensor", "produced by two nodes")
def _():
    m = tiny_graph([helper.make_node("Relu", ["x"], ["y"], name="r1"),
                    helper.make_node("Sigmoid", ["x"], ["y"], name="r2")],
                   [vi("x", [1, 4])], [vi("y", [1, 4])])
    return build(save(m))


@case("model-output-shadows-input", "both a graph input and a node output")
def _():
    m = tiny_graph([helper.make_node("Relu", ["x"], ["x"], name="r1")], [vi("x", [1, 4])], [vi("x", [1, 4])])
    return build(save(m))


@case("model-output-not-produced", "graph output 'z'")
def _():
    m = tiny_graph([helper.make_node("Relu", ["x"], ["y"], name="r1")], [vi("x", [1, 4])], [vi("z", [1, 4])])
    return build(save(m))


@case("model-opset-5", "opset 5")
def _():
    m = good_model()
    m.opset_import[0].version = 5
    return build(save(m))


@case("model-future-opset", "opset 99")
def _():
    m = good_model()
    m.opset_import[0].version = 99
    return build(save(m))


@case("model-no-default-opset", "no default ONNX opset")
def _():
    m = good_model()
    m.opset_import[0].domain = "com.example"
    return build(save(m))


@case("model-external-data-missing", "external data file 'model.onnx.data'")
def _():
    path = with_external_data(good_model(), "in", "model.onnx", size_threshold=0)
    os.unlink(path + ".data")
    return build(path)


@case("model-external-data-moved", "external data file 'model.onnx.data' of the model is missing")
def _():
    with_external_data(good_model(), "in/orig", "model.onnx", size_threshold=0)
    os.mkdir("in/moved")
    shutil.move("in/orig/model.onnx", "in/moved/model.onnx")
    return build("in/moved/model.onnx")


@case("model-external-data-truncated", "external data")
def _():
    path = with_external_data(good_model(), "in", "model.onnx", size_threshold=0)
    data = Path(path + ".data").read_bytes()
    Path(path + ".data").write_bytes(data[:16])
    return build(path)


@case("model-custom-op-with-calibration", "com.example")
def _():
    w = numpy_helper.from_array(np.random.default_rng(0).random((4, 3, 3, 3)).astype(np.float32), "w")
    m = tiny_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                    helper.make_node("MyOp", ["c"], ["y"], name="custom", domain="com.example")],
                   [vi("x", [1, 3, 8, 8])], [vi("y", None)], [w], extra_opsets=[("com.example", 1)])
    return build(save(m), "--calib", calib(shape=(3, 8, 8)))


# ---- calibration data
@case("calib-missing", "calibration data 'in/nope' does not exist")
def _():
    return build(save(good_model()), "--calib", "in/nope")


@case("calib-wrong-shape", "expects (1, 3, 16, 16)")
def _():
    return build(save(good_model()), "--calib", calib(shape=(3, 8, 8)))


@case("calib-wrong-rank", "expects (1, 3, 16, 16)")
def _():
    return build(save(good_model()), "--calib", calib(shape=(16, 16)))


@case("calib-wrong-channels", "axis 1 is 1, not 3")
def _():
    return build(save(good_model()), "--calib", calib(shape=(1, 16, 16)))


@case("calib-complex-dtype", "dtype complex64")
def _():
    np.save("in/calib.npy", np.zeros((2, *SHAPE[1:]), np.complex64))
    return build(save(good_model()), "--calib", "in/calib.npy")


@case("calib-string-dtype", "not a number type")
def _():
    np.save("in/calib.npy", np.full((2, *SHAPE[1:]), "x"))
    return build(save(good_model()), "--calib", "in/calib.npy")


@case("calib-wrong-input-name", "has array 'images'")
def _():
    np.savez("in/calib.npz", images=np.zeros((2, *SHAPE[1:]), np.float32))
    return build(save(good_model()), "--calib", "in/calib.npz")


@case("calib-npz-without-input", "no array for input 'input'")
def _():
    np.savez("in/calib.npz")
    return build(save(good_model()), "--calib", "in/calib.npz")


@case("calib-empty-folder", "has no .npy, .npz or image files")
def _():
    os.mkdir("in/calib")
    return build(save(good_model()), "--calib", "in/calib")


@case("calib-zero-samples", "is empty")
def _():
    return build(save(good_model()), "--calib", calib(n=0))


@case("calib-nan", "NaN")
def _():
    a = np.zeros((2, *SHAPE[1:]), np.float32)
    a[0, 0, 0, 0] = np.nan
    np.save("in/calib.npy", a)
    return build(save(good_model()), "--calib", "in/calib.npy")


@case("calib-inf-late", "Inf values in sample 3")
def _():
    a = np.zeros((5, *SHAPE[1:]), np.float32)
    a[3, 1, 2, 3] = np.inf
    np.save("in/calib.npy", a)
    return build(save(good_model()), "--calib", "in/calib.npy")


@case("calib-undecodable-images", "cannot decode calibration image")
def _():
    os.mkdir("in/images")
    Path("in/images/a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    Path("in/images/b.jpg").write_bytes(b"not a jpeg")
    return build(save(good_model()), "--calib", "in/images")


@case("calib-unsupported-file", "unsupported type '.txt'")
def _():
    return build(save(good_model()), "--calib", corpus("not_onnx.txt"))


@case("calib-truncated-npy", "cannot read calibration file")
def _():
    path = calib()
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:100])
    return build(save(good_model()), "--calib", path)


@case("calib-mixed-folder", "mixes 1 array files and 1 images")
def _():
    os.mkdir("in/calib")
    np.save("in/calib/a.npy", np.zeros(SHAPE[1:], np.float32))
    Path("in/calib/b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return build(save(good_model()), "--calib", "in/calib")


@case("calib-folder-sample-shape", "(in in/calib/b.npy)")
def _():
    os.mkdir("in/calib")
    np.save("in/calib/a.npy", np.zeros(SHAPE[1:], np.float32))
    np.save("in/calib/b.npy", np.zeros((3, 8, 8), np.float32))
    return build(save(good_model()), "--calib", "in/calib")


def images(n: int = 2) -> str:
    from PIL import Image

    os.makedirs("in/images", exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(f"in/images/{i}.png")
    return "in/images"


@case("calib-preprocess-missing", "preprocess file 'in/nope.json' does not exist")
def _():
    return build(save(good_model()), "--calib", images(), "--preprocess", "in/nope.json")


@case("calib-preprocess-bad-json", "not valid JSON")
def _():
    return build(save(good_model()), "--calib", images(), "--preprocess", corpus("preprocess_bad.json"))


@case("calib-images-wrong-size", "expects (1, 3, 16, 16)")
def _():
    Path("in/pre.json").write_text('{"resize": [8, 8], "layout": "NCHW"}')
    return build(save(good_model()), "--calib", images(), "--preprocess", "in/pre.json")


@case("calib-fixed-batch-too-big", "does not fit input 'input'")
def _():
    return build(save(good_model()), "--calib", calib(), "--batch-size", "4")


# ---- targets, pipelines and plugins
@case("target-syntax-error", "syntax_error.qtarget:4:")
def _():
    return build(save(good_model()), "--calib", calib(), "--target", corpus("syntax_error.qtarget"))


@case("target-unknown-op", "unknown op 'Convolution'")
def _():
    return build(save(good_model()), "--calib", calib(), "--target", corpus("unknown_op.qtarget"))


@case("target-unknown-name", "unknown target 'x87'")
def _():
    return build(save(good_model()), "--calib", calib(), "--target", "x87")


@case("target-file-missing", "in/nope.qtarget")
def _():
    return build(save(good_model()), "--calib", calib(), "--target", "in/nope.qtarget")


@case("target-needs-calibration", "needs calibration data")
def _():
    return build(save(good_model()), "--target", "x86")


@case("pipeline-unknown-pass", "unknown pass 'fold-bm'")
def _():
    return build(save(good_model()), "--pipeline", "canonicalize,fold-bm")


@case("pipeline-wrong-order", "pass 'fold-bn' requires 'canonical'")
def _():
    return build(save(good_model()), "--pipeline", "fold-bn,canonicalize")


@case("add-pass-bad-anchor", "'no-such-pass' is not in the pipeline")
def _():
    return build(save(good_model()), "--add-pass", "fold-bn:after=no-such-pass")


@case("add-pass-bad-syntax", "cannot read --add-pass")
def _():
    return build(save(good_model()), "--add-pass", "fold-bn:under=canonicalize")


@case("plugin-syntax-error", "syntax error")
def _():
    return build(save(good_model()), "--plugin", corpus("plugin_syntax_error.py"))


@case("plugin-import-error", "failed to import: ModuleNotFoundError")
def _():
    return build(save(good_model()), "--plugin", corpus("plugin_import_error.py"))


@case("plugin-missing", "plugin file 'in/nope.py' does not exist")
def _():
    return build(save(good_model()), "--plugin", "in/nope.py")


@case("plugin-pass-raises", "pass 'corpus-raises' failed: RuntimeError: deliberate failure")
def _():
    return build(save(good_model()), "--plugin", corpus("plugin_raises.py"),
                 "--add-pass", "corpus-raises:after=fold-bn")


@case("plugin-pass-corrupts-graph", "pass 'corpus-corrupts': node")
def _():
    return build(save(good_model()), "--plugin", corpus("plugin_corrupts.py"),
                 "--pipeline", "canonicalize,corpus-corrupts")


@case("plugin-pass-raises-in-quant-pipeline", "pass 'corpus-raises'")
def _():
    return build(save(good_model()), "--calib", calib(), "--target", "x86",
                 "--plugin", corpus("plugin_raises.py"), "--add-pass", "corpus-raises:after=place-qdq",
                 "--report", "out/report.json", "--dump-dir", "dumps")


# ---- command lines
@case("output-is-input", "is the input model")
def _():
    return build(save(good_model()), "--force", out="in/model.onnx")


@case("output-is-input-other-spelling", "is the input model")
def _():
    return build(save(good_model()), "--force", out="in/../in/./model.onnx")


@case("output-exists", "already exists")
def _():
    Path("in/existing.onnx").write_bytes(b"keep me")
    return build(save(good_model()), out="in/existing.onnx")


@case("output-folder-missing", "output folder 'out/missing' does not exist")
def _():
    return build(save(good_model()), out="out/missing/m.onnx")


@case("output-is-folder", "is a folder")
def _():
    return build(save(good_model()), out="out")


@case("unknown-option", "No such option '--frobnicate'")
def _():
    return build(save(good_model()), "--frobnicate")


@case("missing-argument", "Missing argument 'MODEL'")
def _():
    return ["build"]


@case("missing-option-value", "'--calib' requires an argument")
def _():
    return build(save(good_model()), "--calib")


@case("unknown-command", "No such command 'bulid'. Did you mean 'build'? (hint: see 'qcompiler --help')")
def _():
    return ["bulid", "in/model.onnx"]


@case("calib-samples-zero", "--calib-samples")
def _():
    return build(save(good_model()), "--calib", calib(), "--calib-samples", "0")


@case("calib-samples-not-a-number", "--calib-samples")
def _():
    return build(save(good_model()), "--calib", calib(), "--calib-samples", "many")


@case("batch-size-negative", "--batch-size")
def _():
    return build(save(good_model()), "--calib", calib(), "--batch-size", "-1")


@case("method-unknown", "--method")
def _():
    return build(save(good_model()), "--calib", calib(), "--method", "magic")


@case("percentile-out-of-range", "--percentile")
def _():
    return build(save(good_model()), "--calib", calib(), "--method", "percentile", "--percentile", "120")


@case("report-folder-missing", "report folder 'out/nodir' does not exist")
def _():
    return build(save(good_model()), "--calib", calib(), "--report", "out/nodir/r.json")


@case("report-is-input", "is the input model")
def _():
    return build(save(good_model()), "--calib", calib(), "--report", "in/model.onnx")


@case("report-is-output", "--report and -o name the same file")
def _():
    return build(save(good_model()), "--calib", calib(), "--report", OUT)


@case("output-is-calibration", "output 'in/calib.npy' is an input of the build")
def _():
    return build(save(good_model()), "--calib", calib(), "--force", out="in/calib.npy")


@case("report-exists", "report 'in/r.json' already exists")
def _():
    Path("in/r.json").write_text("{}")
    return build(save(good_model()), "--calib", calib(), "--report", "in/r.json")


@case("report-is-calibration", "is an input")
def _():
    return build(save(good_model()), "--calib", calib(), "--report", "in/calib.npy", "--force")


@case("dump-dir-is-file", "is a file")
def _():
    Path("in/dumps").write_text("a file")
    return build(save(good_model()), "--dump-dir", "in/dumps")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_bad_input(c: Case, workdir: Path, capsys):
    args = c.setup()
    before = hash_tree(workdir / "in")
    rc, out, err = run_cli(args, capsys)
    errors = error_lines(err)
    assert "Traceback" not in err + out
    assert len(errors) == 1, err
    assert c.fragment in errors[0], errors[0]
    assert "(hint: " in errors[0] and errors[0].endswith(")"), errors[0]
    assert rc == c.code, err
    assert files_under(workdir / "out") == [], "output left behind"
    assert hash_tree(workdir / "in") == before, "an input file changed"
    assert not any(n.startswith(".") for n in files_under(workdir / "in")), "a temporary file in in/"


# ------------------------------------------------------------------------------ odd but valid
@dataclass
class Good:
    id: str
    setup: Callable[[], List[str]]


GOOD: List[Good] = []


def good(id: str):
    def wrap(fn):
        GOOD.append(Good(id, fn))
        return fn

    return wrap


@good("calib-single-sample")
def _():
    return build(save(good_model()), "--calib", calib(n=1))


@good("calib-single-sample-file-in-folder")
def _():
    os.mkdir("in/calib")
    np.save("in/calib/only.npy", np.random.default_rng(1).random(SHAPE[1:]).astype(np.float32))
    return build(save(good_model()), "--calib", "in/calib")


@good("calib-float64-data")
def _():
    return build(save(good_model()), "--calib", calib(dtype=np.float64))


@good("symbolic-dims-only")
def _():
    m = good_model()
    for d, p in zip(m.graph.input[0].type.tensor_type.shape.dim, "NCHW"):
        d.ClearField("dim_value")
        d.dim_param = p
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    return build(save(m), "--calib", calib(n=3))


@good("custom-op-fp32-only")
def _():
    m = tiny_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                    helper.make_node("MyOp", ["r"], ["y"], name="custom", domain="com.example")],
                   [vi("x", [1, 4])], [vi("y", [1, 4])], extra_opsets=[("com.example", 1)])
    return build(save(m))


@good("duplicate-node-names")
def _():
    m = good_model()
    for n in m.graph.node:
        n.name = "same"
    return build(save(m), "--calib", calib())


@good("empty-node-names")
def _():
    m = residual_concat_net(channels=8, hw=8, blocks=1)
    for n in m.graph.node:
        n.name = ""
    return build(save(m), "--calib", calib(shape=(3, 8, 8)))


@good("overwrite-with-force")
def _():
    Path(OUT).write_bytes(b"old")
    return build(save(good_model()), "--force")


@good("calib-samples-limit")
def _():
    return build(save(good_model()), "--calib", calib(n=8), "--calib-samples", "2")


@pytest.mark.parametrize("g", GOOD, ids=lambda g: g.id)
def test_odd_but_valid(g: Good, workdir: Path, capsys):
    args = g.setup()
    before = hash_tree(workdir / "in")
    rc, out, err = run_cli(args + ["-q"], capsys)
    assert rc == 0, err
    assert error_lines(err) == [] and "Traceback" not in err
    assert files_under(workdir / "out") == ["m.int8.onnx"]
    assert hash_tree(workdir / "in") == before
    onnx.checker.check_model(onnx.load(OUT))


def test_custom_op_stays_in_fp32_build(workdir: Path, capsys):
    """An op of an unknown domain is kept as is by the FP32 pipeline."""
    args = GOOD[[g.id for g in GOOD].index("custom-op-fp32-only")].setup()
    rc, _, err = run_cli(args + ["-q"], capsys)
    assert rc == 0, err
    ops = [(n.domain, n.op_type) for n in onnx.load(OUT).graph.node]
    assert ("com.example", "MyOp") in ops


def test_unwritable_output_folder(workdir: Path, capsys, monkeypatch):
    os.mkdir("out/ro")
    os.chmod("out/ro", 0o555)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anyway: make the check see it
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == "out/ro" and mode & os.W_OK
                            else real_access(p, mode, **k))
    try:
        model = save(good_model())
        before = hash_tree(workdir / "in")
        rc, _, err = run_cli(build(model, out="out/ro/m.onnx"), capsys)
        assert rc == 2
        assert error_lines(err) == ["error: output folder 'out/ro' is not writable (hint: choose another -o path)"]
        assert files_under(workdir / "out") == []
        assert hash_tree(workdir / "in") == before
    finally:
        os.chmod("out/ro", 0o755)


# ------------------------------------------------------------------------------ real processes
@pytest.mark.parametrize("case_id", ["model-truncated", "unknown-option", "plugin-pass-corrupts-graph"])
def test_subprocess_exit_codes(case_id: str, workdir: Path):
    c = CASES[[c.id for c in CASES].index(case_id)]
    args = c.setup()
    before = hash_tree(workdir / "in")
    # cwd outside the repository: `python -m` puts the cwd first on sys.path
    p = subprocess.run([sys.executable, "-m", "qcompiler", *args], capture_output=True, text=True, timeout=120,
                       cwd=workdir)
    assert p.returncode == c.code, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    errors = error_lines(p.stderr)
    assert len(errors) == 1 and c.fragment in errors[0], p.stderr
    assert files_under(workdir / "out") == []
    assert hash_tree(workdir / "in") == before


def test_debug_shows_traceback(workdir: Path):
    """--debug is the way to see the traceback of a user error."""
    c = CASES[[c.id for c in CASES].index("plugin-pass-raises")]
    args = c.setup()
    p = subprocess.run([sys.executable, "-m", "qcompiler", *args, "--debug"], capture_output=True, text=True,
                       timeout=120, cwd=workdir)
    assert p.returncode == 2
    assert "Traceback" in p.stderr and "deliberate failure" in p.stderr


# ------------------------------------------------------------------------------ safe output
def _raises_args(*more):
    model = save(good_model())
    return build(model, "--calib", calib(), "--target", "x86", "--plugin", corpus("plugin_raises.py"),
                 "--add-pass", "corpus-raises:after=place-qdq", *more)


def test_failed_pass_leaves_no_output_report_or_temp(workdir: Path, capsys):
    """A pass fails after the earlier ones did their work: no model, no report, no temp file;
    the dump folder keeps the last good IR and says which pass failed."""
    args = _raises_args("--report", "out/report.json", "--dump-dir", "dumps")
    before = hash_tree(workdir / "in")
    rc, _, err = run_cli(args, capsys)
    assert rc == 2 and len(error_lines(err)) == 1
    assert files_under(workdir / "out") == []
    assert hash_tree(workdir / "in") == before
    failed = (workdir / "dumps" / "failed.txt").read_text()
    assert "corpus-raises" in failed and "place-qdq" in failed


def test_failed_build_keeps_existing_output_with_force(workdir: Path, capsys):
    """--force replaces the output only once the new one is complete."""
    Path(OUT).write_bytes(b"previous model")
    Path("out/report.json").write_text("previous report")
    rc, _, err = run_cli(_raises_args("--force", "--report", "out/report.json"), capsys)
    assert rc == 2, err
    assert Path(OUT).read_bytes() == b"previous model"
    assert Path("out/report.json").read_text() == "previous report"
    assert files_under(workdir / "out") == ["m.int8.onnx", "report.json"]


def test_write_failure_leaves_nothing(workdir: Path, capsys, monkeypatch):
    """The disk fills up while the model is written: a user-facing error (exit 2), no partial
    model, no temporary file, no report."""
    import errno

    import qcompiler.ir.io as io

    def full_disk(model, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.onnx, "save_model", full_disk)
    model = save(good_model())
    rc, _, err = run_cli(build(model, "--calib", calib(), "--report", "out/report.json"), capsys)
    assert rc == 2, err
    assert error_lines(err) == [f"error: cannot write output '{OUT}': No space left on device "
                                "(hint: free some space or choose another output path)"]
    assert files_under(workdir / "out") == []


def test_output_has_the_usual_file_mode(workdir: Path, capsys):
    """Outputs are written through a temporary file; they must still get the umask's mode
    (a plain mkstemp file is 0600: unreadable to the group that deploys the model)."""
    model = save(good_model())
    old = os.umask(0o022)
    try:
        rc, _, err = run_cli(build(model, "--calib", calib(), "--report", "out/r.json", "-q"), capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    assert (os.stat(OUT).st_mode & 0o777) == 0o644
    assert (os.stat("out/r.json").st_mode & 0o777) == 0o644


def test_force_overwrites_output_and_report(workdir: Path, capsys):
    Path(OUT).write_bytes(b"old")
    Path("out/r.json").write_text("old")
    model = save(good_model())
    rc, _, err = run_cli(build(model, "--calib", calib(), "--report", "out/r.json", "--force", "-q"), capsys)
    assert rc == 0, err
    onnx.checker.check_model(onnx.load(OUT))
    assert Path("out/r.json").read_text().startswith("{")
    assert files_under(workdir / "out") == ["m.int8.onnx", "r.json"]


def test_cycle_is_a_model_error_not_a_pass_error(workdir: Path, capsys):
    """Regression: a cyclic input graph used to be reported as a failure of the first pass."""
    args = CASES[[c.id for c in CASES].index("model-cycle")].setup()
    rc, _, err = run_cli(args, capsys)
    assert rc == 2
    (line,) = error_lines(err)
    assert line.startswith("error: the input model is not a valid graph: the graph has a cycle")
    assert "pass '" not in line


def test_duplicate_node_names_get_an_accuracy_report(workdir: Path, capsys):
    """Regression: ONNX allows repeated node names, ONNX Runtime does not; the FP32 reference
    run of the report used to fail with an internal error."""
    m = good_model()
    for n in m.graph.node:
        n.name = "same"
    model = save(m)
    rc, _, err = run_cli(build(model, "--calib", calib(), "--report", "out/r.json", "-q"), capsys)
    assert rc == 0, err
    import json

    report = json.loads(Path("out/r.json").read_text())
    assert report["accuracy"]["outputs"]["output"]["cosine"] > 0.99


# ------------------------------------------------------------------------------ graceful degradation
def float_ops_model() -> onnx.ModelProto:
    """Conv -> HardSwish -> Conv -> Tanh -> Conv -> Softmax: convs every target quantizes,
    and ops some targets keep in float."""
    rng = np.random.default_rng(5)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h"], name="hardswish"),
             helper.make_node("Conv", ["h", "w2"], ["c2"], name="conv2"),
             helper.make_node("Tanh", ["c2"], ["t"], name="tanh"),
             helper.make_node("Conv", ["t", "w3"], ["c3"], name="conv3"),
             helper.make_node("Softmax", ["c3"], ["y"], name="softmax", axis=1)]
    return tiny_graph(nodes, [vi("x", [1, 3, 16, 16])], [vi("y", [1, 8, 16, 16])],
                      [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 8, 8, 1, 1), w("w3", 8, 8, 1, 1)], opset=14)


def _report(path="out/r.json"):
    import json

    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("target,float_nodes", [("x86", ("hardswish", "tanh")),  # x86 has QLinearSoftmax
                                                ("arm64", ("hardswish", "tanh", "softmax")),
                                                ("cuda", ("hardswish", "tanh", "softmax"))])
def test_unquantizable_ops_stay_float_with_reasons(target, float_nodes, workdir: Path, capsys):
    model = save(float_ops_model())
    rc, _, err = run_cli(build(model, "--calib", calib(), "--target", target, "--report", "out/r.json", "-q"),
                         capsys)
    assert rc == 0, err
    reasons = _report()["float_reasons"]
    for node in float_nodes:
        assert reasons.get(node), f"{target}: no reason recorded for {node}: {reasons}"
    out = onnx.load(OUT)
    ops = [n.op_type for n in out.graph.node]
    assert {"HardSwish", "Tanh", "Softmax"} <= set(ops)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    import onnxruntime as ort

    y = ort.InferenceSession(OUT, providers=["CPUExecutionProvider"]).run(
        None, {"x": np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)})[0]
    assert np.isfinite(y).all()


def test_target_without_conv_kernel_keeps_convs_float(workdir: Path, capsys):
    Path("in/noconv.qtarget").write_text(
        'target noconv extends x86 "x86 without a conv kernel" {\n  drop pattern conv_act\n}\n')
    model = save(good_model())
    rc, _, err = run_cli(build(model, "--calib", calib(), "--target", "in/noconv.qtarget",
                               "--report", "out/r.json", "-q"), capsys)
    assert rc == 0, err
    reasons = _report()["float_reasons"]
    assert any("conv" in k for k in reasons), reasons


def _build_with(extra, capsys, out=OUT, report="out/r.json"):
    model = "in/model.onnx" if Path("in/model.onnx").exists() else save(good_model())
    cal = "in/calib.npy" if Path("in/calib.npy").exists() else calib()
    return run_cli(build(model, "--calib", cal, "--target", "x86", "--report", report, *extra, out=out), capsys)


@pytest.mark.parametrize("plugin,anchor", [("plugin_raises.py", "corpus-raises:after=fold-bn"),
                                           ("plugin_raises.py", "corpus-raises:after=place-qdq"),
                                           ("plugin_corrupts.py", "corpus-corrupts:after=calibrate")])
def test_keep_going_skips_failing_pass_and_restores_ir(plugin, anchor, workdir: Path, capsys):
    """--keep-going: the failing pass is skipped, the IR is restored to what it was before it,
    and the report names it; the result equals a build without that pass."""
    rc, _, err = _build_with(["-q"], capsys, out="out/plain.onnx", report="out/plain.json")
    assert rc == 0, err
    rc, _, err = _build_with(["--plugin", corpus(plugin), "--add-pass", anchor, "--keep-going"], capsys)
    assert rc == 0, err
    assert error_lines(err) == []
    name = anchor.split(":")[0]
    assert any(line.startswith("warning: pass '" + name) and "skipped: --keep-going" in line
               for line in err.splitlines()), err
    skipped = _report()["skipped_passes"]
    assert [s["pass"] for s in skipped] == [name]
    assert skipped[0]["error"]
    assert Path(OUT).read_bytes() == Path("out/plain.onnx").read_bytes(), "the IR was not restored"
    assert "skipped_passes" not in _report("out/plain.json")


def test_keep_going_still_fails_on_bad_input(workdir: Path, capsys):
    """--keep-going skips failing passes; it does not turn input errors into successes."""
    rc, _, err = run_cli(build(save(good_model()), "--calib", calib(shape=(3, 8, 8)), "--keep-going"), capsys)
    assert rc == 2 and "expects (1, 3, 16, 16)" in error_lines(err)[0]
    assert files_under(workdir / "out") == []


def test_interrupt_exits_130_and_leaves_nothing(workdir: Path, capsys):
    """Ctrl-C during a pass (even with --keep-going, which skips only failures): exit 130,
    'error: interrupted', no output, no report, no temporary file."""
    model = save(good_model())
    args = build(model, "--calib", calib(), "--target", "x86", "--plugin", corpus("plugin_interrupt.py"),
                 "--add-pass", "corpus-interrupt:after=calibrate", "--keep-going", "--report", "out/r.json")
    before = hash_tree(workdir / "in")
    rc, out, err = run_cli(args, capsys)
    assert rc == 130
    assert error_lines(err) == ["error: interrupted"]
    assert "Traceback" not in err + out
    assert files_under(workdir / "out") == []
    assert hash_tree(workdir / "in") == before
