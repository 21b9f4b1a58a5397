"""Benchmark: a model over 2 GB (external data) through `qcompiler build`.

Opt-in, not part of the test suite: it writes about 2.5 GB of weights (and about 0.7 GB of
output) to a temporary folder and needs several GB of memory.

The model is a small conv front end and a stack of huge Gemm layers:

    x[N,64,8,8] -> Conv 64->512 3x3 -> Relu -> Conv 512->512 3x3 -> Relu -> Flatten
      -> Gemm 32768->8192 -> Relu -> Gemm 8192->W -> Relu -> Gemm W->8192 -> Relu
      -> Gemm 8192->1000

(W = 20480 by default: about 2.46 GB of float32 weights). The weights are streamed
straight into the external data file, so generating the model takes little memory. Then
`qcompiler build MODEL --target x86 --calib calib.npy -o OUT --report R` runs in a child
process, and the benchmark prints the model size, the build's wall time, the child's peak
RSS (ru_maxrss) relative to the model size, and the output size, and checks that the
weights shrank about 4x (INT8 output at most 0.30 of the FP32 input).

--phases runs the build in a child that also reports each step's peak RSS (VmHWM, reset
between steps where /proc/self/clear_refs allows it): reading and importing the model,
each pass, the export, the report, the save.

Usage:

    python bench/bench_large_model.py                 # the >2 GB model, in a temp folder
    python bench/bench_large_model.py --width 4096    # a smaller model (about 1.3 GB)
    python bench/bench_large_model.py --phases        # peak RSS and time per step
    python bench/bench_large_model.py --dir /big/disk --keep
    python bench/bench_large_model.py --json results.json

Measured (2 cores, AVX2 without VNNI, 23 GB RAM, machine shared with other jobs): the
2.29 GiB model builds in 27 s with a peak RSS of 4.38 GiB (1.91x the model; the peak step
is the report, whose FP32 reference session maps the whole FP32 model next to the INT8
one) and writes 0.57 GiB (4.0x smaller). Before weights stayed in their files and no step
copied them whole, the same build took 214 s and peaked at 16.7 GiB (7.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

TWO_GB = 2**31


def _write_external(f, rng, name: str, shape, fan_in: int, chunk_rows: int = 256) -> onnx.TensorProto:
    """Append a random float32 tensor to the open data file `f` in row chunks and return a
    TensorProto that points at it (no data in memory beyond one chunk)."""
    offset = f.tell()
    rows, row_size = shape[0], int(np.prod(shape[1:]))
    std = np.float32(np.sqrt(2.0 / fan_in))
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        block = rng.standard_normal((n, row_size), dtype=np.float32)
        block *= std
        f.write(block.tobytes())
    length = f.tell() - offset
    t = onnx.TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(shape)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", os.path.basename(f.name)), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def make_model(folder: str, width: int = 20480, seed: int = 0) -> str:
    """Write model.onnx + model.onnx.data into `folder`; return the model path."""
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, "model.onnx")
    inits = []
    small = []
    with open(path + ".data", "wb") as f:
        inits.append(_write_external(f, rng, "conv1.weight", (512, 64, 3, 3), 64 * 9))
        inits.append(_write_external(f, rng, "conv2.weight", (512, 512, 3, 3), 512 * 9))
        dims = [(32768, 8192), (8192, width), (width, 8192), (8192, 1000)]
        for i, (k, n) in enumerate(dims, 1):
            # Gemm with transB=1: weight {N, K}, as PyTorch's Linear exports it
            inits.append(_write_external(f, rng, f"fc{i}.weight", (n, k), k))
            small.append(onnx.numpy_helper.from_array((rng.standard_normal(n) * 0.01).astype(np.float32),
                                                      f"fc{i}.bias"))
    small.append(onnx.numpy_helper.from_array(np.zeros(512, np.float32), "conv1.bias"))
    small.append(onnx.numpy_helper.from_array(np.zeros(512, np.float32), "conv2.bias"))
    small.append(onnx.numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Reshape", ["r2", "flat_shape"], ["flat"], name="flatten"),
    ]
    x = "flat"
    for i in range(1, 5):
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"g{i}"], name=f"fc{i}",
                                      transB=1))
        x = f"g{i}"
        if i < 4:
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"], name=f"relu_fc{i}"))
            x = f"a{i}"
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1000])], inits + small)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# The --phases child: qcompiler's CLI with a pass instrument and wrappers that record the
# time and the peak RSS of each step (VmHWM, reset after each step where the kernel allows).
_PHASES_CHILD = r"""
import json, sys, time

def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def _peak():
    peak = _status("VmHWM")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    return peak, reset

marks, last = [], [time.perf_counter()]

def mark(name):
    now = time.perf_counter()
    peak, reset = _peak()
    marks.append({"phase": name, "seconds": round(now - last[0], 2), "peak_bytes": peak, "reset": reset})
    last[0] = now

import qcompiler.driver.build as qb
import qcompiler.ir.io as qio
import qcompiler.pipeline.manager as pm

class Phases:
    def start(self, ir, pipeline):
        mark("read + import")
    def after(self, index, p, ir, entry):
        mark("pass " + p.name)
    def failed(self, index, p, err):
        pass
    def finish(self, ir, timings):
        pass

_init = pm.PassManager.__init__
def _patched_init(self, pipeline, instruments=(), keep_going=False):
    _init(self, pipeline, list(instruments) + [Phases()], keep_going)
pm.PassManager.__init__ = _patched_init

def _after(fn, name):
    def wrapped(*a, **k):
        r = fn(*a, **k)
        mark(name)
        return r
    return wrapped

qb.ir_to_model = _after(qb.ir_to_model, "export")
qb._quant_report = _after(qb._quant_report, "report")
qio.save_model = _after(qio.save_model, "save")
from qcompiler.cli.main import main
mark("start (imports)")
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "phases": marks}))
"""


def _size(path: str) -> int:
    total = os.path.getsize(path)
    if os.path.exists(path + ".data"):
        total += os.path.getsize(path + ".data")
    return total


def run(folder: str, width: int, samples: int, cli=None, phases: bool = False) -> dict:
    t0 = time.perf_counter()
    model = make_model(folder, width)
    gen_s = time.perf_counter() - t0
    size_in = _size(model)
    calib = os.path.join(folder, "calib.npy")
    np.save(calib, np.random.default_rng(1).random((samples, 64, 8, 8)).astype(np.float32))
    out = os.path.join(folder, "model.int8.onnx")
    report = os.path.join(folder, "report.json")
    entry = ["-c", _PHASES_CHILD] if phases else [cli] if cli else ["-m", "qcompiler"]
    cmd = [sys.executable, *entry, "build", model, "--target", "x86", "--calib", calib,
           "-o", out, "--report", report, "-q"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    build_s = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, max over children
    result = {
        "model_bytes": size_in,
        "over_2gb": size_in > TWO_GB,
        "generate_s": round(gen_s, 1),
        "returncode": p.returncode,
        "stderr_tail": p.stderr.strip().splitlines()[-5:],
        "build_s": round(build_s, 1),
        "peak_rss_bytes": peak_kib * 1024,
        "peak_rss_vs_model": round(peak_kib * 1024 / size_in, 2),
        "peak_rss_note": "max over child processes" + (" (an earlier child was bigger)" if before > peak_kib else ""),
    }
    if phases and p.returncode == 0:
        result["phases"] = json.loads(p.stdout.strip().splitlines()[-1])["phases"]
        result["peak_rss_bytes"] = max(m["peak_bytes"] for m in result["phases"])
        result["peak_rss_vs_model"] = round(result["peak_rss_bytes"] / size_in, 2)
        result["peak_rss_note"] = "max of the steps' VmHWM"
    if p.returncode == 0:
        size_out = _size(out)
        result.update({
            "output_bytes": size_out,
            "output_files": sorted(f for f in os.listdir(folder) if f.startswith("model.int8")),
            "shrink": round(size_in / size_out, 2),
            "report": {k: v for k, v in json.load(open(report)).items() if k in ("size", "quantization", "accuracy")},
        })
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=20480, help="width of the two middle Gemm layers")
    ap.add_argument("--samples", type=int, default=4, help="calibration samples")
    ap.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", help="write the result as JSON here too")
    ap.add_argument("--cli", help="a Python script to run instead of 'python -m qcompiler' (e.g. a patched CLI)")
    ap.add_argument("--phases", action="store_true", help="also report the time and peak RSS of each step")
    args = ap.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="qc_large_")
    os.makedirs(folder, exist_ok=True)
    need = (32768 * 8192 + 2 * 8192 * args.width + 8192 * 1000 + 512 * 64 * 9 + 512 * 512 * 9) * 4 * 1.4
    free = shutil.disk_usage(folder).free
    if free < need:
        print(f"not enough disk in {folder}: {free / 2**30:.1f} GiB free, about {need / 2**30:.1f} GiB needed")
        return 2
    try:
        r = run(folder, args.width, args.samples, args.cli, args.phases)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    gib = 2**30
    print(f"model:      {r['model_bytes'] / gib:.2f} GiB ({'over' if r['over_2gb'] else 'under'} 2 GiB), "
          f"generated in {r['generate_s']} s")
    print(f"build:      {r['build_s']} s, exit code {r['returncode']}")
    print(f"peak RSS:   {r['peak_rss_bytes'] / gib:.2f} GiB = {r['peak_rss_vs_model']}x the model size")
    for m in r.get("phases", []):
        print(f"  {m['phase']:<28} {m['seconds']:7.1f} s   peak {m['peak_bytes'] / gib:6.2f} GiB"
              f" = {m['peak_bytes'] / r['model_bytes']:.2f}x{'' if m['reset'] else ' (since the start)'}")
    ok = r["returncode"] == 0
    if ok:
        print(f"output:     {r['output_bytes'] / gib:.2f} GiB in {', '.join(r['output_files'])}; "
              f"weights shrank {r['shrink']}x")
        acc = r["report"].get("accuracy")
        if acc:
            print(f"accuracy:   {json.dumps(acc['outputs'])}")
        if r["output_bytes"] > 0.30 * r["model_bytes"]:
            print("FAIL: the INT8 output is not about 4x smaller than the FP32 model")
            ok = False
    else:
        print("FAIL: build failed:\n  " + "\n  ".join(r["stderr_tail"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
