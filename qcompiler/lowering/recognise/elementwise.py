"""Add and Mul of two quantized tensors (fixed-point or float-scale rescale of each input),
and lookup tables: a unary op, or an Add / Mul with a scalar constant, on an 8-bit tensor
becomes a table of its 256 results computed like the QDQ model."""

from __future__ import annotations

import numpy as np

from ..float_ops import run_float_op
from ..integers import dtype_range
from .state import attrs_of, q_of

__all__ = ["lower_add", "lower_mul", "lower_lut"]

ADD_LEFT_SHIFT = 20  # the two-input Add rescales its inputs with 2**-ADD_LEFT_SHIFT precision


def quantized_operand(lw, v, hint):
    """(program tensor, scale, zp, is_const) of a quantized operand, or None."""
    if lw.is_qview(v):
        return v.pt, v.scale, v.zp, False
    if lw.is_qconst(v) and v.qint.dtype in (np.int8, np.uint8):
        name = lw.add_const(f"{hint}.const", np.asarray(v.qint))
        return name, float(np.asarray(v.qscale).reshape(-1)[0]), int(np.asarray(v.qzp).reshape(-1)[0]), True
    return None


def lower_add(lw, node, ins, tail) -> bool:
    if len(ins) != 2:
        return False
    if scalar_operand_lut(lw, node, ins, tail):
        return True
    a = quantized_operand(lw, ins[0], node.input[0])
    b = quantized_operand(lw, ins[1], node.input[1])
    if a is None or b is None or (a[3] and b[3]):
        return False
    _, act, (s_y, z_y, dt) = tail
    lo, hi, actname = lw.out_clamp(act, s_y, z_y, dt)
    base = lw.out_name(tail, node)
    if lw.float_requant:
        consts = [lw.add_const(f"{base}.a_scale", np.float32(np.float32(a[1]) / np.float32(s_y))),
                  lw.add_const(f"{base}.b_scale", np.float32(np.float32(b[1]) / np.float32(s_y)))]
    else:
        twice = 2.0 * max(a[1], b[1])
        consts = (lw.requant_consts(f"{base}.a", np.float64(a[1]) / twice)
                  + lw.requant_consts(f"{base}.b", np.float64(b[1]) / twice)
                  + lw.requant_consts(base, twice / ((1 << ADD_LEFT_SHIFT) * np.float64(s_y))))
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0]), s_y, z_y)
    acts = [i for i, o in enumerate((a, b)) if not o[3]]
    cc = [i for i, o in enumerate((a, b)) if o[3]]
    lw.emit("Add", node.name or base, [a[0], b[0]] + consts, [base],
            {"a_zero_point": a[2], "b_zero_point": b[2], "y_zero_point": z_y, "qmin": lo, "qmax": hi,
             "dtype": dt, "left_shift": ADD_LEFT_SHIFT, "activation": actname},
            cls="agnostic", act_inputs=acts, channel_consts=cc)
    lw.bind_tail(tail, base, s_y, z_y, dt)
    return True


def lower_mul(lw, node, ins, tail) -> bool:
    if len(ins) != 2:
        return False
    if scalar_operand_lut(lw, node, ins, tail):
        return True
    a = quantized_operand(lw, ins[0], node.input[0])
    b = quantized_operand(lw, ins[1], node.input[1])
    if a is None or b is None or (a[3] and b[3]):
        return False
    _, act, (s_y, z_y, dt) = tail
    lo, hi, actname = lw.out_clamp(act, s_y, z_y, dt)
    base = lw.out_name(tail, node)
    if lw.float_requant:
        m = np.float32(a[1]) * np.float32(b[1]) / np.float32(s_y)
    else:
        m = np.float64(a[1]) * np.float64(b[1]) / np.float64(s_y)
    consts = lw.requant_consts(base, m)
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0]), s_y, z_y)
    acts = [i for i, o in enumerate((a, b)) if not o[3]]
    cc = [i for i, o in enumerate((a, b)) if o[3]]
    lw.emit("Mul", node.name or base, [a[0], b[0]] + consts, [base],
            {"a_zero_point": a[2], "b_zero_point": b[2], "y_zero_point": z_y, "qmin": lo, "qmax": hi,
             "dtype": dt, "activation": actname}, cls="agnostic", act_inputs=acts, channel_consts=cc)
    lw.bind_tail(tail, base, s_y, z_y, dt)
    return True


def lower_lut(lw, node, ins, tail) -> bool:
    x = ins[0]
    if not lw.is_qview(x) or any(v is not None and v.kind != "const" for v in ins[1:]):
        return False
    return emit_lut(lw, node, ins, 0, tail)


def scalar_operand_lut(lw, node, ins, tail) -> bool:
    """Add / Mul of an 8-bit tensor and a scalar constant is a unary function of the
    tensor: a lookup table computed like the QDQ model (float32, then QuantizeLinear).

    The two-operand fixed-point Add rescales the constant with 2**-left_shift
    precision, which decides rounding ties wrongly when the exact result sits next to
    one: HardSwish's clip(x + 3, 0, 6) at the output scale 6/127 maps x = 0 to
    63.50000024, which the Add kernel rounded to 63 (ONNX Runtime and the exact value:
    64), on 1-7 % of the elements of such layers of PP-OCR. A table has no such error."""
    if tail is None:
        return False
    xi = next((i for i, v in enumerate(ins) if lw.is_qview(v)), None)
    if xi is None:
        return False
    c = ins[1 - xi]
    if c is None or c.kind != "const" or np.asarray(c.value).size != 1:
        return False
    rank = lw.shape(node.input[xi])
    if np.ndim(c.value) > (len(rank) if rank is not None else 0):
        return False  # the constant would add dimensions
    return emit_lut(lw, node, ins, xi, tail)


def emit_lut(lw, node, ins, xi, tail) -> bool:
    """A Lut kernel for `node` as a function of its xi-th input (the others constant):
    table = Q_out(act(f(DQ_in(q)))) for every q of the input type, in float32."""
    x = ins[xi]
    _, act, (s_y, z_y, dt) = tail
    lo, hi = dtype_range(x.dtype)
    q = np.arange(lo, hi + 1, dtype=np.int64)
    xf = (q - x.zp).astype(np.float32) * np.float32(x.scale)
    args = [xf if i == xi else (None if v is None else v.value) for i, v in enumerate(ins)]
    y = run_float_op(node.op_type, args, attrs_of(node))[0]
    if act is not None:
        y = run_float_op(act.op_type, [y] + [None if not i else lw.vals[i].value for i in act.input[1:]],
                         attrs_of(act))[0]
    table = q_of(np.asarray(y, dtype=np.float32).reshape(-1), s_y, z_y, dt)
    if table.size != q.size:
        return False
    base = lw.out_name(tail, node)
    lw.add_tensor(base, dt, lw.shape(tail[0][0].output[0]), s_y, z_y)
    tname = lw.add_const(f"{base}.table", table)
    lw.emit("Lut", node.name or base, [x.pt, tname], [base], {"function": node.op_type, "dtype": dt},
            cls="agnostic", act_inputs=[0])
    lw.bind_tail(tail, base, s_y, z_y, dt)
    return True
