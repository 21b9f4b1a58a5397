"""Bad inputs, second corpus: every command, every file a command writes.

Each case prepares its files in a fresh working folder (in/ for inputs, out/ for outputs
that exist beforehand), runs the real CLI in-process there and asserts:

- the documented exit code;
- exactly one stderr line starts with "error:", it names the problem (a fragment) and
  ends in a "(hint: ...)"; no "Traceback" anywhere;
- every file in the working folder is byte-identical afterwards, none is created and none
  removed (the whole folder is hashed, temporary files included).

The classes: the output gateway (inputs, symlinks, hard links, special files, existing
files, folders) for build, mixed-precision, analyze and run; run/verify input data;
errors that were internal (exit 3) on user input; plugins that call sys.exit; options that
were silently accepted; preprocess configs; the read-only commands.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.cli.main import main
from fixtures.models import conv_bn_relu

SHAPE = (1, 3, 16, 16)
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ helpers
def model(name: str = "model.onnx") -> str:
    path = Path("in") / name
    onnx.save(conv_bn_relu(cin=3, cout=8, hw=16), str(path))
    return str(path)


def calib(name: str = "calib.npy", n: int = 4, shape=SHAPE[1:], dtype=np.float32) -> str:
    path = Path("in") / name
    np.save(path, np.random.default_rng(0).random((n, *shape)).astype(dtype))
    return str(path)


def tiny(nodes, inputs, outputs, inits=(), opset: int = 13, ir: int = 8, domains=()) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]
                          + [helper.make_opsetid(d, 1) for d in domains])
    m.ir_version = ir
    return m


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def save(m: onnx.ModelProto, name: str = "model.onnx") -> str:
    path = Path("in") / name
    onnx.save(m, str(path))
    return str(path)


def write(path: str, text: str) -> str:
    Path(path).write_text(text)
    return path


def hash_tree(root: Path) -> Dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = "link:" + os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = f"mode:{stat.S_IFMT(st.st_mode)}"
    return out


PROGRAM: Dict[str, bytes] = {}  # program and QDQ model, built once (module fixture)


def program() -> str:
    Path("in/prog.qprog").write_bytes(PROGRAM["prog"])
    return "in/prog.qprog"


def qdq() -> str:
    Path("in/qdq.onnx").write_bytes(PROGRAM["qdq"])
    return "in/qdq.onnx"


def data(name: str = "x.npy", shape=SHAPE, dtype=np.float32, value=None) -> str:
    path = Path("in") / name
    a = np.random.default_rng(1).random(shape).astype(dtype)
    if value is not None:
        a.flat[0] = value
    np.save(path, a)
    return str(path)


def images(n: int = 2, size=(20, 24)) -> str:
    from PIL import Image

    os.makedirs("in/images", exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(f"in/images/{i}.png")
    return "in/images"


def plugin(body: str, name: str = "plugin.py") -> str:
    return write(f"in/{name}", "from qcompiler.pipeline import Pass, register_pass\n" + body)


# ------------------------------------------------------------------------------ cases
@dataclass
class Case:
    id: str
    cls: str
    setup: Callable[[], List[str]]
    fragment: str
    code: int = 2


CASES: List[Case] = []


def case(id: str, cls: str, fragment: str, code: int = 2):
    def wrap(fn):
        CASES.append(Case(id, cls, fn, fragment, code))
        return fn

    return wrap


def build(*more: str, out: Optional[str] = "out/m.onnx") -> List[str]:
    args = ["build", model(), *more]
    return args + (["-o", out] if out is not None else [])


def quant(*more: str, out: Optional[str] = "out/m.onnx") -> List[str]:
    return build("--target", "x86", "--calib", calib(), *more, out=out)


def mixed(*more: str) -> List[str]:
    return ["mixed-precision", model(), "--target", "x86", "--calib", calib(), *more]


def analyze(*more: str) -> List[str]:
    return ["analyze", model(), "--target", "x86", "--calib", calib(), *more]


G = "output gateway"
# ---- output gateway: build
@case("build-o-symlink-to-model", G, "is the input model")
def _():
    m = model()
    os.symlink(os.path.abspath(m), "out/link.onnx")
    return ["build", m, "-o", "out/link.onnx", "--force"]


@case("build-o-hardlink-to-model", G, "is the input model")
def _():
    m = model()
    os.link(m, "out/hard.onnx")
    return ["build", m, "-o", "out/hard.onnx", "--force"]


@case("build-o-hardlink-to-calib", G, "is an input of the build")
def _():
    c = calib()
    os.link(c, "out/hard.npy")
    return ["build", model(), "--calib", c, "-o", "out/hard.npy", "--force"]


@case("build-o-char-device-force", G, "is a character device, not a regular file")
def _():
    return build("--force", out=os.devnull)


@case("build-o-char-device-symlink", G, "is a character device")
def _():
    os.symlink(os.devnull, "out/null.onnx")
    return build("--force", out="out/null.onnx")


@case("build-o-named-pipe", G, "is a named pipe")
def _():
    os.mkfifo("out/pipe.onnx")
    return build("--force", out="out/pipe.onnx")


@case("build-o-socket", G, "is a socket")
def _():
    s = socket.socket(socket.AF_UNIX)
    s.bind("out/sock.onnx")
    SOCKETS.append(s)
    return build("--force", out="out/sock.onnx")


@case("build-o-empty", G, "-o is empty")
def _():
    return build(out="")


@case("build-o-exists", G, "already exists")
def _():
    Path("out/m.onnx").write_bytes(b"previous")
    return build()


@case("build-o-inside-calib-folder", G, "inside the input folder 'in/calib'")
def _():
    os.mkdir("in/calib")
    np.save("in/calib/a.npy", np.zeros(SHAPE[1:], np.float32))
    return build("--calib", "in/calib", out="in/calib/m.onnx")


@case("build-o-is-preprocess", G, "is an input of the build")
def _():
    pre = write("in/pre.json", '{"resize": [16, 16]}')
    return build("--calib", images(), "--preprocess", pre, "--force", out=pre)


@case("build-o-is-plugin", G, "is an input of the build")
def _():
    p = plugin("")
    return build("--plugin", p, "--force", out=p)


@case("build-o-is-target-file", G, "is an input of the build")
def _():
    t = write("in/t.qtarget", 'target t extends x86 "t" {\n}\n')
    return build("--calib", calib(), "--target", t, "--force", out=t)


@case("build-o-is-overrides", G, "is an input of the build")
def _():
    o = write("in/ov.json", '{"keep_float": []}')
    return quant("--overrides", o, "--force", out=o)


@case("build-report-char-device", G, "report '/dev/null' is a character device")
def _():
    return quant("--report", os.devnull, "--force")


@case("build-report-symlink-to-calib", G, "is an input of the build")
def _():
    os.symlink(os.path.abspath("in/calib.npy"), "out/r.json")
    return quant("--report", "out/r.json", "--force")


@case("build-report-is-folder", G, "File 'out' is a directory")
def _():
    return quant("--report", "out")


@case("build-report-hardlink-of-output", G, "--report and -o name the same file")
def _():
    Path("out/m.onnx").write_bytes(b"old")
    os.link("out/m.onnx", "out/r.json")
    return quant("--report", "out/r.json", "--force")


@case("build-dump-dir-holds-model", G, "is the input model")
def _():
    os.mkdir("in/d")
    m = save(conv_bn_relu(cin=3, cout=8, hw=16), "d/00-input.onnx")
    return ["build", m, "--dump-dir", "in/d", "-o", "out/m.onnx", "--force"]


@case("build-dump-dir-has-dumps", G, "dump folder 'out/dumps' already holds 00-input.txt and 1 more")
def _():
    os.mkdir("out/dumps")
    Path("out/dumps/00-input.txt").write_text("old")
    Path("out/dumps/index.json").write_text("[]")
    return build("--dump-dir", "out/dumps")


@case("build-dump-dir-parent-missing", G, "folder 'out/a' does not exist")
def _():
    return build("--dump-dir", "out/a/b")


@case("build-dump-dir-is-device", G, "is a file")
def _():
    return build("--dump-dir", os.devnull)


# ---- output gateway: mixed-precision, analyze
@case("mp-o-is-model", G, "output 'in/model.onnx' is the input model")
def _():
    return mixed("--min-sqnr", "10", "-o", "in/model.onnx", "--force")


@case("mp-o-is-model-no-force", G, "is the input model")
def _():
    return mixed("--min-sqnr", "10", "-o", "in/model.onnx")


@case("mp-report-is-calib", G, "report 'in/calib.npy' is an input of the search")
def _():
    return mixed("--min-sqnr", "10", "--report", "in/calib.npy", "--force")


@case("mp-report-exists", G, "report 'out/r.json' already exists")
def _():
    Path("out/r.json").write_text("{}")
    return mixed("--min-sqnr", "10", "--report", "out/r.json")


@case("mp-o-exists", G, "output 'out/o.json' already exists")
def _():
    Path("out/o.json").write_text("{}")
    return mixed("--min-sqnr", "10", "-o", "out/o.json")


@case("mp-o-folder-missing", G, "output folder 'out/nodir' does not exist")
def _():
    return mixed("--min-sqnr", "10", "-o", "out/nodir/o.json")


@case("mp-report-char-device", G, "is a character device")
def _():
    return mixed("--min-sqnr", "10", "--report", os.devnull, "--force")


@case("mp-o-and-report-same", G, "--report and -o name the same file")
def _():
    return mixed("--min-sqnr", "10", "-o", "out/x.json", "--report", "out/x.json")


@case("mp-o-is-folder", G, "File 'out' is a directory")
def _():
    return mixed("--min-sqnr", "10", "-o", "out")


@case("analyze-out-is-file", G, "Directory 'in/calib.npy' is a file")
def _():
    return analyze("--out", "in/calib.npy")


@case("analyze-out-holds-analysis", G, "already holds analysis.json")
def _():
    os.mkdir("out/a")
    Path("out/a/analysis.json").write_text("{}")
    return analyze("--out", "out/a")


@case("analyze-out-holds-input", G, "is the input model")
def _():
    os.mkdir("in/a")
    m = save(conv_bn_relu(cin=3, cout=8, hw=16), "a/analysis.md")
    return ["analyze", m, "--target", "x86", "--calib", calib(), "--out", "in/a", "--force"]


@case("analyze-out-parent-missing", G, "folder 'out/x' does not exist")
def _():
    return analyze("--out", "out/x/y")


# ---- output gateway: run
R = "run/verify data"


@case("run-o-is-input", G, "is an input of the run")
def _():
    x = data()
    return ["run", program(), "--input", x, "-o", x, "--force"]


@case("run-o-is-program", G, "is the program")
def _():
    p = program()
    return ["run", p, "--input", data(), "-o", p, "--force"]


@case("run-o-symlink-to-input", G, "is an input of the run")
def _():
    x = data()
    os.symlink(os.path.abspath(x), "out/y.npy")
    return ["run", program(), "--input", x, "-o", "out/y.npy", "--force"]


@case("run-o-exists", G, "output 'out/y.npy' already exists")
def _():
    Path("out/y.npy").write_bytes(b"old")
    return ["run", program(), "--input", data(), "-o", "out/y.npy"]


@case("run-o-char-device", G, "is a character device")
def _():
    return ["run", program(), "--input", data(), "-o", os.devnull, "--force"]


@case("run-o-bad-suffix", G, "must end in .npy or .npz")
def _():
    return ["run", program(), "--input", data(), "-o", "out/y.txt"]


@case("run-o-folder-missing", G, "output folder 'out/no' does not exist")
def _():
    return ["run", program(), "--input", data(), "-o", "out/no/y.npy"]


# ---- run / verify input data
@case("run-wrong-shape", R, "has shape [4,3,8,8], but the program takes [1,3,16,16]")
def _():
    return ["run", program(), "--input", data(shape=(4, 3, 8, 8)), "-o", "out/y.npy"]


@case("run-wrong-rank", R, "(4 axes, not 3)")
def _():
    return ["run", program(), "--input", data(shape=(3, 16, 16)), "-o", "out/y.npy"]


@case("run-complex-data", R, "has dtype complex64, not a number type")
def _():
    return ["run", program(), "--input", data(dtype=np.complex64), "-o", "out/y.npy"]


@case("run-text-data", R, "has dtype <U1, not a number type")
def _():
    np.save("in/x.npy", np.full(SHAPE, "a"))
    return ["run", program(), "--input", "in/x.npy", "-o", "out/y.npy"]


@case("run-object-npz", R, "cannot read input data 'in/x.npz'")
def _():
    np.savez("in/x.npz", input=np.array([{"a": 1}], dtype=object))
    return ["run", program(), "--input", "in/x.npz", "-o", "out/y.npy"]


@case("run-npz-wrong-names", R, "has no array named 'input'")
def _():
    np.savez("in/x.npz", a=np.zeros(SHAPE, np.float32), b=np.zeros(SHAPE, np.float32))
    return ["run", program(), "--input", "in/x.npz", "-o", "out/y.npy"]


@case("run-nan", R, "has 1 NaN or Inf values")
def _():
    return ["run", program(), "--input", data(value=np.nan), "-o", "out/y.npy"]


@case("run-inf", R, "NaN or Inf")
def _():
    return ["run", program(), "--input", data(value=np.inf), "-o", "out/y.npy"]


@case("run-input-folder", R, "is a folder; 'run' takes one input file")
def _():
    os.mkdir("in/xs")
    return ["run", program(), "--input", "in/xs", "-o", "out/y.npy"]


@case("run-input-missing", R, "input data 'in/nope.npy' does not exist")
def _():
    return ["run", program(), "--input", "in/nope.npy", "-o", "out/y.npy"]


@case("run-input-text", R, "is not a .npy or .npz file")
def _():
    return ["run", program(), "--input", write("in/x.txt", "1 2 3"), "-o", "out/y.npy"]


@case("run-input-truncated", R, "cannot read")
def _():
    x = data()
    Path(x).write_bytes(Path(x).read_bytes()[:90])
    return ["run", program(), "--input", x, "-o", "out/y.npy"]


@case("run-program-missing", R, "in/nope.qprog")
def _():
    return ["run", "in/nope.qprog", "--input", data(), "-o", "out/y.npy"]


@case("run-program-is-plain-model", R, "is not a qcompiler program")
def _():
    return ["run", model(), "--input", data(), "-o", "out/y.npy"]


@case("run-program-truncated", R, "in/prog.qprog")
def _():
    p = program()
    Path(p).write_bytes(Path(p).read_bytes()[:500])
    return ["run", p, "--input", data(), "-o", "out/y.npy"]


@case("run-missing-input-option", R, "Missing option '--input'")
def _():
    return ["run", program(), "-o", "out/y.npy"]


@case("verify-wrong-hw", R, "axis 2 is 8, not 16")
def _():
    return ["verify", program(), qdq(), "--data", data(shape=(1, 3, 8, 8))]


@case("verify-object-npz", R, "cannot read input data")
def _():
    np.savez("in/x.npz", input=np.array([None], dtype=object))
    return ["verify", program(), qdq(), "--data", "in/x.npz"]


@case("verify-folder-one-bad-file", R, "batch 1")
def _():
    os.mkdir("in/xs")
    np.save("in/xs/a.npy", np.zeros(SHAPE, np.float32))
    np.save("in/xs/b.npy", np.zeros((1, 3, 8, 8), np.float32))
    return ["verify", program(), qdq(), "--data", "in/xs"]


@case("verify-empty-folder", R, "holds no .npy or .npz files")
def _():
    os.mkdir("in/xs")
    return ["verify", program(), qdq(), "--data", "in/xs"]


@case("verify-data-missing", R, "does not exist")
def _():
    return ["verify", program(), qdq(), "--data", "in/nope.npy"]


@case("verify-nan", R, "NaN or Inf")
def _():
    return ["verify", program(), qdq(), "--data", data(value=np.nan)]


@case("verify-qdq-missing", R, "in/nope.onnx")
def _():
    return ["verify", program(), "in/nope.onnx", "--data", data()]


@case("verify-bad-task", R, "Invalid value for '--task'")
def _():
    return ["verify", program(), qdq(), "--data", data(), "--task", "magic"]


# ---- errors that were internal (exit 3) on user input
I = "was internal"


@case("build-fp16-model", I, "computes in float16")
def _():
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16), "w")
    m = tiny([helper.make_node("Conv", ["x", "w"], ["y"])], [vi("x", [1, 3, 8, 8], TensorProto.FLOAT16)],
             [vi("y", None, TensorProto.FLOAT16)], [w])
    np.save("in/c.npy", np.zeros((2, 3, 8, 8), np.float16))
    return ["build", save(m), "--calib", "in/c.npy", "-o", "out/m.onnx"]


@case("build-fp16-weights-fp32-input", I, "computes in float16")
def _():
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16), "w")
    m = tiny([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), helper.make_node("Conv", ["h", "w"], ["y"])],
             [vi("x", [1, 3, 8, 8])], [vi("y", None, TensorProto.FLOAT16)], [w])
    return ["build", save(m), "--calib", calib(shape=(3, 8, 8)), "-o", "out/m.onnx"]


@case("build-bf16-input", I, "computes in bfloat16")
def _():
    m = tiny([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [vi("x", [1, 4], TensorProto.BFLOAT16)],
             [vi("y", None)])
    return ["build", save(m), "--calib", calib(shape=(4,)), "-o", "out/m.onnx"]


@case("build-no-inputs-with-calib", I, "has no inputs: there is nothing to calibrate")
def _():
    c = numpy_helper.from_array(np.ones((1, 4), np.float32), "c")
    m = tiny([helper.make_node("Relu", ["c"], ["y"])], [], [vi("y", [1, 4])], [c])
    return ["build", save(m), "--calib", calib(shape=(4,)), "-o", "out/m.onnx"]


@case("build-scalar-input", I, "is a scalar (rank 0)")
def _():
    m = tiny([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [])], [vi("y", None)])
    np.save("in/c.npy", np.zeros(3, np.float32))
    return ["build", save(m), "--calib", "in/c.npy", "-o", "out/m.onnx"]


@case("build-unknown-rank-input", I, "has no shape (unknown rank)")
def _():
    m = tiny([helper.make_node("Relu", ["x"], ["y"])], [vi("x", None)], [vi("y", None)])
    return ["build", save(m), "--calib", calib(shape=(4,)), "-o", "out/m.onnx"]


@case("build-string-input", I, "has type string")
def _():
    m = tiny([helper.make_node("Identity", ["x"], ["y"])], [vi("x", [1, 2], TensorProto.STRING)],
             [vi("y", None, TensorProto.STRING)])
    return ["build", save(m), "--calib", calib(shape=(2,)), "-o", "out/m.onnx"]


@case("build-target-axis-99", I, "per_channel(axis=99) is out of range for the rank-4 weight")
def _():
    t = write("in/t.qtarget", 'target t extends x86 "t" {\n  weight int8 symmetric per_channel(axis=99)\n}\n')
    return ["build", model(), "--target", t, "--calib", calib(), "-o", "out/m.onnx"]


@case("build-keep-going-past-calibrate", I, "--keep-going cannot skip it")
def _():
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    m = tiny([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
              helper.make_node("MyOp", ["c"], ["y"], name="custom", domain="com.example")],
             [vi("x", [1, 3, 8, 8])], [vi("y", None)], [w], domains=["com.example"])
    return ["build", save(m), "--calib", calib(shape=(3, 8, 8)), "--keep-going", "-o", "out/m.onnx"]


@case("build-metric-os-system", I, "--metric 'os:system' failed: TypeError")
def _():
    return quant("--max-drop", "0.5", "--metric", "os:system")


@case("mp-metric-os-system", I, "--metric 'os:system' failed")
def _():
    return mixed("--max-drop", "0.5", "--metric", "os:system")


@case("mp-metric-returns-text", I, "returned 'good', not a finite number")
def _():
    write("in/metric.py", "def m(outputs, batches):\n    return 'good'\n")
    return mixed("--max-drop", "0.5", "--metric", "in/metric.py:m")


@case("mp-metric-returns-nan", I, "returned nan, not a finite number")
def _():
    write("in/metric.py", "def m(outputs, batches):\n    return float('nan')\n")
    return mixed("--max-drop", "0.5", "--metric", "in/metric.py:m")


@case("mp-metric-raises", I, "--metric 'in/metric.py:m' failed: KeyError")
def _():
    write("in/metric.py", "def m(outputs, batches):\n    return batches[0]['label']\n")
    return mixed("--max-drop", "0.5", "--metric", "in/metric.py:m")


@case("mp-metric-sys-exit-on-import", I, "called sys.exit(0)")
def _():
    write("in/metric.py", "import sys\nsys.exit(0)\n")
    return mixed("--max-drop", "0.5", "--metric", "in/metric.py:m")


@case("build-float64-beyond-float32", I, "has values beyond float32's range")
def _():
    a = np.random.default_rng(0).random((2, *SHAPE[1:]))
    a[1, 0, 0, 0] = 1e300
    np.save("in/c.npy", a)
    return build("--calib", "in/c.npy")


@case("build-npz-object", I, "cannot read calibration file 'in/c.npz'")
def _():
    np.savez("in/c.npz", input=np.array([{"a": 1}], dtype=object))
    return build("--calib", "in/c.npz")


@case("build-npz-compressed-object", I, "cannot read calibration file")
def _():
    np.savez_compressed("in/c.npz", input=np.array([{"a": 1}], dtype=object))
    return build("--calib", "in/c.npz")


@case("build-npz-truncated", I, "cannot read calibration file")
def _():
    np.savez("in/c.npz", input=np.zeros((4, *SHAPE[1:]), np.float32))
    Path("in/c.npz").write_bytes(Path("in/c.npz").read_bytes()[:3000])
    return build("--calib", "in/c.npz")


@case("build-npz-fortran-wrong-shape", I, "axis 1 is 16, not 3")
def _():
    np.savez("in/c.npz", input=np.asfortranarray(np.zeros((2, 16, 16, 3), np.float32)))
    return build("--calib", "in/c.npz")


@case("build-npz-compressed-wrong-shape", I, "expects (1, 3, 16, 16)")
def _():
    np.savez_compressed("in/c.npz", input=np.zeros((2, 3, 8, 8), np.float32))
    return build("--calib", "in/c.npz")


# ---- plugins that end the process
P = "plugin sys.exit"


@case("plugin-sys-exit-0-on-import", P, "called sys.exit(0) while it was imported")
def _():
    return build("--plugin", write("in/p.py", "import sys\nsys.exit(0)\n"))


@case("plugin-sys-exit-1-on-import", P, "called sys.exit(1) while it was imported")
def _():
    return build("--plugin", write("in/p.py", "import sys\nsys.exit(1)\n"))


@case("plugin-exit-builtin-on-import", P, "called sys.exit(None)")
def _():
    return build("--plugin", write("in/p.py", "raise SystemExit\n"))


@case("plugin-sys-exit-in-pass", P, "pass 'exits' called sys.exit(0)")
def _():
    p = plugin('@register_pass("exits")\nclass E(Pass):\n    def run(self, ir, ctx):\n        import sys\n'
               '        sys.exit(0)\n')
    return build("--plugin", p, "--add-pass", "exits:after=fold-bn")


@case("plugin-sys-exit-in-quant-pass", P, "pass 'exits' called sys.exit(3)")
def _():
    p = plugin('@register_pass("exits")\nclass E(Pass):\n    def run(self, ir, ctx):\n        raise SystemExit(3)\n')
    return quant("--plugin", p, "--add-pass", "exits:after=calibrate", "--report", "out/r.json")


@case("plugin-sys-exit-keep-going-needed", P, "called sys.exit")
def _():
    p = plugin('@register_pass("exits", provides={"canonical"})\nclass E(Pass):\n    def run(self, ir, ctx):\n'
               '        raise SystemExit(0)\n')
    return build("--plugin", p, "--pipeline", "exits,fold-bn", "--keep-going")


# ---- options silently accepted before
O = "bad option"


@case("pipeline-empty-string", O, "the pipeline is empty")
def _():
    return build("--pipeline", "")


@case("pipeline-only-commas", O, "the pipeline is empty")
def _():
    return build("--pipeline", ",, ,")


@case("min-sqnr-nan", O, "--min-sqnr nan is not a finite number")
def _():
    return quant("--min-sqnr", "nan")


@case("min-sqnr-inf", O, "--min-sqnr inf is not a finite number")
def _():
    return quant("--min-sqnr", "inf")


@case("max-drop-nan", O, "--max-drop nan is not a finite number")
def _():
    return quant("--max-drop", "nan")


@case("mp-min-sqnr-nan", O, "--min-sqnr nan is not a finite number")
def _():
    return mixed("--min-sqnr", "nan")


@case("mp-no-budget", O, "give a budget")
def _():
    return mixed()


@case("mp-no-calib", O, "the accuracy tools measure errors on data")
def _():
    return ["mixed-precision", model(), "--target", "x86", "--min-sqnr", "10"]


@case("metric-without-max-drop", O, "--metric is only used with --max-drop")
def _():
    return quant("--metric", "qcompiler.analysis.metrics:top1")


@case("metric-no-colon", O, "cannot read --metric 'top1'")
def _():
    return quant("--max-drop", "1", "--metric", "top1")


@case("metric-missing-module", O, "cannot import the metric module 'no_such_module_xyz'")
def _():
    return quant("--max-drop", "1", "--metric", "no_such_module_xyz:f")


@case("eval-data-without-budget", O, "--eval-data is only used with --min-sqnr or --max-drop")
def _():
    np.savez("in/e.npz", input=np.zeros((2, *SHAPE[1:]), np.float32))
    return quant("--eval-data", "in/e.npz")


@case("layer-dtypes-bad-json", O, "--layer-dtypes")
def _():
    return quant("--layer-dtypes", "{conv: int4")


@case("layer-dtypes-not-a-file", O, "is neither JSON nor a file")
def _():
    return quant("--layer-dtypes", "in/nope.json")


@case("adaround-seconds-alone", O, "only used with --adaround")
def _():
    return quant("--adaround-seconds", "1")


@case("input-range-reversed", O, "LO must be below HI")
def _():
    return build("--data-free", "--input-range", "1,-1")


@case("input-range-unreadable", O, "cannot read --input-range")
def _():
    return build("--data-free", "--input-range", "one,two")


@case("bn-sigmas-too-small", O, "--bn-sigmas")
def _():
    return build("--data-free", "--bn-sigmas", "0.1")


@case("weight-dtype-unknown", O, "--weight-dtype")
def _():
    return quant("--weight-dtype", "int3")


@case("emit-unknown", O, "--emit")
def _():
    return quant("--emit", "c++")


@case("target-bad-dtype", O, "t.qtarget")
def _():
    t = write("in/t.qtarget", 'target t extends x86 "t" {\n  activation int99 symmetric per_tensor\n}\n')
    return ["build", model(), "--target", t, "--calib", calib(), "-o", "out/m.onnx"]


@case("analyze-layers-unknown", O, "--layers")
def _():
    return analyze("--layers", "some")


@case("analyze-no-target", O, "Missing option '--target'")
def _():
    return ["analyze", model(), "--calib", calib()]


@case("analyze-no-calib", O, "the accuracy tools measure errors on data")
def _():
    return ["analyze", model(), "--target", "x86"]


# ---- preprocess configs
C = "preprocess"


@case("preprocess-with-arrays", C, "a preprocess config is for calibration images")
def _():
    return build("--calib", calib(), "--preprocess", write("in/pre.json", '{"resize": 16}'))


@case("analyze-preprocess-bad-json", C, "is not valid JSON")
def _():
    return analyze("--preprocess", write("in/pre.json", "{bad"))


@case("analyze-preprocess-with-arrays", C, "a preprocess config is for calibration images")
def _():
    return analyze("--preprocess", write("in/pre.json", '{"resize": 16}'))


@case("preprocess-unknown-key", C, "unknown preprocess option 'resise'")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"resise": 16}'))


@case("preprocess-bad-layout", C, "preprocess 'layout' must be one of NCHW, NHWC")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"layout": "CHW"}'))


@case("preprocess-negative-resize", C, "preprocess 'resize' must be positive")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"resize": -4}'))


@case("preprocess-resize-three-values", C, "preprocess 'resize' must be an int")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"resize": [1, 2, 3]}'))


@case("preprocess-std-zero", C, "preprocess 'std' must not contain 0")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"std": [0, 1, 1]}'))


@case("preprocess-mean-two-values", C, "preprocess 'mean' has 2 values")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"mean": [0.1, 0.2]}'))


@case("preprocess-toml-bad-line", C, "line 2: expected 'key = value'")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.toml", "resize = 16\nthis is not toml\n"))


@case("preprocess-not-a-table", C, "must hold a table of options")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", "[16, 16]"))


@case("preprocess-crop-bigger", C, "smaller than the crop")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"resize": 8, "crop": 16}'))


@case("preprocess-wrong-size", C, "expects (1, 3, 16, 16)")
def _():
    return build("--calib", images(), "--preprocess", write("in/pre.json", '{"resize": [8, 8]}'))


# ---- read-only commands
Q = "read-only commands"


@case("inspect-missing", Q, "model file 'in/nope.onnx' does not exist")
def _():
    return ["inspect", "in/nope.onnx"]


@case("inspect-truncated", Q, "not a readable ONNX model")
def _():
    Path("in/m.onnx").write_bytes(Path(model()).read_bytes()[:40])
    return ["inspect", "in/m.onnx"]


@case("inspect-empty", Q, "is empty")
def _():
    Path("in/m.onnx").write_bytes(b"")
    return ["inspect", "in/m.onnx"]


@case("inspect-folder", Q, "is a directory")
def _():
    return ["inspect", "in"]


@case("diff-missing", Q, "in/nope.onnx")
def _():
    return ["diff", model(), "in/nope.onnx"]


@case("diff-txt-missing", Q, "'in/nope.txt' does not exist")
def _():
    return ["diff", model(), "in/nope.txt"]


@case("diff-not-onnx", Q, "not a readable ONNX model")
def _():
    return ["diff", model(), write("in/b.onnx", "hello")]


@case("targets-show-unknown", Q, "unknown target 'x87'")
def _():
    return ["targets", "show", "x87"]


@case("targets-show-bad-file", Q, "t.qtarget:2:")
def _():
    return ["targets", "show", write("in/t.qtarget", 'target t extends x86 "t" {\n  frobnicate 3\n}\n')]


@case("qformat-missing", Q, "model file 'in/nope.onnx' does not exist")
def _():
    return ["qformat", "in/nope.onnx"]


@case("qformat-not-onnx", Q, "not a readable ONNX model")
def _():
    return ["qformat", write("in/m.onnx", "text")]


@case("dtypes-unknown-target", Q, "unknown target 'arm65'")
def _():
    return ["dtypes", "--target", "arm65"]


@case("passes-extra-argument", Q, "Got unexpected extra argument")
def _():
    return ["passes", "extra"]


@case("no-such-command", Q, "No such command 'verfiy'")
def _():
    return ["verfiy"]


SOCKETS: List[socket.socket] = []


# ------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def program_files(tmp_path_factory):
    """A program and its QDQ model for run/verify cases, built once."""
    d = tmp_path_factory.mktemp("prog")
    cwd = os.getcwd()
    os.chdir(d)
    try:
        os.mkdir("in")
        m, c = model(), calib()
        assert main(["build", m, "--target", "arm64", "--calib", c, "--emit", "program", "-o", "p.qprog", "-q"]) == 0
        assert main(["build", m, "--target", "arm64", "--calib", c, "-o", "q.onnx", "-q"]) == 0
        PROGRAM["prog"] = Path("p.qprog").read_bytes()
        PROGRAM["qdq"] = Path("q.onnx").read_bytes()
    finally:
        os.chdir(cwd)
    return PROGRAM


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for s in SOCKETS:
        s.close()
    SOCKETS.clear()


def test_corpus_size_and_classes():
    """Both corpora together hold at least 150 cases, and every class here has several."""
    import test_bad_inputs  # the first corpus (models, calibration data, targets, pipelines, paths)

    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CASES) + len(test_bad_inputs.CASES) >= 150
    counts = {}
    for c in CASES:
        counts[c.cls] = counts.get(c.cls, 0) + 1
    assert set(counts) == {G, R, I, P, O, C, Q} and min(counts.values()) >= 5, counts


def error_lines(err: str) -> List[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_bad_input(c: Case, workdir: Path, program_files, capsys):
    if c.id == "build-o-char-device-force" and not os.path.exists(os.devnull):
        pytest.skip("no null device")
    args = c.setup()
    before = hash_tree(workdir)
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    out, err = cap.out, cap.err
    errors = error_lines(err)
    assert "Traceback" not in err + out
    assert len(errors) == 1, err
    line = errors[0]
    assert c.fragment in line, line
    assert "(hint: " in line and line.endswith(")"), line
    assert rc == c.code, err
    assert hash_tree(workdir) == before, "a file was created, changed or removed"
