"""Conv, Gemm and MatMul with int8 weights: the int32 bias (the activation zero point's
correction folded in), per-output-channel requant constants and the output clamp of a
following Relu / Clip; or, without a Q after them, a float output (TensorRT placement).
The weight stays unpacked here: emission packs it for the layout the plan chose."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .state import Val, attrs_of, window_pads

__all__ = ["lower_conv", "lower_gemm", "lower_matmul"]


def lower_conv(lw, node, ins, tail) -> bool:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not lw.is_qview(x) or not lw.is_qconst(w, per_tensor=False) or w.qint.dtype != np.int8:
        return False
    wq = np.asarray(w.qint)
    if wq.ndim != 4 or np.any(w.qzp != 0) or (w.qscale.size > 1 and w.qaxis not in (0, -4)):
        return False
    at = attrs_of(node)
    group = int(at.get("group", 1))
    oc, icg, kh, kw = wq.shape
    ic = icg * group
    strides = list(at.get("strides", [1, 1]))
    dil = list(at.get("dilations", [1, 1]))
    pads = window_pads(lw, node, at, [kh, kw], strides, dil)
    if pads is None:
        return False
    s_x = np.float32(x.scale)
    s_w = np.broadcast_to(np.asarray(w.qscale, dtype=np.float32).reshape(-1), (oc,))
    fbias = ybias = None
    if tail is None:  # float output: the bias stays float, added after the rescale
        fbias = float_bias(lw, b, oc)
        bias = np.zeros(oc, dtype=np.int64) if fbias is not None else None
    elif keeps_float_bias(lw, b):  # float epilogue: the float bias is added before rounding
        ybias = float_bias(lw, b, oc)
        bias = np.zeros(oc, dtype=np.int64) if ybias is not None else None
    else:
        bias = int_bias(lw, b, s_x, s_w, oc)
    if bias is None:
        return False
    bias = bias - np.int64(x.zp) * wq.reshape(oc, -1).astype(np.int64).sum(axis=1)
    if np.any(np.abs(bias) > 2 ** 31 - 1):
        return False
    base = lw.out_name(tail, node)
    attrs = {"group": group, "in_channels": ic, "out_channels": oc, "kernel_shape": [kh, kw],
             "strides": strides, "pads": pads, "dilations": dil, "x_zero_point": x.zp}
    if tail is None:  # float output: y = float(acc) * (s_x * s_w) + float bias
        scale_c = (s_x * s_w).astype(np.float32)
        consts = [lw.add_const(f"{base}.scale", scale_c), lw.add_const(f"{base}.float_bias", fbias)]
        attrs.update({"y_zero_point": 0, "qmin": 0, "qmax": 0, "dtype": "float32", "output": "float",
                      "activation": "none"})
        dt, s_y, z_y = "float32", None, None
    else:
        _, act, (s_y, z_y, dt) = tail
        lo, hi, actname = lw.out_clamp(act, s_y, z_y, dt)
        m = (np.float64(s_x) * s_w.astype(np.float64)) / np.float64(s_y)
        if lw.float_requant:
            m = (s_x * s_w).astype(np.float32) / np.float32(s_y)
        consts = lw.requant_consts(base, m)
        if ybias is not None:
            consts.append(lw.add_const(f"{base}.y_bias", scaled_bias(ybias, s_y)))
        attrs.update({"y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt, "activation": actname})
    out_shape = lw.shape(tail[0][0].output[0] if tail else node.output[0])
    if out_shape is None or len(out_shape) != 4:
        out_shape = [None, oc, None, None]  # no shape inference: the channels are known anyway
    lw.add_tensor(base, dt, out_shape, s_y, z_y)
    bname = lw.add_const(f"{base}.bias", bias.astype(np.int32))
    wname = lw.add_const(f"{base}.weight", wq)
    lw.emit("Conv", node.name or base, [x.pt, wname, bname] + consts, [base], attrs, cls="conv",
            act_inputs=[0], conv={"onnx_node": node.name or base, "w": wq, "ic": ic, "oc": oc,
                                  "group": group, "kernel": (kh, kw), "stride": tuple(strides),
                                  "dilation": tuple(dil)},
            channel_vectors=list(range(2, 3 + len(consts))))
    if tail is None:
        lw.vals[node.output[0]] = Val("float", pt=base, onnx_name=node.output[0])
    else:
        lw.bind_tail(tail, base, s_y, z_y, dt)
    return True


def float_bias(lw, b, n) -> Optional[np.ndarray]:
    """The float32 bias (zeros without one) of a float-output kernel, or None."""
    if b is None:
        return np.zeros(n, dtype=np.float32)
    if b.kind != "const":
        return None
    v = np.asarray(b.value, dtype=np.float32).reshape(-1)
    return np.ascontiguousarray(np.broadcast_to(v, (n,))) if v.size in (1, n) else None


def keeps_float_bias(lw, b) -> bool:
    """A float-scale target adds a bias the QDQ model leaves in float (TensorRT
    placement: quantize_bias false) in its float epilogue, unrounded; rounding it to
    int32 in units of s_x * s_w moved results across rounding ties (0.1 % of a layer's
    elements on PP-OCR cls for cuda)."""
    return (lw.float_requant and b is not None and b.kind == "const"
            and not (b.qint is not None and b.qint.dtype == np.int32))


def scaled_bias(fbias, s_y) -> np.ndarray:
    """A float bias in units of the output step, float32 (one rounding)."""
    return (np.asarray(fbias, dtype=np.float64) / np.float64(s_y)).astype(np.float32)


def int_bias(lw, b, s_x, s_w, n) -> Optional[np.ndarray]:
    """int64 bias in units of s_x * s_w[c] (None when it cannot be had)."""
    if b is None:
        return np.zeros(n, dtype=np.int64)
    if b.kind != "const":
        return None
    acc_scale = (np.float32(s_x) * np.asarray(s_w, dtype=np.float32)).astype(np.float64)
    if b.qint is not None and b.qint.dtype == np.int32:
        bq = np.broadcast_to(np.asarray(b.qint, dtype=np.int64).reshape(-1), (n,))
        bs = np.broadcast_to(np.asarray(b.qscale, dtype=np.float64).reshape(-1), (n,))
        if np.all(np.asarray(b.qzp) == 0) and np.allclose(bs, acc_scale, rtol=1e-6, atol=0):
            return bq.copy()
        return np.rint(bq * bs / acc_scale).astype(np.int64)
    bv = np.asarray(b.value, dtype=np.float64).reshape(-1)
    if bv.size not in (1, n):
        return None
    return np.rint(np.broadcast_to(bv, (n,)) / acc_scale).astype(np.int64)


def lower_gemm(lw, node, ins, tail) -> bool:
    at = attrs_of(node)
    if at.get("transA", 0) or float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
        return False
    a, w = ins[0], ins[1]
    if not lw.is_qconst(w, per_tensor=False):
        return False
    wq = np.asarray(w.qint)
    if wq.ndim != 2 or wq.dtype != np.int8 or np.any(w.qzp != 0):
        return False
    trans = int(at.get("transB", 0))
    wt = wq if trans else wq.T  # [N, K]
    if w.qscale.size > 1 and w.qaxis not in ((0, -2) if trans else (1, -1)):
        return False
    return emit_gemm(lw, node, ins, tail, a, wt, w.qscale, ins[2] if len(ins) > 2 else None)


def lower_matmul(lw, node, ins, tail) -> bool:
    a, w = ins[0], ins[1]
    if not lw.is_qconst(w, per_tensor=False):
        return False
    wq = np.asarray(w.qint)
    if wq.ndim != 2 or wq.dtype != np.int8 or np.any(w.qzp != 0):
        return False
    if w.qscale.size > 1 and w.qaxis not in (1, -1):
        return False
    return emit_gemm(lw, node, ins, tail, a, wq.T, w.qscale, None)


def emit_gemm(lw, node, ins, tail, a, wt, wscale, b) -> bool:
    if not lw.is_qview(a):
        return False
    n = wt.shape[0]
    s_a = np.float32(a.scale)
    s_w = np.broadcast_to(np.asarray(wscale, dtype=np.float32).reshape(-1), (n,))
    fbias = float_bias(lw, b, n) if tail is None or keeps_float_bias(lw, b) else None
    bias = (np.zeros(n, dtype=np.int64) if fbias is not None else None) \
        if tail is None or keeps_float_bias(lw, b) else int_bias(lw, b, s_a, s_w, n)
    if bias is None:
        return False
    base = lw.out_name(tail, node)
    attrs = {"a_zero_point": a.zp, "in_features": int(wt.shape[1]), "out_features": int(n)}
    if tail is None:
        consts = [lw.add_const(f"{base}.scale", (s_a * s_w).astype(np.float32)),
                  lw.add_const(f"{base}.float_bias", fbias)]
        attrs.update({"y_zero_point": 0, "qmin": 0, "qmax": 0, "dtype": "float32", "output": "float",
                      "activation": "none"})
        dt, s_y, z_y = "float32", None, None
    else:
        _, act, (s_y, z_y, dt) = tail
        lo, hi, actname = lw.out_clamp(act, s_y, z_y, dt)
        m = np.float64(s_a) * s_w.astype(np.float64) / np.float64(s_y)
        if lw.float_requant:
            m = (s_a * s_w).astype(np.float32) / np.float32(s_y)
        consts = lw.requant_consts(base, m)
        if fbias is not None:
            consts.append(lw.add_const(f"{base}.y_bias", scaled_bias(fbias, s_y)))
        attrs.update({"y_zero_point": z_y, "qmin": lo, "qmax": hi, "dtype": dt, "activation": actname})
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0] if tail else node.output[0]), s_y, z_y)
    wname = lw.add_const(f"{base}.weight", np.ascontiguousarray(wt))
    bname = lw.add_const(f"{base}.bias", bias.astype(np.int32))
    lw.emit("Gemm", node.name or base, [a.pt, wname, bname] + consts, [base], attrs, act_inputs=[0])
    if tail is None:
        lw.vals[node.output[0]] = Val("float", pt=base, onnx_name=node.output[0])
    else:
        lw.bind_tail(tail, base, s_y, z_y, dt)
    return True
