"""The ops a program keeps in float (and integer data movement in NCHW), with ONNX
semantics, in NumPy. Each takes the input list (None for an omitted optional input) and
the attribute dict and returns the output list; `run_float_op` dispatches by op type.
Lowering also runs them on constants (folding) and to tabulate lookup-table kernels."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import ModelError
from .geometry import (_conv_geometry, _pad_spatial, _pool_windows, _window_counts, _windows, nearest_indices,
                       same_pads, source_coords)
from .integers import dtype_range

__all__ = ["FLOAT_OPS", "run_float_op"]


def _f(fn):
    return lambda ins, at: [fn(*ins[:1], at)]


def _unary(fn):
    return lambda ins, at: [fn(ins[0]).astype(ins[0].dtype, copy=False)]


def _binary(fn):
    def run(ins, at):
        a, b = ins[0], ins[1]
        out = fn(a, b)
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and fn is np.divide:
            out = np.trunc(out).astype(np.result_type(a, b))
        return [np.asarray(out).astype(np.result_type(a, b), copy=False)]
    return run


def _clip(ins, at):
    x = ins[0]
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else at.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else at.get("max")
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype))
    return [y]


def _sigmoid(x):
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _hard_sigmoid(x, at):
    alpha = np.float32(at.get("alpha", 0.2))
    beta = np.float32(at.get("beta", 0.5))
    return np.clip(alpha * x + beta, 0, 1).astype(x.dtype)


def _hard_swish(x, at):
    return (x * np.clip(x * np.float32(1.0 / 6.0) + np.float32(0.5), 0, 1)).astype(x.dtype)


def _leaky(x, at):
    alpha = np.float32(at.get("alpha", 0.01))
    return np.where(x >= 0, x, x * alpha).astype(x.dtype)


def _elu(x, at):
    alpha = np.float32(at.get("alpha", 1.0))
    return np.where(x >= 0, x, alpha * (np.exp(x) - 1)).astype(x.dtype)


def _softmax(ins, at, log=False):
    # in float64, rounded once: NumPy's float32 exp (host SIMD) and libm's expf differ in
    # the last bit on a third of inputs, so a generated C kernel could not reproduce it;
    # double exp/sum/divide rounded to float32 agree in practice whatever the order
    x = ins[0]
    axis = int(at.get("axis", -1))
    d = x.astype(np.float64) - x.max(axis=axis, keepdims=True).astype(np.float64)
    e = np.exp(d)
    s = e.sum(axis=axis, keepdims=True)
    return [((d - np.log(s)) if log else e / s).astype(x.dtype)]


def _cast(ins, at):
    from onnx import helper

    to = helper.tensor_dtype_to_np_dtype(int(at["to"]))
    return [ins[0].astype(to)]


def _reshape(ins, at):
    x, shape = ins[0], [int(s) for s in ins[1]]
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(ins, at):
    x = ins[0]
    axis = int(at.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def _axes(ins, at, idx=1):
    if len(ins) > idx and ins[idx] is not None:
        return [int(a) for a in np.asarray(ins[idx]).reshape(-1)]
    ax = at.get("axes")
    return None if ax is None else [int(a) for a in ax]


def _squeeze(ins, at):
    axes = _axes(ins, at)
    return [np.squeeze(ins[0], axis=None if axes is None else tuple(axes))]


def _unsqueeze(ins, at):
    x = ins[0]
    axes = sorted(a + x.ndim + len(_axes(ins, at)) if a < 0 else a for a in _axes(ins, at))
    for a in axes:
        x = np.expand_dims(x, a)
    return [x]


def _transpose(ins, at):
    perm = at.get("perm")
    return [np.asarray(np.transpose(ins[0], perm), order="C")]


def _concat(ins, at):
    return [np.concatenate([np.asarray(i) for i in ins if i is not None], axis=int(at["axis"]))]


def _gather(ins, at):
    return [np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=int(at.get("axis", 0)))]


def _slice(ins, at):
    x = ins[0]
    if len(ins) > 1:
        starts = np.asarray(ins[1]).reshape(-1)
        ends = np.asarray(ins[2]).reshape(-1)
        axes = np.asarray(ins[3]).reshape(-1) if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
        steps = np.asarray(ins[4]).reshape(-1) if len(ins) > 4 and ins[4] is not None else np.ones(len(starts))
    else:
        starts, ends = np.asarray(at["starts"]), np.asarray(at["ends"])
        axes = np.asarray(at.get("axes", list(range(len(starts)))))
        steps = np.ones(len(starts))
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) + x.ndim if int(a) < 0 else int(a)
        dim = x.shape[a]
        s, e, st = int(s), int(e), int(st)
        if st > 0:
            s = max(0, min(dim, s + dim if s < 0 else s))
            e = max(0, min(dim, e + dim if e < 0 else e))
        else:
            s = max(-1, min(dim - 1, s + dim if s < 0 else s))
            e = max(-1, min(dim - 1, e + dim if e < 0 else e))
            if e < 0:
                e = None
        sl[a] = slice(s, e, st)
    return [x[tuple(sl)]]


def _split(ins, at):
    x = ins[0]
    axis = int(at.get("axis", 0))
    split = None
    if len(ins) > 1 and ins[1] is not None:
        split = [int(s) for s in ins[1]]
    elif at.get("split"):
        split = [int(s) for s in at["split"]]
    n_out = int(at.get("_num_outputs", at.get("num_outputs", len(split) if split else 2)))
    if split is None:
        size = x.shape[axis]
        chunk = -(-size // n_out)
        split = [min(chunk, size - i * chunk) for i in range(n_out)]
    idx = np.cumsum(split)[:-1]
    return list(np.split(x, idx, axis=axis))


def _expand(ins, at):
    shape = [int(s) for s in ins[1]]
    return [ins[0] * np.ones(shape, dtype=ins[0].dtype)]


def _reduce(fn):
    def run(ins, at):
        axes = _axes(ins, at)
        keep = bool(at.get("keepdims", 1))
        if axes is not None and len(axes) == 0 and at.get("noop_with_empty_axes", 0):
            return [ins[0]]
        # float sums in float64, rounded once (a C kernel reproduces that in any order)
        acc = {"dtype": np.float64} if fn in (np.mean, np.sum) and ins[0].dtype == np.float32 else {}
        out = fn(ins[0], axis=None if not axes else tuple(axes), keepdims=keep, **acc)
        return [np.asarray(out).astype(ins[0].dtype, copy=False)]
    return run


def _float_windows(x, at, pad_value):
    kh, kw = at["kernel_shape"]
    fake = dict(at)
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        fake["pads"] = same_pads(x.shape[2:], at["kernel_shape"], at.get("strides", [1, 1]),
                                 at.get("dilations", [1, 1]), at["auto_pad"])
    return _pool_windows(x, fake, "NCHW", pad_value)


def _maxpool_f(ins, at):
    x = ins[0]
    lo = -np.inf if x.dtype.kind == "f" else dtype_range(x.dtype)[0]
    v, _ = _float_windows(x, at, lo)
    return [np.ascontiguousarray(v.max(axis=(-2, -1)))]


def _avgpool_f(ins, at):
    x = ins[0]
    v, geo = _float_windows(x, at, 0)
    s = v.sum(axis=(-2, -1), dtype=np.float64)
    counts = _window_counts(geo, bool(at.get("count_include_pad", 0)))
    return [(s / counts[None, None]).astype(x.dtype)]


def _gap_f(ins, at):
    return [ins[0].mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(ins[0].dtype)]


def _gmp_f(ins, at):
    return [ins[0].max(axis=(2, 3), keepdims=True)]


def _conv_f(ins, at):
    x, w = ins[0].astype(np.float32), ins[1].astype(np.float32)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = int(at.get("group", 1))
    kh, kw = w.shape[2], w.shape[3]
    a = {"kernel_shape": [kh, kw], "strides": at.get("strides", [1, 1]), "dilations": at.get("dilations", [1, 1]),
         "pads": at.get("pads", [0, 0, 0, 0])}
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        a["pads"] = same_pads(x.shape[2:], [kh, kw], a["strides"], a["dilations"], at["auto_pad"])
    kh, kw, sh, sw, dh, dw, pads, axes, ho, wo = _conv_geometry(a, x, "NCHW")
    xp = _pad_spatial(x, axes, pads, 0)
    v = _windows(xp, axes, kh, kw, sh, sw, dh, dw, ho, wo)  # [N, C, Ho, Wo, kh, kw]
    n, c = x.shape[:2]
    icg, oc = c // g, w.shape[0]
    ocg = oc // g
    outs = []
    for i in range(g):
        cols = v[:, i * icg:(i + 1) * icg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
        outs.append(cols @ w[i * ocg:(i + 1) * ocg].reshape(ocg, -1).T)
    y = np.concatenate(outs, axis=1) if g > 1 else outs[0]
    if b is not None:
        y = y + b.reshape(1, -1)
    return [np.ascontiguousarray(y.reshape(n, ho, wo, oc).transpose(0, 3, 1, 2)).astype(np.float32)]


def _conv_transpose_f(ins, at):
    # float32 values, products and sums in float64, one rounding to float32 (as the C kernel)
    x, w = ins[0].astype(np.float32).astype(np.float64), ins[1].astype(np.float32).astype(np.float64)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = int(at.get("group", 1))
    n, c, h, wd = x.shape
    cpg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    sh, sw = at.get("strides", [1, 1])
    dh, dw = at.get("dilations", [1, 1])
    pads = list(at.get("pads", [0, 0, 0, 0]))
    opad = list(at.get("output_padding", [0, 0]))
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + opad[0]
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + opad[1]
    if at.get("output_shape"):
        oh, ow = at["output_shape"][-2:]
        th, tw = full_h - oh, full_w - ow
        if at.get("auto_pad", "NOTSET") == "SAME_UPPER":
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        else:
            pads = [th - th // 2, tw - tw // 2, th // 2, tw // 2]
    elif at.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        oh, ow = h * sh, wd * sw
        th, tw = full_h - oh, full_w - ow
        if at["auto_pad"] == "SAME_UPPER":
            pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
        else:
            pads = [th - th // 2, tw - tw // 2, th // 2, tw // 2]
    oc = cpg * g
    icg = c // g
    out = np.zeros((n, oc, full_h, full_w), dtype=np.float64)
    for gi in range(g):
        xg = x[:, gi * icg:(gi + 1) * icg]  # [N, icg, H, W]
        wg = w[gi * icg:(gi + 1) * icg]  # [icg, cpg, kh, kw]
        # contributions [N, H, W, cpg, kh, kw]
        contrib = np.tensordot(xg, wg, axes=([1], [0]))  # [N, H, W, cpg, kh, kw]
        for i in range(kh):
            for j in range(kw):
                out[:, gi * cpg:(gi + 1) * cpg, i * dh: i * dh + sh * (h - 1) + 1: sh,
                    j * dw: j * dw + sw * (wd - 1) + 1: sw] += contrib[..., i, j].transpose(0, 3, 1, 2)
    out = out[:, :, pads[0]: full_h - pads[2], pads[1]: full_w - pads[3]]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return [np.ascontiguousarray(out).astype(np.float32)]


def _batchnorm_f(ins, at):
    x, gamma, beta, mean, var = ins[:5]
    eps = float(at.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = (gamma / np.sqrt(var + np.float32(eps))).astype(np.float32)
    return [(x - mean.reshape(shape)) * a.reshape(shape) + beta.reshape(shape)]


def _matmul_f(ins, at):
    a, b = ins[0], ins[1]
    if a.dtype == np.float32 and b.dtype == np.float32:
        # float32 products are exact in float64; the sum rounded once does not depend on
        # the BLAS kernel's order, so generated C reproduces it
        return [np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)]
    return [np.matmul(a, b)]


def lstm_unsupported(at: dict, ins: list) -> Optional[str]:
    """Why an LSTM node is outside the implemented form (None when it is inside)."""
    acts = [a.decode() if isinstance(a, bytes) else a for a in at.get("activations") or []]
    if acts and [a.lower() for a in acts] != ["sigmoid", "tanh", "tanh"] * (len(acts) // 3):
        return f"activations {acts}"
    if at.get("clip") is not None:
        return "clip"
    if at.get("input_forget", 0) or at.get("layout", 0):
        return "input_forget / layout 1"
    if len(ins) > 4 and ins[4] is not None:
        return "sequence_lens"
    return None


def _lstm_f(ins, at):
    """ONNX LSTM (gates i, o, f, c; optional bias, initial state, peepholes) in float64,
    outputs rounded to float32 once: the state that carries across steps stays double, so
    a C kernel reproduces it in practice whatever its summation order."""
    why = lstm_unsupported(at, ins)
    if why:
        raise ModelError(f"LSTM with {why} is not implemented in the program interpreter",
                         "emit qdq (the default) or qop: ONNX Runtime runs it there")
    ins = list(ins) + [None] * (8 - len(ins))
    x, w, r = (np.asarray(v, np.float64) for v in ins[:3])
    t_len, n, _ = x.shape
    dirs, h4, hid = r.shape
    direction = at.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    y = np.zeros((t_len, dirs, n, hid))
    yh, yc = np.zeros((dirs, n, hid)), np.zeros((dirs, n, hid))
    for d in range(dirs):
        b = ins[3][d].astype(np.float64) if ins[3] is not None else np.zeros(2 * h4)
        h = ins[5][d].astype(np.float64) if ins[5] is not None else np.zeros((n, hid))
        c = ins[6][d].astype(np.float64) if ins[6] is not None else np.zeros((n, hid))
        p = ins[7][d].astype(np.float64) if ins[7] is not None else np.zeros(3 * hid)
        rev = d == 1 or direction == "reverse"
        for s in range(t_len):
            t = t_len - 1 - s if rev else s
            g = b[:h4] + b[h4:] + x[t] @ w[d].T + h @ r[d].T
            gi, go, gf, gc = (g[:, k * hid:(k + 1) * hid] for k in range(4))
            i = 1.0 / (1.0 + np.exp(-(gi + p[:hid] * c)))
            f = 1.0 / (1.0 + np.exp(-(gf + p[2 * hid:] * c)))
            c = f * c + i * np.tanh(gc)
            o = 1.0 / (1.0 + np.exp(-(go + p[hid:2 * hid] * c)))
            h = o * np.tanh(c)
            y[t, d] = h
        yh[d], yc[d] = h, c
    return [y.astype(np.float32), yh.astype(np.float32), yc.astype(np.float32)]


def _gemm_f(ins, at):
    a, b = ins[0], ins[1]
    if at.get("transA", 0):
        a = a.T
    if at.get("transB", 0):
        b = b.T
    y = np.float32(at.get("alpha", 1.0)) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + np.float32(at.get("beta", 1.0)) * ins[2]
    return [y.astype(ins[0].dtype)]


def _resize_f(ins, at):
    x = ins[0]
    scales = sizes = None
    if len(ins) == 2 and ins[1] is not None:  # opset 10: (X, scales)
        scales = np.asarray(ins[1], dtype=np.float64)
    else:
        if len(ins) > 2 and ins[2] is not None and np.asarray(ins[2]).size:
            scales = np.asarray(ins[2], dtype=np.float64)
        if len(ins) > 3 and ins[3] is not None and np.asarray(ins[3]).size:
            sizes = np.asarray(ins[3], dtype=np.int64)
    mode = at.get("mode", "nearest")
    ctm = at.get("coordinate_transformation_mode", "half_pixel")
    y = x.astype(np.float64) if mode != "nearest" else x
    for ax in range(x.ndim):
        n_in = x.shape[ax]
        if sizes is not None:
            n_out = int(sizes[ax])
            scale = n_out / n_in
        else:
            scale = float(scales[ax])
            n_out = int(math.floor(n_in * scale))
        if n_out == n_in and scale == 1.0:
            continue
        if mode == "nearest":
            idx = nearest_indices(n_in, n_out, scale, ctm, at.get("nearest_mode", "round_prefer_floor"))
            y = y.take(idx, axis=ax)
        else:  # linear along this axis
            src = np.clip(source_coords(n_in, n_out, scale, ctm), 0, n_in - 1)
            i0 = np.floor(src).astype(np.int64)
            i1 = np.minimum(i0 + 1, n_in - 1)
            frac = (src - i0).reshape([-1 if i == ax else 1 for i in range(x.ndim)])
            y = y.take(i0, axis=ax) * (1 - frac) + y.take(i1, axis=ax) * frac
    return [np.ascontiguousarray(y).astype(x.dtype)]


def _pad_f(ins, at):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        pads = [int(p) for p in ins[1]]
        value = ins[2].item() if len(ins) > 2 and ins[2] is not None and np.asarray(ins[2]).size else 0
    else:
        pads = [int(p) for p in at["pads"]]
        value = at.get("value", 0.0)
    r = x.ndim
    widths = [(pads[i], pads[i + r]) for i in range(r)]
    mode = at.get("mode", "constant")
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=value)]
    return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge"}[mode])]


def _quantize_linear_f(ins, at):
    x, scale = ins[0].astype(np.float32), np.asarray(ins[1], dtype=np.float32)
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), dtype=np.uint8)
    axis = int(at.get("axis", 1))
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), np.asarray(zp).reshape(shape)
    lo, hi = dtype_range(np.asarray(zp).dtype)
    q = np.rint(x / scale) + zp.astype(np.float32)
    return [np.clip(q, lo, hi).astype(np.asarray(zp).dtype)]


def _dequantize_linear_f(ins, at):
    x, scale = ins[0], np.asarray(ins[1], dtype=np.float32)
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), dtype=x.dtype)
    axis = int(at.get("axis", 1))
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), np.asarray(zp).reshape(shape)
    return [((x.astype(np.int64) - np.asarray(zp).astype(np.int64)).astype(np.float32) * scale)]


def _argmax(ins, at):
    axis = int(at.get("axis", 0))
    y = np.argmax(ins[0], axis=axis)
    if at.get("keepdims", 1):
        y = np.expand_dims(y, axis)
    return [y.astype(np.int64)]


def _where(ins, at):
    return [np.where(ins[0], ins[1], ins[2])]


def _range(ins, at):
    return [np.arange(ins[0].item(), ins[1].item(), ins[2].item()).astype(ins[0].dtype)]


def _constant_of_shape(ins, at):
    v = at.get("value")
    fill = np.asarray(v).reshape(-1)[0] if v is not None else np.float32(0)
    return [np.full([int(s) for s in ins[0]], fill, dtype=np.asarray(fill).dtype)]


def _tile(ins, at):
    return [np.tile(ins[0], [int(r) for r in ins[1]])]


def _depth_to_space(ins, at):
    x = ins[0]
    b = int(at["blocksize"])
    n, c, h, w = x.shape
    if at.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


def _erf(x):
    # Abramowitz-Stegun 7.1.26 is too coarse for GELU checks; use math.erf elementwise.
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


FLOAT_OPS: Dict[str, Callable] = {
    "Identity": lambda ins, at: [ins[0]],
    "Dropout": lambda ins, at: [ins[0]],
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Clip": _clip,
    "Sigmoid": _unary(_sigmoid),
    "HardSigmoid": _f(_hard_sigmoid),
    "HardSwish": _f(_hard_swish),
    "LeakyRelu": _f(_leaky),
    "Elu": _f(_elu),
    "Tanh": _unary(np.tanh),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Abs": _unary(np.abs),
    "Neg": _unary(np.negative),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "Floor": _unary(np.floor),
    "Ceil": _unary(np.ceil),
    "Round": _unary(np.rint),
    "Erf": _unary(_erf),
    "Softplus": _unary(lambda x: np.logaddexp(0, x)),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Pow": lambda ins, at: [np.power(ins[0], ins[1]).astype(ins[0].dtype)],
    "Max": lambda ins, at: [np.maximum.reduce([i for i in ins])],
    "Min": lambda ins, at: [np.minimum.reduce([i for i in ins])],
    "Equal": lambda ins, at: [np.equal(ins[0], ins[1])],
    "Less": lambda ins, at: [np.less(ins[0], ins[1])],
    "Greater": lambda ins, at: [np.greater(ins[0], ins[1])],
    "Not": lambda ins, at: [np.logical_not(ins[0])],
    "Where": _where,
    "Cast": _cast,
    "Shape": lambda ins, at: [np.asarray(ins[0].shape[int(at.get("start", 0)):at.get("end")], dtype=np.int64)],
    "Size": lambda ins, at: [np.asarray(ins[0].size, dtype=np.int64)],
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "Concat": _concat,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "DepthToSpace": _depth_to_space,
    "ReduceMean": _reduce(np.mean),
    "ReduceSum": _reduce(np.sum),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "GlobalAveragePool": _gap_f,
    "GlobalMaxPool": _gmp_f,
    "AveragePool": _avgpool_f,
    "MaxPool": _maxpool_f,
    "Conv": _conv_f,
    "ConvTranspose": _conv_transpose_f,
    "BatchNormalization": _batchnorm_f,
    "MatMul": _matmul_f,
    "LSTM": _lstm_f,
    "Gemm": _gemm_f,
    "Softmax": lambda ins, at: _softmax(ins, at),
    "LogSoftmax": lambda ins, at: _softmax(ins, at, log=True),
    "Resize": _resize_f,
    "Pad": _pad_f,
    "QuantizeLinear": _quantize_linear_f,
    "DequantizeLinear": _dequantize_linear_f,
    "ArgMax": _argmax,
}


def run_float_op(op: str, inputs: List[Optional[np.ndarray]], attrs: dict) -> List[np.ndarray]:
    fn = FLOAT_OPS.get(op)
    if fn is None:
        raise ModelError(f"op '{op}' has no implementation in the program interpreter",
                         "it cannot be lowered; keep the model in QDQ form or add the op")
    return fn(list(inputs), attrs)
