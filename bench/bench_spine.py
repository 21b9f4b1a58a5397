"""Benchmark of the compiler spine: import -> FP32 pipeline -> export on long graphs.

Builds a synthetic Conv/BN/Relu/Add residual chain (fixtures.models.residual_chain)
of 20,000 and 40,000 nodes, writes it to a temporary file, then times, per size:

    import      load_ir(path): read + opset check + onnx-graphsurgeon import
    <pass>      each pass of canonicalize, fold-bn, fuse-conv-bias-act, including the
                manager's cleanup + toposort + verify after it
    export      ir_to_model + save_model (atomic write)

and prints the per-phase wall-clock times, the totals (wall and CPU) and the ratio of the
largest to the smallest size. The CPU time (time.process_time) is what a quiet machine's wall
time would be; on a loaded machine compare CPU times, or use --repeat (the best run counts). Targets (issue 2): 20k nodes in under 15 s on a 2-core machine, 40k at most 2.3x
the 20k time.

Each size runs in a fresh child process so that one size's garbage does not slow the
next. Usage:

    python bench/bench_spine.py                    # 20000 and 40000 nodes
    python bench/bench_spine.py --sizes 5000,10000 # other sizes
    python bench/bench_spine.py --repeat 3         # best of 3 runs per size
    python bench/bench_spine.py --profile 20000    # cProfile one size, top functions
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks

PIPELINE = ("canonicalize", "fold-bn", "fuse-conv-bias-act")
TARGET_20K_S = 15.0
TARGET_RATIO = 2.3


class _CpuClock:
    """Pass-manager instrument: CPU seconds per pass (pass + cleanup + sort + verify)."""

    def __init__(self):
        self.cpu = {}

    def start(self, ir, pipeline):
        self.t = time.process_time()

    def after(self, index, p, ir, entry):
        now = time.process_time()
        self.cpu[p.name] = now - self.t
        self.t = now

    def failed(self, index, p, err):
        pass

    def finish(self, ir, timings):
        pass


def run_once(num_nodes: int) -> dict:
    """Time one size in this process; return phase -> seconds plus facts."""
    import onnx

    from qcompiler.ir import ir_to_model, load_ir, save_model
    from qcompiler.pipeline import Context, PassManager, build_pipeline
    from fixtures.models import residual_chain

    t0 = time.perf_counter()
    model = residual_chain(num_nodes)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        src = os.path.join(tmp, "chain.onnx")
        onnx.save_model(model, src)
        del model
        gc.collect()
        phases, cpu = {}, {}
        t, c = time.perf_counter(), time.process_time()
        ir = load_ir(src)
        phases["import"], cpu["import"] = time.perf_counter() - t, time.process_time() - c
        nodes_in = len(ir.graph.nodes)
        ctx = Context()
        clock = _CpuClock()
        manager = PassManager(build_pipeline(PIPELINE), [clock])
        manager.run(ir, ctx)
        for entry in manager.timings:
            phases[entry["pass"]] = entry["seconds"]
        cpu.update(clock.cpu)
        t, c = time.perf_counter(), time.process_time()
        save_model(ir_to_model(ir), os.path.join(tmp, "chain.opt.onnx"))
        phases["export"], cpu["export"] = time.perf_counter() - t, time.process_time() - c
    bn_left = sum(1 for n in ir.graph.nodes if n.op == "BatchNormalization")
    return {"nodes": num_nodes, "nodes_in": nodes_in, "nodes_out": len(ir.graph.nodes),
            "bn_left": bn_left, "regions": len(ir.ann.regions), "generate_s": gen_s,
            "phases": phases, "cpu": cpu, "total_s": sum(phases.values()),
            "cpu_s": sum(cpu.values())}


def run_child(num_nodes: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(num_nodes)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(num_nodes: int, repeat: int, in_process: bool) -> dict:
    runs = [run_once(num_nodes) if in_process else run_child(num_nodes) for _ in range(repeat)]
    return min(runs, key=lambda r: r["total_s"])


def profile(num_nodes: int, top: int) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    res = run_once(num_nodes)
    prof.disable()
    print(json.dumps(res, indent=2))
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000,40000", help="comma-separated node counts")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile", type=int, metavar="N", help="cProfile the spine on an N-node chain")
    ap.add_argument("--top", type=int, default=30, help="functions to show with --profile")
    ap.add_argument("--in-process", action="store_true", help="run all sizes in this process")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest counts")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_once(args.one)))
        return 0
    if args.profile:
        profile(args.profile, args.top)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = [best_of(n, max(1, args.repeat), args.in_process) for n in sizes]
    names = list(results[0]["phases"])
    print(f"qcompiler spine benchmark ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    header = f"{'phase':<22}" + "".join(f"{r['nodes']:>12,}" for r in results)
    print(header)
    print("-" * len(header))
    for name in names:
        print(f"{name:<22}" + "".join(f"{r['phases'][name]:>11.2f}s" for r in results))
    print(f"{'(CPU seconds)':<22}")
    for name in names:
        print(f"  {name:<20}" + "".join(f"{r['cpu'][name]:>11.2f}s" for r in results))
    print("-" * len(header))
    print(f"{'total (wall)':<22}" + "".join(f"{r['total_s']:>11.2f}s" for r in results))
    print(f"{'total (CPU)':<22}" + "".join(f"{r['cpu_s']:>11.2f}s" for r in results))
    print(f"{'nodes after':<22}" + "".join(f"{r['nodes_out']:>12,}" for r in results))
    print(f"{'BN left / regions':<22}" + "".join(f"{str(r['bn_left']) + ' / ' + str(r['regions']):>12}"
                                                for r in results))
    print(f"{'(model generation)':<22}" + "".join(f"{r['generate_s']:>11.2f}s" for r in results))
    ok = True
    by_size = {r["nodes"]: r for r in results}
    if 20000 in by_size:
        t20 = by_size[20000]["total_s"]
        good = t20 < TARGET_20K_S
        ok &= good
        print(f"20k total {t20:.2f} s wall, {by_size[20000]['cpu_s']:.2f} s CPU "
              f"(target < {TARGET_20K_S:.0f} s): {'ok' if good else 'MISSED'}")
    if len(results) > 1:
        small, big = results[0], results[-1]
        ratio = big["total_s"] / small["total_s"]
        scale = big["nodes"] / small["nodes"]
        cpu_ratio = big["cpu_s"] / small["cpu_s"]
        line = (f"ratio {big['nodes']:,}/{small['nodes']:,} nodes: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU "
                f"for {scale:.1f}x the nodes")
        if (small["nodes"], big["nodes"]) == (20000, 40000):
            good = ratio <= TARGET_RATIO
            ok &= good
            line += f" (target <= {TARGET_RATIO}x): {'ok' if good else 'MISSED'}"
        print(line)
        worst = max(names, key=lambda n: big["cpu"][n] / max(small["cpu"][n], 1e-9))
        print(f"least linear phase (CPU): {worst} "
              f"({big['cpu'][worst] / max(small['cpu'][worst], 1e-9):.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
