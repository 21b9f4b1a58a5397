"""Bias correction (Nagel et al. 2019, section 4.2).

Quantizing a layer's weights, W -> W_q = W + eps, shifts the expected value of its
outputs by E[eps x] = eps E[x] (per output channel). The error is systematic, it does not
average out, and it adds up through the layers. Subtracting it from the bias removes it:

    b <- b - (E[W_q x] - E[W x]) = b - eps E[x]

E[x] comes from calibration data (measured on the float model: the mean input map per
position, so that zero padding at the borders is accounted for exactly), or, data-free,
from the BatchNorm statistics propagated to the layer's input (per channel; exact away
from zero padding). Conv and Gemm get the correction; MatMul has no bias input and is
skipped.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional

import numpy as np

from qcompiler.quant.plan import Plan, require_plan
from qcompiler.quant.qparams import QParams, fake_quant

from qcompiler.quant.layers import Layer, bias_vector, channel_vector_shift, node_map, set_bias


class InputMeans:
    """E[x] of one tensor over the batch axis, batch by batch: the mean map [C, ...], or,
    once shapes vary from batch to batch, the per-channel mean [C]."""

    def __init__(self) -> None:
        self._sum = None  # the map summed over the batch axis, or (float64) the channel sums
        self._count = 0  # maps summed, or values per channel summed
        self._per_channel = False

    def update(self, value) -> "InputMeans":
        v = np.asarray(value)
        if v.ndim < 2:
            return self
        if not self._per_channel and self._sum is not None and self._sum.shape != v.shape[1:]:
            # from now on per channel: the maps so far collapse into channel sums
            self._count *= int(np.prod(self._sum.shape[1:], dtype=np.int64))
            self._sum = self._sum.reshape(self._sum.shape[0], -1).sum(axis=1, dtype=np.float64)
            self._per_channel = True
        if self._per_channel:
            c = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)
            self._sum = self._sum + c.sum(axis=1, dtype=np.float64)
            self._count += c.shape[1]
            return self
        if self._sum is None:
            self._sum = np.zeros(v.shape[1:], np.float32 if v.dtype == np.float32 else np.float64)
        for sample in v:  # summed in the tensor's float32: calibration sets are small, and
            np.add(self._sum, sample, out=self._sum)  # a float64 copy per batch doubled the cost
        self._count += v.shape[0]
        return self

    def result(self) -> Optional[np.ndarray]:
        return self._sum.astype(np.float64) / self._count if self._count else None


def measure_input_means(ir, names, batches) -> Dict[str, np.ndarray]:
    """E[x] for each tensor (see InputMeans), from one run over the batches."""
    from qcompiler.ir.io import ir_to_model
    from qcompiler.quant.session import session_with_outputs

    names = list(dict.fromkeys(names))
    sess = session_with_outputs(ir_to_model(ir), names)
    inputs = {i.name for i in sess.get_inputs()}
    means = {n: InputMeans() for n in names}
    for b in batches:
        outs = sess.run(names, {k: v for k, v in b.items() if k in inputs})
        for n, v in zip(names, outs):
            means[n].update(v)
    return {n: m.result() for n, m in means.items() if m.result() is not None}


def weighted_inputs(ir, plan: Plan) -> List[str]:
    """The data inputs of the weighted kernels: the tensors whose E[x] the correction needs."""
    nodes = node_map(ir)
    names = []
    for k in plan.kernels:
        node = nodes.get(k.nodes[0])
        if k.weight is not None and node is not None and node.inputs and node.inputs[0].name not in names:
            names.append(node.inputs[0].name)
    return names


def conv_mean_shift(node, eps: np.ndarray, mean_map: np.ndarray, group: Optional[int] = None) -> Optional[np.ndarray]:
    """Mean over output positions of conv(mean_map, eps): the exact expected output shift.

    Each kernel tap reads a strided window of the input (zero padding outside it), so the
    mean output is sum over taps and input channels of eps * (window sum / positions): a
    few slices of the mean map instead of a convolution. None for a layout it cannot read."""
    spatial = mean_map.shape[1:]
    k = tuple(eps.shape[2:])
    n = len(spatial)
    if len(k) != n or n == 0:
        return None
    strides = list(node.attrs.get("strides", [1] * n))
    dil = list(node.attrs.get("dilations", [1] * n))
    pads = _conv_pads(node, spatial, k, strides, dil)
    group = int(node.attrs.get("group", 1)) if group is None else group
    cout, cin_g = eps.shape[0], eps.shape[1]
    if pads is None or mean_map.shape[0] != cin_g * group or cout % group:
        return None
    axes = []  # per spatial axis and tap: the slice of input positions it reads
    positions = 1
    for ax in range(n):
        size, s, d, lo = spatial[ax], strides[ax], dil[ax], pads[ax]
        out = (size + lo + pads[ax + n] - d * (k[ax] - 1) - 1) // s + 1
        if out <= 0:
            return None
        positions *= out
        taps = []
        for t in range(k[ax]):
            first = max(0, -(-(lo - t * d) // s))  # ceil: the first output reading a real row
            last = min(out - 1, (size - 1 + lo - t * d) // s)
            taps.append(slice(first * s + t * d - lo, last * s + t * d - lo + 1, s) if first <= last else None)
        axes.append(taps)
    window = np.zeros((mean_map.shape[0],) + k)
    for tap in itertools.product(*[range(x) for x in k]):
        sl = [axes[ax][t] for ax, t in enumerate(tap)]
        if all(x is not None for x in sl):
            window[(slice(None),) + tap] = mean_map[(slice(None),) + tuple(sl)].reshape(mean_map.shape[0], -1).sum(1)
    window /= positions
    w = window.reshape(group, cin_g, -1)
    e = eps.reshape(group, cout // group, cin_g, -1).astype(np.float64)
    return np.einsum("gock,gck->go", e, w).reshape(cout)


def _conv_pads(node, spatial, k, strides, dil) -> Optional[List[int]]:
    n = len(spatial)
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", "", None):
        return list(node.attrs.get("pads", [0] * (2 * n)))
    if auto == "VALID":
        return [0] * (2 * n)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    from qcompiler.lowering.geometry import same_pads

    return same_pads(spatial, k, strides, dil, auto)


CHUNK_VALUES = 1 << 20  # weight values quantized at a time: a large layer is never copied whole


def weight_error_shift(ir, node, qp, mu: np.ndarray, rounding: str = "half_to_even"):
    """(W_q - W) E[x] per output channel of a Conv or Gemm, or a reason (str) it cannot be had.

    The weight error is formed a block of output channels at a time (whole groups for a
    grouped Conv), so a big layer costs a few MB here, not several float64 copies of it."""
    w = np.asarray(ir.const_value(node.inputs[1]))
    conv = node.op == "Conv"
    out_axis = 0 if conv or int(node.attrs.get("transB", 0)) else 1
    group = int(node.attrs.get("group", 1)) if conv else 1
    cout = w.shape[out_axis]
    cin_g = w.shape[1] if conv else w.shape[1 - out_axis]
    per_group = cout // group
    use_map = conv and mu.ndim == w.ndim - 1 and mu.shape[0] == cin_g * group
    v = None
    if not use_map:
        v = mu if mu.ndim == 1 else mu.reshape(mu.shape[0], -1).mean(axis=1)
        if v.size == 1:
            v = np.full(cin_g * group, float(v[0]))
        if v.size != cin_g * group:
            return f"input has {v.size} channels, the layer reads {cin_g * group}"
    row = max(1, w.size // cout)
    align = per_group if group > 1 else 1  # a chunk of a grouped conv holds whole groups
    step = max(align, (CHUNK_VALUES // row) // align * align)
    shift = np.empty(cout)
    for o0 in range(0, cout, step):
        o1 = min(cout, o0 + step)
        wc = np.take(w, np.arange(o0, o1), axis=out_axis)
        qpc = qp
        if qp.axis is not None and qp.axis % w.ndim == out_axis:
            qpc = QParams(qp.scale[o0:o1], qp.zero_point[o0:o1], axis=qp.axis, dtype=qp.dtype)
        eps = fake_quant(wc.astype(np.float32), qpc, rounding).astype(np.float64) - wc
        g0, g1 = (o0 // per_group, o1 // per_group) if group > 1 else (0, 1)
        part = conv_mean_shift(node, eps, mu[g0 * cin_g:g1 * cin_g], group=g1 - g0) if use_map else None
        if part is None:
            vv = v if v is not None else mu.reshape(mu.shape[0], -1).mean(axis=1)
            part = channel_vector_shift(node.op, eps, vv[g0 * cin_g:g1 * cin_g], group=g1 - g0, in_axis=1 - out_axis)
        shift[o0:o1] = part
    return shift


def correct_biases(ir, expected: Dict[str, np.ndarray], rounding: str = "half_to_even") -> Dict:
    """Subtract eps E[x] from every weighted kernel's bias; `expected` maps input tensor
    names to E[x] (a mean map [C, ...] or per-channel [C]). Returns a report."""
    plan = require_plan(ir, "bias correction")
    nodes = node_map(ir)
    tensors = ir.tensors()
    corrected, skipped = {}, {}
    for k in plan.kernels:
        if k.weight is None or k.weight not in ir.ann.qparams:
            continue
        node = nodes.get(k.nodes[0])
        if node is None or not Layer.supported(ir, node) or node.inputs[1].name != k.weight:
            skipped[k.name] = "not a Conv/Gemm with its weight in place"
            continue
        if node.op == "MatMul":
            skipped[k.name] = "MatMul has no bias input"
            continue
        x_name = node.inputs[0].name
        mu = expected.get(x_name)
        if mu is None:
            skipped[k.name] = f"no expected value for its input {x_name}"
            continue
        shift = weight_error_shift(ir, node, ir.ann.qparams[k.weight], mu, rounding)
        if isinstance(shift, str):
            skipped[k.name] = shift
            continue
        cout = shift.size
        b = bias_vector(ir, node, cout)
        dtype = np.dtype(tensors[k.weight].dtype or np.float32)
        c = set_bias(ir, node, b - shift, dtype if dtype.kind == "f" else np.float32)
        k.bias = c.name  # the plan names the new bias tensor
        ref = float(np.sqrt(np.mean(b ** 2))) if b.size else 0.0
        corrected[k.name] = {"max_shift": float(np.max(np.abs(shift))), "bias_rms": ref}
    return {"corrected": len(corrected), "skipped": skipped, "layers": corrected}
