"""Run an ONNX model in ONNX Runtime and save its outputs: the aarch64 side of
tests/test_arm64_runtime.py, run by the arm64 python that tools/arm64_emulation.sh sets up
(only numpy and onnxruntime there, no qcompiler).

    a64-python tools/arm64_ort_run.py JOBS.json

JOBS.json is a list of {"model", "inputs", "out", "optimized"} (paths): one session per
job, all in one process, so the emulator starts and imports onnxruntime once. `inputs`
(.npz) holds one array per model input, first axis = samples; each sample runs as a batch
of one (full graph optimizations, as a user's session would run). `out` (.npz) gets each
output, samples stacked, plus `__machine__`, `__seconds_session__` and `__seconds_run__`.
`optimized` saves the graph ONNX Runtime actually runs (SessionOptions.
optimized_model_filepath): which kernels the QDQ nodes became.
"""

import json
import platform
import sys
import time

import numpy as np
import onnxruntime as ort


def run_job(job):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if job.get("optimized"):
        so.optimized_model_filepath = job["optimized"]
    t0 = time.perf_counter()
    sess = ort.InferenceSession(job["model"], so, providers=["CPUExecutionProvider"])
    t1 = time.perf_counter()
    feeds = dict(np.load(job["inputs"]))
    n = len(next(iter(feeds.values())))
    names = [o.name for o in sess.get_outputs()]
    outs = {k: [] for k in names}
    for i in range(n):
        for k, v in zip(names, sess.run(names, {name: x[i:i + 1] for name, x in feeds.items()})):
            outs[k].append(v)
    t2 = time.perf_counter()
    result = {k: np.concatenate(v) for k, v in outs.items()}
    result.update(__machine__=np.array(platform.machine()), __seconds_session__=np.array(t1 - t0),
                  __seconds_run__=np.array(t2 - t1))
    np.savez(job["out"], **result)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            run_job(job)
