"""Verification: the lowered program against its QDQ model in ONNX Runtime.

    report = verify_program(prog, "model.qdq.onnx", inputs)
    print(report.format())

Per output it reports the share of elements exactly equal, the share within one
quantization step (the scale of the output's last quantization), the largest difference
in steps; and a task check: the argmax agreement of a classifier output ([N, classes]),
or the agreement of a probability map ([N, 1, H, W]) thresholded at 0.3.

The reference runs ONNX Runtime with graph optimizations disabled by default: every
DequantizeLinear -> op -> QuantizeLinear then runs exactly as the QDQ model says (float
op, then round half to even). ORT's fused int8 kernels (QLinearConv ...) are not a
faithful reference on x86 CPUs without VNNI, where the u8 x s8 multiply (vpmaddubsw) adds
pairs of products in saturating int16 and full 8-bit weights overflow it; pass
ort_optimization="all" to compare against them anyway (exact with 7-bit weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from ..errors import UsageError
from .interpreter import run_program
from .program import DOMAIN, Program

__all__ = ["OutputAgreement", "TensorAgreement", "VerifyReport", "verify_program", "output_steps",
           "integer_outputs", "ort_session",
           "load_inputs", "verify_files"]

PROB_THRESHOLD = 0.3
# a float output (no quantization step) counts as "within one step" when the difference
# is at most this share of the reference output's largest magnitude
FLOAT_TOLERANCE = 1e-3


@dataclass
class OutputAgreement:
    name: str
    elements: int = 0
    exact: int = 0
    within_one: int = 0
    max_steps: float = 0.0
    max_abs: float = 0.0
    step: Optional[float] = None

    @property
    def exact_share(self) -> float:
        return self.exact / self.elements if self.elements else 1.0

    @property
    def within_one_share(self) -> float:
        return self.within_one / self.elements if self.elements else 1.0


@dataclass
class TensorAgreement:
    """Layer-wise: one integer tensor of the program, computed from reference inputs."""

    name: str
    elements: int = 0
    within_one: int = 0
    exact: int = 0
    max_steps: int = 0

    def add_steps(self, d: np.ndarray) -> None:
        """Count one comparison: `d` holds each element's difference in quantization steps."""
        self.elements += int(d.size)
        self.exact += int(np.count_nonzero(d == 0))
        self.within_one += int(np.count_nonzero(d <= 1))
        self.max_steps = max(self.max_steps, int(d.max()) if d.size else 0)

    @property
    def within_one_share(self) -> float:
        return self.within_one / self.elements if self.elements else 1.0

    @property
    def exact_share(self) -> float:
        return self.exact / self.elements if self.elements else 1.0

    def to_json(self) -> dict:
        return {"name": self.name, "elements": self.elements, "exact_share": self.exact_share,
                "within_one_step_share": self.within_one_share, "max_diff_steps": self.max_steps}


@dataclass
class VerifyReport:
    outputs: List[OutputAgreement] = field(default_factory=list)
    task: str = "none"  # "argmax" | "prob_map" | "none"
    task_agree: int = 0
    task_total: int = 0
    samples: int = 0
    program_seconds: float = 0.0
    reference: str = "onnxruntime (optimizations disabled)"
    layers: List[TensorAgreement] = field(default_factory=list)
    # argmax: each row whose argmax differs, with the reference's top-1 minus top-2 (in
    # output steps when the output is quantized): a near-tie there decides the flip
    task_flips: List[dict] = field(default_factory=list)
    # the integer tensors where each output's float tail starts (the output's own integer
    # form when it is quantized), compared end to end in quantization steps
    int_outputs: List[TensorAgreement] = field(default_factory=list)
    # with tensorwise=True: every quantized tensor, end to end (program run from the real
    # inputs), in execution order: how differences grow with depth
    tensors: List[TensorAgreement] = field(default_factory=list)

    @property
    def task_rate(self) -> Optional[float]:
        return self.task_agree / self.task_total if self.task_total else None

    @property
    def within_one_share(self) -> float:
        tot = sum(o.elements for o in self.outputs)
        return sum(o.within_one for o in self.outputs) / tot if tot else 1.0

    @property
    def step_share(self) -> float:
        """Share of output elements within one quantization step: quantized outputs as
        they are, float outputs (no quantization step of their own) through the integer
        tensors their float tail starts from."""
        tot = sum(o.elements for o in self.step_outputs())
        return sum(o.within_one for o in self.step_outputs()) / tot if tot else 1.0

    def step_outputs(self) -> list:
        """What step_share is judged on: each quantized output, and the integer tensors
        behind the float outputs."""
        quantized = [o for o in self.outputs if o.step]
        return quantized + (self.int_outputs if len(quantized) < len(self.outputs) else [])

    def ok(self, within_one: float = 0.999, task: float = 1.0) -> bool:
        """The verdict. With layer-wise results: every layer, computed from the reference's
        own inputs, equals the reference's output within one step (a float32 tie can round
        either way). End to end, such ties compound with depth in the float32 reference
        while the program stays exact, so end-to-end agreement is reported, not judged.
        Without them: the end-to-end shares against `within_one` and `task`."""
        if self.layers:
            return all(t.max_steps <= 1 for t in self.layers)
        if self.step_share < within_one:
            return False
        return self.task_rate is None or self.task_rate >= task

    def to_json(self) -> dict:
        return {
            "samples": self.samples, "reference": self.reference,
            "program_seconds_per_sample": self.program_seconds / max(1, self.samples),
            "outputs": [{"name": o.name, "elements": o.elements, "exact_share": o.exact_share,
                         "within_one_step_share": o.within_one_share, "max_diff_steps": o.max_steps,
                         "max_abs_diff": o.max_abs, "step": o.step} for o in self.outputs],
            "task": self.task, "task_agreement": self.task_rate, "task_flips": self.task_flips,
            "within_one_step_share": self.step_share,
            "integer_outputs": [t.to_json() for t in self.int_outputs],
            "tensors": [t.to_json() for t in self.tensors] or None,
            "layerwise": None if not self.layers else {
                "tensors": len(self.layers),
                "min_within_one_step_share": min(t.within_one_share for t in self.layers),
                "max_diff_steps": max(t.max_steps for t in self.layers),
                "exact_share": sum(t.exact for t in self.layers) / max(1, sum(t.elements for t in self.layers)),
            },
        }

    def format(self) -> str:
        lines = [f"verified {self.samples} batch(es) against {self.reference}; program "
                 f"{self.program_seconds / max(1, self.samples):.3f} s per batch"]
        for o in self.outputs:
            step = (f"step {o.step:.4g}" if o.step else
                    f"float output: one step = {FLOAT_TOLERANCE:g} x max |reference|")
            lines.append(f"  {o.name}: {o.elements} elements, exact {100 * o.exact_share:.2f}%, within one "
                         f"step {100 * o.within_one_share:.2f}%, max {o.max_steps:.1f} steps ({step}, max abs "
                         f"{o.max_abs:.4g})")
        if any(not o.step for o in self.outputs):
            for t in self.int_outputs:
                lines.append(f"  integer tensor {t.name} (before a float output): {t.elements} elements, exact "
                             f"{100 * t.exact_share:.2f}%, within one step {100 * t.within_one_share:.2f}%, "
                             f"max {t.max_steps} steps")
        if self.tensors:
            worst = min(self.tensors, key=lambda t: t.exact_share)
            tot = sum(t.elements for t in self.tensors)
            lines.append(f"  end to end ({len(self.tensors)} quantized tensors): exact "
                         f"{100 * sum(t.exact for t in self.tensors) / max(1, tot):.3f}%, least exact "
                         f"{100 * worst.exact_share:.2f}% ({worst.name})")
        if self.layers:
            worst = min(self.layers, key=lambda t: t.within_one_share)
            tot = sum(t.elements for t in self.layers)
            lines.append(f"  layer-wise ({len(self.layers)} tensors, each computed from reference inputs): "
                         f"exact {100 * sum(t.exact for t in self.layers) / max(1, tot):.3f}%, max "
                         f"{max(t.max_steps for t in self.layers)} steps, worst within one step "
                         f"{100 * worst.within_one_share:.3f}% ({worst.name})")
        if self.layers:
            lines.append("  verdict (layer-wise, each layer within one step of the QDQ model): "
                         + ("pass" if self.ok() else "FAIL") + "; end-to-end figures above are for information")
        if self.task_rate is not None:
            what = "argmax equal" if self.task == "argmax" else f"probability > {PROB_THRESHOLD} equal"
            lines.append(f"  task: {what} on {100 * self.task_rate:.2f}% ({self.task_agree}/{self.task_total})")
            if self.task_flips:
                unit = " steps" if self.task_flips[0]["in_steps"] else ""
                margins = ", ".join(f"{f['reference_margin']:.3g}" for f in self.task_flips[:10])
                lines.append(f"  argmax differs on {len(self.task_flips)} row(s); the reference's top-1 - top-2 "
                             f"there: {margins}{unit}{' ...' if len(self.task_flips) > 10 else ''}")
        return "\n".join(lines)


def output_steps(prog: Program) -> Dict[str, Optional[float]]:
    """The quantization step of each program output: the scale of the Dequantize that
    produces it (through Identity / layout conversions); None for float results."""
    producer = {}
    for n in prog.nodes:
        for o in n.outputs:
            producer[o] = n
    steps = {}
    for out in prog.outputs:
        name, step = out, None
        for _ in range(8):
            n = producer.get(name)
            if n is None:
                break
            if n.domain == DOMAIN and n.op == "Dequantize":
                step = float(n.attrs["scale"])
                break
            if (n.domain == DOMAIN and n.op == "LayoutConvert") or (n.domain in ("", None) and n.op == "Identity"):
                name = n.inputs[0]
                continue
            info = prog.tensors.get(name)
            if info is not None and info.scale is not None:
                step = float(info.scale)
            break
        steps[out] = step
    return steps


def integer_outputs(prog: Program, named: Optional[set] = None) -> List[str]:
    """The integer tensors where the program's float tails start: walking back from each
    output through float ops, layout conversions and int8-in, float-out kernels, the
    integer tensors first met (a quantized output's own integer form is the tensor its
    Dequantize reads). Order: as the program produces them.

    named: the tensors a reference holds with the same integer values (a QDQ model's
    QuantizeLinear outputs). An integer tensor outside it (e.g. the int8 result of a
    Flatten, named after the QDQ model's float Flatten output) is passed through, back to
    the data-movement op's input."""
    producer = {o: n for n in prog.nodes for o in n.outputs if o}
    found, seen = set(), set()
    todo = list(prog.outputs)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        info = prog.tensors.get(name)
        n = producer.get(name)
        if info is not None and info.scale is not None and info.dtype in ("int8", "uint8"):
            if named is None or name in named:
                found.add(name)
                continue
            if n is None or n.domain == DOMAIN and n.op != "LayoutConvert":
                continue  # an integer kernel's result that the reference does not name
        if n is None:
            continue
        if n.domain == DOMAIN and n.attrs.get("output") == "float":
            todo.append(n.inputs[0])
        elif n.domain == DOMAIN and n.op in ("Dequantize", "LayoutConvert"):
            todo.append(n.inputs[0])
        elif n.domain != DOMAIN:
            todo.extend(i for i in n.inputs if i and i not in prog.constants)
    order = {o: i for i, n in enumerate(prog.nodes) for o in n.outputs if o}
    return sorted(found, key=lambda t: order.get(t, -1))


def ort_session(model: Union[str, onnx.ModelProto], optimization: str = "disabled"):
    """A CPU session at an ORT optimization level by name ("disabled": the Q/DQ model as
    written, the reference the program is compared with)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise UsageError(f"unknown ORT optimization level '{optimization}'", f"use one of {', '.join(levels)}")
    so.graph_optimization_level = levels[optimization]
    so.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        from ..quant.session import ort_session as any_size_session

        return any_size_session(model, so)
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def _as_batches(inputs, input_names: Sequence[str]) -> List[Dict[str, np.ndarray]]:
    if isinstance(inputs, np.ndarray):
        if len(input_names) != 1:
            raise UsageError(f"the model has {len(input_names)} inputs; give a dict of arrays",
                             f"inputs: {', '.join(input_names)}")
        return [{input_names[0]: inputs}]
    if isinstance(inputs, Mapping):
        return [dict(inputs)]
    batches = []
    for item in inputs:
        batches.extend(_as_batches(item, input_names))
    return batches


def split_to_program_batch(prog: Program, batches: List[Dict[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
    """Multi-sample data for a program with a fixed batch size (the calibration file a build
    took, say): when every input's first axis is a multiple of the program's batch B > 0,
    the arrays are cut into batches of B; anything else is left for the input checks."""
    fixed = {}
    for name in prog.inputs:
        shape = prog.tensors[name].shape if name in prog.tensors else None
        if not shape or shape[0] is None:
            return batches
        fixed[name] = int(shape[0])
    out = []
    for batch in batches:
        counts = {n: np.shape(batch[n])[0] // fixed[n] if np.ndim(batch[n]) and fixed[n] else 0 for n in fixed}
        n = next(iter(counts.values()), 0)
        rest_ok = all(all(w is None or h == w for h, w in zip(np.shape(batch[k])[1:], prog.tensors[k].shape[1:]))
                      and np.ndim(batch[k]) == len(prog.tensors[k].shape) for k in fixed)
        if n > 1 and rest_ok and all(c == n and np.shape(batch[k])[0] == n * fixed[k] for k, c in counts.items()):
            out += [{k: batch[k][i * fixed[k]:(i + 1) * fixed[k]] for k in fixed} for i in range(n)]
        else:
            out.append(batch)
    return out


def load_inputs(path: str, input_names: Sequence[str]) -> List[Dict[str, np.ndarray]]:
    """Input batches from a .npy / .npz file or a folder of them (sorted by name).

    A .npy holds the single input (a leading sample axis is kept as the batch); a .npz
    holds arrays named after the inputs (or one array for a one-input model).
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UsageError(f"input data '{p}' does not exist", "give a .npy/.npz file or a folder of them")
    files = sorted(f for f in p.iterdir() if f.suffix in (".npy", ".npz")) if p.is_dir() else [p]
    if not files:
        raise UsageError(f"folder '{p}' holds no .npy or .npz files", "put the input arrays there")
    batches = []
    for f in files:
        try:
            data = np.load(f, allow_pickle=False)
        except Exception as e:
            raise UsageError(f"cannot read '{f}': {type(e).__name__}", "save inputs with numpy.save / savez") from None
        if isinstance(data, np.ndarray):
            if len(input_names) != 1:
                raise UsageError(f"'{f}' holds one array but the model has {len(input_names)} inputs",
                                 "use a .npz with one array per input name")
            batches.append({input_names[0]: data})
        else:
            keys = list(data.keys())
            if len(input_names) == 1 and len(keys) == 1:
                batches.append({input_names[0]: data[keys[0]]})
            else:
                missing = [n for n in input_names if n not in keys]
                if missing:
                    raise UsageError(f"'{f}' has no array named '{missing[0]}'",
                                     f"name the arrays after the inputs: {', '.join(input_names)}")
                batches.append({n: data[n] for n in input_names})
    return batches


def _task_kind(arr: np.ndarray, task: str) -> str:
    if task != "auto":
        return task
    if arr.ndim == 2 and arr.shape[1] > 1:
        return "argmax"
    if arr.ndim == 4 and arr.shape[1] == 1:
        return "prob_map"
    return "none"


def verify_program(prog: Program, qdq_model: Union[str, onnx.ModelProto], inputs, task: str = "auto",
                   ort_optimization: str = "disabled", layerwise: bool = False,
                   tensorwise: bool = False) -> VerifyReport:
    """Run `prog` and `qdq_model` (ONNX Runtime) on the same inputs and compare.

    inputs: a dict {name: array}, one array (one-input models), or an iterable of them.
    task: "auto" (argmax for [N, classes] outputs, thresholded map for [N, 1, H, W]),
    "argmax", "prob_map" or "none"; judged on the first output.
    layerwise: also compare every integer tensor of the program that a QuantizeLinear of
    the QDQ model names (and the float result of every int8-in, float-out kernel, in steps
    of FLOAT_TOLERANCE x its largest magnitude), each computed from the reference values of
    its inputs: the lowering of each kernel is judged apart from how the network amplifies
    differences.
    tensorwise: also compare every quantized tensor end to end (the program run from the
    real inputs, nothing substituted), in execution order: how differences grow with depth.
    The integer tensors behind float outputs (integer_outputs) are always compared end to
    end; step_share and ok() judge float outputs on them.
    """
    task = {"probmap": "prob_map"}.get(task, task)
    model = qdq_model if isinstance(qdq_model, onnx.ModelProto) else onnx.load(str(qdq_model))
    n_out = len(model.graph.output)
    q_outs = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    int_outs = integer_outputs(prog, q_outs | {i.name for i in model.graph.input})
    e2e = _quantized_tensors(prog, model) if tensorwise else []
    tracked = list(dict.fromkeys(e2e + int_outs))
    # with optimizations disabled, extra outputs change nothing: one session serves the
    # outputs and the tracked tensors; otherwise they would block fusions, so the tracked
    # tensors get their own pass
    one_pass = ort_optimization == "disabled"
    sess = ort_session(_probe(model, tracked) if one_pass else model, ort_optimization)
    names = [i.name for i in sess.get_inputs()]
    batches = _as_batches(inputs, names)
    if not batches:
        raise UsageError("no inputs to verify with", "give at least one input array")
    steps = output_steps(prog)
    ort_out_names = [o.name for o in sess.get_outputs()]
    report = VerifyReport(reference=f"onnxruntime (optimizations {ort_optimization})")
    aggs = {}
    stats: Dict[str, TensorAgreement] = {n: TensorAgreement(n) for n in tracked}
    for batch in batches:
        ref_all = sess.run(None, {k: np.asarray(v, dtype=np.float32) if np.asarray(v).dtype == np.float64 else v
                                  for k, v in batch.items()})
        ref_named = dict(zip(ort_out_names, ref_all))
        observe = None
        if one_pass and tracked:
            def observe(name, val):
                if name in stats:
                    _tally(stats[name], prog.tensors[name], val, ref_named[name])
                return None
        t0 = time.perf_counter()
        got = run_program(prog, batch, observe=observe)
        report.program_seconds += time.perf_counter() - t0
        ref = ref_all[:n_out]
        report.samples += 1
        for idx, (pname, r) in enumerate(zip(prog.outputs, ref)):
            g = np.asarray(got[pname], dtype=np.float64)
            r = np.asarray(r, dtype=np.float64)
            if g.shape != r.shape:
                raise UsageError(f"output {idx} has shape {g.shape} in the program but {r.shape} in ONNX Runtime",
                                 "the program was lowered from another model")
            name = ort_out_names[idx]
            agg = aggs.setdefault(name, OutputAgreement(name=name, step=steps.get(pname)))
            diff = np.abs(g - r)
            if agg.step:
                d = diff / agg.step
                agg.exact += int(np.count_nonzero(d < 0.5))
                agg.within_one += int(np.count_nonzero(d < 1.5))
                agg.max_steps = max(agg.max_steps, float(d.max()) if d.size else 0.0)
            else:
                tol = FLOAT_TOLERANCE * max(float(np.abs(r).max()) if r.size else 0.0, 1e-12)
                agg.exact += int(np.count_nonzero(diff == 0))
                agg.within_one += int(np.count_nonzero(diff <= tol))
                agg.max_steps = max(agg.max_steps, float(diff.max() / tol) if diff.size else 0.0)
            agg.max_abs = max(agg.max_abs, float(diff.max()) if diff.size else 0.0)
            agg.elements += int(diff.size)
            if idx == 0:
                kind = _task_kind(r, task)
                report.task = kind
                if kind == "argmax":
                    rows = r.reshape(r.shape[0], -1)
                    a, b = np.argmax(g.reshape(g.shape[0], -1), 1), np.argmax(rows, 1)
                    for i in np.nonzero(a != b)[0]:
                        top = np.sort(rows[i])[::-1]
                        margin = float(top[0] - top[1]) if top.size > 1 else float("inf")
                        report.task_flips.append({"sample": report.samples - 1, "row": int(i),
                                                  "reference_margin": margin / agg.step if agg.step else margin,
                                                  "in_steps": bool(agg.step)})
                    report.task_agree += int(np.count_nonzero(a == b))
                    report.task_total += int(a.size)
                elif kind == "prob_map":
                    a, b = g > PROB_THRESHOLD, r > PROB_THRESHOLD
                    report.task_agree += int(np.count_nonzero(a == b))
                    report.task_total += int(a.size)
    report.outputs = list(aggs.values())
    if tracked and not one_pass:
        stats = _compare_tensors(prog, model, batches, tracked, False, ort_optimization)
    report.int_outputs = [stats[t] for t in int_outs if stats[t].elements]
    report.tensors = [stats[t] for t in e2e if stats[t].elements]
    if layerwise:
        names = _quantized_tensors(prog, model, with_float=True)
        stats = _compare_tensors(prog, model, batches, names, True, ort_optimization)
        report.layers = [s for s in stats.values() if s.elements]
    return report


def _probe(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the tensors `names` (after its own outputs)."""
    if not names:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output} | {i.name for i in probe.graph.input}
    for n in names:
        if n not in have:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
            have.add(n)
    return probe


def _tally(st: TensorAgreement, info, val: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Add one program value (physical layout) against its reference (NCHW) to st."""
    from .layouts import from_layout

    got = from_layout(val, info.layout, info.channels) if info.layout != "NCHW" else val
    if info.scale is None:  # a float tensor: steps of FLOAT_TOLERANCE x its largest magnitude
        tol = FLOAT_TOLERANCE * max(float(np.abs(r).max()) if r.size else 0.0, 1e-12)
        d = np.ceil(np.abs(got.astype(np.float64) - r) / tol - 1e-9).astype(np.int64)
    else:
        d = np.abs(got.astype(np.int64) - r.astype(np.int64))
    st.add_steps(d)
    return d


def _quantized_tensors(prog, model, with_float: bool = False) -> List[str]:
    """Program tensors that a QuantizeLinear of the QDQ model names (in execution order);
    with_float: also the float results of int8-in, float-out kernels."""
    q_outs = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    onnx_names = {o for n in model.graph.node for o in n.output}
    names = []
    for k in prog.nodes:
        for o in k.outputs:
            if o in q_outs and o in prog.tensors and prog.tensors[o].scale is not None:
                names.append(o)
            elif (with_float and k.domain == DOMAIN and k.attrs.get("output") == "float" and o == k.outputs[0]
                  and o in onnx_names):
                names.append(o)
    return list(dict.fromkeys(names))


def _compare_tensors(prog, model, batches, names, substitute, ort_optimization) -> Dict[str, TensorAgreement]:
    """Compare program tensors `names` with ONNX Runtime's values of the same names.
    substitute: feed the reference value onward after each comparison (layer-wise: every
    kernel judged from reference inputs); otherwise the program runs on its own values
    (end to end)."""
    from .layouts import to_layout

    sess = ort_session(_probe(model, names), ort_optimization)
    out_names = [o.name for o in sess.get_outputs()]
    stats: Dict[str, TensorAgreement] = {n: TensorAgreement(n) for n in names}
    for batch in batches:
        ref = dict(zip(out_names, sess.run(None, batch)))

        def observe(name, val):
            if name not in stats:
                return None
            info = prog.tensors[name]
            _tally(stats[name], info, val, ref[name])
            if not substitute:
                return None
            r = ref[name].astype(val.dtype)
            return to_layout(r, info.layout, int(info.zero_point or 0)) if info.layout != "NCHW" else r

        run_program(prog, batch, observe=observe)
    return stats


# ----------------------------------------------------------------------------- file-level entry points

def verify_files(program_path, qdq_path, data_path, task: str = "auto", ort_optimization: str = "disabled",
                 layerwise: bool = True) -> VerifyReport:
    """`qcompiler verify PROG QDQ --data d/`: the program against the QDQ model on every
    .npy / .npz in d/ (or one file). Print report.format(); report.ok() is the pass/fail
    verdict (every layer within one step of the QDQ model given the same inputs)."""
    from ..ir.io import read_model
    from .program import load_program

    prog = load_program(program_path)
    model = read_model(qdq_path)
    batches = split_to_program_batch(prog, load_inputs(str(data_path), prog.inputs))
    return verify_program(prog, model, batches, task=task,
                          ort_optimization=ort_optimization, layerwise=layerwise)
