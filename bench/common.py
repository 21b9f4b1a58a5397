"""Helpers shared by the benchmarks in bench/: machine facts, data on disk that is read
back one sample at a time (so a child process's peak RSS measures the build, not the
data set), smooth random images, output-error metrics, and ONNX Runtime latency.

Nothing here depends on qcompiler internals beyond its public testing helpers.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

# --------------------------------------------------------------------------------------
# Machine and software facts
# --------------------------------------------------------------------------------------


def cpu_facts() -> Dict:
    """CPU model, core count and the SIMD flags that decide ONNX Runtime's INT8 kernels."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    have = {f: (f in flags) for f in wanted}
    vnni = have["avx512_vnni"] or have["avx_vnni"]
    return {"model": model, "cores": os.cpu_count(), "flags": have, "vnni": vnni,
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def software_facts(repo: str) -> Dict:
    import onnx
    import onnxruntime as ort

    def git(*args) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except Exception:
            return ""

    dirty = [ln[3:] for ln in git("status", "--porcelain").splitlines()
             if ln[3:].startswith(("qcompiler/", "passes/", "targets/"))]
    return {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "qcompiler_commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_library_files": dirty}


def maxrss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Linux's VmHWM (from /proc/self/status) is read first: ``getrusage().ru_maxrss`` of a
    process started with fork/vfork + exec also counts the parent's peak at the time of the
    fork (the kernel carries the old address space's high-water mark across exec), so a
    child started by a big parent would report the parent's size. Elsewhere, ru_maxrss.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


# --------------------------------------------------------------------------------------
# Samples on disk, read back one at a time
# --------------------------------------------------------------------------------------


def save_samples(path: str, xs: np.ndarray) -> str:
    """Write samples ``[n, ...]`` as a .npy file (atomic rename)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(xs))
    os.replace(tmp, path)
    return path


class SampleFile:
    """A .npy file of samples read with plain reads (no memory map): iterating holds one
    sample in memory at a time, so peak RSS does not grow with the sample count."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
        self.n, self.sample_shape, self.dtype = shape[0], tuple(shape[1:]), np.dtype(dtype)
        self.sample_bytes = int(np.prod(self.sample_shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.n

    def iter(self, limit: Optional[int] = None, batch: int = 1) -> Iterator[np.ndarray]:
        n = self.n if limit is None else min(limit, self.n)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for i in range(0, n, batch):
                k = min(batch, n - i)
                buf = f.read(self.sample_bytes * k)
                yield np.frombuffer(buf, dtype=self.dtype).reshape((k,) + self.sample_shape).copy()


# --------------------------------------------------------------------------------------
# Synthetic inputs
# --------------------------------------------------------------------------------------


def _interp_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Linear interpolation [out, in] (align corners)."""
    pos = np.linspace(0.0, in_size - 1.0, out_size)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = pos - lo
    m = np.zeros((out_size, in_size))
    m[np.arange(out_size), lo] += 1.0 - frac
    m[np.arange(out_size), hi] += frac
    return m


def smooth_images(n: int, hw: int = 224, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random images ``[n, C, hw, hw]`` float32, roughly ImageNet-normalised:
    noise at several scales, bilinearly upsampled and summed (large blobs plus some edges
    and fine texture), each image scaled to zero mean and unit variance."""
    rng = np.random.default_rng(seed)
    scales = [(4, 1.0), (8, 0.7), (16, 0.5), (32, 0.3), (hw, 0.1)]
    mats = {s: _interp_matrix(hw, s) for s, _ in scales}
    out = np.empty((n, channels, hw, hw), np.float32)
    for i in range(n):
        img = np.zeros((channels, hw, hw))
        for s, w in scales:
            noise = rng.standard_normal((channels, s, s))
            m = mats[s]
            img += w * np.matmul(np.matmul(m, noise), m.T)
        img += 0.5 * rng.standard_normal((channels, 1, 1))  # per-channel colour cast
        img = (img - img.mean()) / (img.std() + 1e-6)
        out[i] = img
    return out


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


class ErrorAccumulator:
    """SQNR (dB) and cosine of a quantized model's output against FP32, summed over
    batches (signal and error energy over all elements of all samples)."""

    def __init__(self):
        self.sig = self.err = self.dot = self.nq = 0.0

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        r = np.asarray(ref, np.float64).reshape(-1)
        o = np.asarray(out, np.float64).reshape(-1)
        self.sig += float(r @ r)
        self.err += float((r - o) @ (r - o))
        self.dot += float(r @ o)
        self.nq += float(o @ o)

    def sqnr_db(self) -> float:
        if self.err == 0:
            return float("inf")
        if self.sig == 0:
            return float("-inf")
        return float(10 * np.log10(self.sig / self.err))

    def cosine(self) -> float:
        if self.sig == 0 or self.nq == 0:
            return float("nan")
        return float(self.dot / np.sqrt(self.sig * self.nq))


def run_model(sess, name: str, xs: np.ndarray, batch: int = 16) -> np.ndarray:
    """Outputs[0] of a session over all samples, in batches (dynamic batch models) or one
    by one (fixed batch 1)."""
    outs = []
    dims = sess.get_inputs()[0].shape
    if isinstance(dims[0], int) and dims[0] == 1:
        batch = 1
    for i in range(0, len(xs), batch):
        outs.append(sess.run(None, {name: np.ascontiguousarray(xs[i:i + batch])})[0])
    return np.concatenate(outs, axis=0)


# --------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------


def make_session(model, threads: int = 0, optimize: bool = True):
    """An ONNX Runtime CPU session: all graph optimisations, `threads` intra-op threads
    (0 = ORT's default), sequential execution. ``optimize=False`` disables every graph
    optimisation: Q/DQ nodes then run as written (float arithmetic between them, no fused
    integer kernels), the reference semantics of a Q/DQ model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def latency_ms(models: Dict[str, object], feed: Dict[str, np.ndarray], threads: int,
               runs: int = 30, warmup: int = 5) -> Dict[str, Dict]:
    """Median/min/p90 latency (ms) of each model on one feed. The models run interleaved,
    one run of each per round, so that machine-wide drift (other processes, frequency)
    hits all of them alike and the ratios stay meaningful."""
    sessions = {k: make_session(m, threads) for k, m in models.items()}
    for _ in range(warmup):
        for s in sessions.values():
            s.run(None, feed)
    times: Dict[str, List[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append((time.perf_counter() - t) * 1e3)
    out = {}
    for k, ts in times.items():
        ts_sorted = sorted(ts)
        out[k] = {"median_ms": statistics.median(ts), "min_ms": ts_sorted[0],
                  "p90_ms": ts_sorted[min(len(ts) - 1, int(0.9 * len(ts)))], "runs": len(ts)}
    return out


# --------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------


def run_child(script: str, spec: Dict, timeout: float = 900) -> Dict:
    """Run ``python script --child JSON`` in a fresh interpreter and return the JSON
    object on its last stdout line; on failure, {"ok": False, "error": ...}."""
    cmd = [sys.executable, script, "--child", json.dumps(spec)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "wall_s": timeout}
    wall = time.perf_counter() - t
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
        return {"ok": False, "error": f"child exited {p.returncode}: " + "\n".join(tail),
                "wall_s": wall}
    res = json.loads(lines[-1])
    res["wall_s"] = wall
    return res


def fmt(x, spec: str = ".2f", none: str = "n/a") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return none
    if isinstance(x, float) and np.isinf(x):
        return "inf"
    return format(x, spec)


def ratio(a, b) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def nncf_quantize(model, batches, **kwargs):
    """NNCF's ONNX backend with its default settings (the `bench` extra): `nncf.quantize`
    on the model (path or ModelProto) with `batches` (a list of feed dicts) as its dataset.
    Models below opset 13 are converted first: NNCF quantizes them per tensor otherwise.
    Returns (quantized ModelProto, pre-processing note, NNCF version)."""
    import logging

    import nncf
    import onnx
    from onnx import version_converter

    logging.getLogger("nncf").setLevel(logging.ERROR)
    m = onnx.load(model) if isinstance(model, (str, os.PathLike)) else model
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    note = "default"
    if opset < 13:  # NNCF: "opset < 13 ... Per-tensor quantization will be applied"
        m = version_converter.convert_version(m, 13)
        note = f"converted from opset {opset} to 13 first (NNCF quantizes per-tensor below 13)"
    q = nncf.quantize(m, nncf.Dataset(list(batches)), subset_size=len(batches), **kwargs)
    return q, note, nncf.__version__
