"""C statements for the standard ONNX nodes of a program: float islands and data movement.

Data movement (Reshape, Transpose, Slice, Gather with constant indices, ...) is compiled
from the interpreter's own op run on an index tensor: the result says which input
element every output element copies, which becomes a memcpy, a strided copy or, for
anything else, a gather table. Elementwise float ops run over the physical buffer (they
are layout-agnostic; constants are already laid out to match), broadcasting by strides.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..lowering.float_ops import run_float_op
from . import int_kernels
from .source import Source, flit, unsupported

MOVEMENT = frozenset({"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice",
                      "Gather", "Expand", "Tile", "DepthToSpace", "Split"})

UNARY = {"Relu": "QC_F_RELU", "Clip": "QC_F_CLIP", "Sigmoid": "QC_F_SIGMOID", "HardSigmoid": "QC_F_HARDSIGMOID",
         "HardSwish": "QC_F_HARDSWISH", "LeakyRelu": "QC_F_LEAKYRELU", "Elu": "QC_F_ELU", "Tanh": "QC_F_TANH",
         "Exp": "QC_F_EXP", "Log": "QC_F_LOG", "Sqrt": "QC_F_SQRT", "Abs": "QC_F_ABS", "Neg": "QC_F_NEG",
         "Reciprocal": "QC_F_RECIPROCAL", "Floor": "QC_F_FLOOR", "Ceil": "QC_F_CEIL", "Round": "QC_F_ROUND",
         "Erf": "QC_F_ERF", "Softplus": "QC_F_SOFTPLUS"}

BINARY = {"Add": "QC_F_ADD", "Sub": "QC_F_SUB", "Mul": "QC_F_MUL", "Div": "QC_F_DIV", "Max": "QC_F_MAX",
          "Min": "QC_F_MIN", "Pow": "QC_F_POW"}


def _strides_of(index: np.ndarray) -> Optional[tuple]:
    """(base, strides) when index[i0..] == base + sum(i_d * s_d), else None."""
    base = int(index.reshape(-1)[0]) if index.size else 0
    strides = []
    for d in range(index.ndim):
        if index.shape[d] > 1:
            sl = [0] * index.ndim
            sl[d] = 1
            strides.append(int(index[tuple(sl)]) - base)
        else:
            strides.append(0)
    grid = np.indices(index.shape, dtype=np.int64) if index.size else None
    if grid is not None:
        pred = base + np.tensordot(np.asarray(strides, np.int64), grid, axes=(0, 0))
        if not np.array_equal(pred, index):
            return None
    return base, strides


def movement(src: Source, node) -> None:
    x = node.inputs[0]
    if x in src.static:
        raise unsupported(node, "a dynamic input other than the first")
    others = []
    for i in node.inputs[1:]:
        if i and i not in src.static:
            raise unsupported(node, f"dynamic input '{i}'")
        others.append(src.array(i) if i else None)
    attrs = dict(node.attrs)
    if node.op == "Split":
        attrs["_num_outputs"] = len(node.outputs)
    xs = src.shape(x)
    index = np.arange(int(np.prod(xs, dtype=np.int64)), dtype=np.int64).reshape(xs)
    maps = run_float_op(node.op, [index] + others, attrs)
    esize = np.dtype(src.dtype(x)).itemsize
    stmts = []
    for out, m in zip(node.outputs, maps):
        if not out:
            continue
        if node.op == "Dropout" and out != node.outputs[0]:
            raise unsupported(node, "the mask output")
        m = np.asarray(m)
        if tuple(m.shape) != src.shape(out):
            raise unsupported(node, f"shape {m.shape} differs from the traced {src.shape(out)}")
        flat = m.reshape(-1)
        if flat.size and flat[0] + flat.size <= index.size and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)):
            stmts.append(f"memcpy({src.ptr(out)}, (const uint8_t*){src.ptr(x)} + {int(flat[0]) * esize}, "
                         f"{flat.size * esize});")
            continue
        fit = _strides_of(m) if m.ndim <= 6 else None
        if fit is not None:
            base, strides = fit
            shape = [1] * (6 - m.ndim) + list(m.shape)
            strides = [0] * (6 - m.ndim) + strides
            sh = src.new_const(np.asarray(shape, np.int64), "ptrdiff_t")
            st = src.new_const(np.asarray(strides, np.int64), "ptrdiff_t")
            stmts.append(f"qc_strided_copy({src.ptr(x)}, {src.ptr(out)}, {esize}, {sh}, {st}, {base});")
        else:
            table = src.new_const(flat.astype(np.int32), "int32_t")
            stmts.append(f"qc_gather({src.ptr(x)}, {src.ptr(out)}, {esize}, {table}, {flat.size});")
    src.emit(f"{node.op} {node.name} (data movement)", *stmts)


def _float_io(src: Source, node) -> None:
    for t in [i for i in node.inputs if i] + [o for o in node.outputs if o]:
        if src.dtype(t) != "float32":
            raise unsupported(node, f"tensor '{t}' of type {src.dtype(t)}")


def unary(src: Source, node) -> None:
    _float_io(src, node)
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    p0, p1 = 0.0, 0.0
    if node.op == "Clip":
        lo = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1] else None
        hi = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        for t in (lo, hi):
            if t and t not in src.static:
                raise unsupported(node, "dynamic bounds")
        p0 = float(np.asarray(src.array(lo)).reshape(-1)[0]) if lo else a.get("min", -np.inf)
        p1 = float(np.asarray(src.array(hi)).reshape(-1)[0]) if hi else a.get("max", np.inf)
    elif node.op == "HardSigmoid":
        p0, p1 = a.get("alpha", 0.2), a.get("beta", 0.5)
    elif node.op == "LeakyRelu":
        p0 = a.get("alpha", 0.01)
    elif node.op == "Elu":
        p0 = a.get("alpha", 1.0)
    src.emit(f"{node.op} {node.name} (float)",
             f"qc_unary({UNARY[node.op]}, {src.ptr(x)}, {src.ptr(y)}, {src.size(y)}, {flit(p0)}, {flit(p1)});")


def binary(src: Source, node) -> None:
    ins = [i for i in node.inputs if i]
    if len(ins) != 2:
        raise unsupported(node, f"{len(ins)} inputs")
    _float_io(src, node)
    x, z, y = ins[0], ins[1], node.outputs[0]
    src.emit(f"{node.op} {node.name} (float)",
             f"static const qc_bcast bc = {src.bcast(y, src.shape(x), src.shape(z), node)};",
             f"qc_binary({BINARY[node.op]}, {src.ptr(x)}, {src.ptr(z)}, &bc, {src.ptr(y)});")


def softmax(src: Source, node) -> None:
    _float_io(src, node)
    x, y = node.inputs[0], node.outputs[0]
    shape = src.shape(x)
    axis = int(node.attrs.get("axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    src.emit(f"{node.op} {node.name} (float)",
             f"qc_softmax({src.ptr(x)}, {src.ptr(y)}, {outer}, {shape[axis]}, {inner}, {int(node.op == 'LogSoftmax')});")


REDUCE = {"ReduceMean": "QC_R_MEAN", "ReduceSum": "QC_R_SUM", "ReduceMax": "QC_R_MAX", "ReduceMin": "QC_R_MIN"}


def reduce(src: Source, node) -> None:
    """Reductions over one run of adjacent axes ([outer, n, inner] after merging)."""
    _float_io(src, node)
    x, y = node.inputs[0], node.outputs[0]
    shape = src.shape(x)
    axes = node.attrs.get("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        if node.inputs[1] not in src.static:
            raise unsupported(node, "dynamic axes")
        axes = np.asarray(src.array(node.inputs[1])).reshape(-1).tolist()
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            raise unsupported(node, "noop_with_empty_axes")
        axes = list(range(len(shape)))
    axes = sorted(int(a) + len(shape) if int(a) < 0 else int(a) for a in axes)
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise unsupported(node, f"axes {axes} that are not adjacent")
    outer = int(np.prod(shape[:axes[0]], dtype=np.int64))
    n = int(np.prod(shape[axes[0]:axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(shape[axes[-1] + 1:], dtype=np.int64))
    src.emit(f"{node.op} {node.name} (float)",
             f"qc_reduce_f({REDUCE[node.op]}, {src.ptr(x)}, {src.ptr(y)}, {outer}, {n}, {inner});")


def matmul(src: Source, node) -> None:
    """float MatMul with batch broadcasting (both operands at least 2-D)."""
    _float_io(src, node)
    a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    ash, wsh, ysh = src.shape(a), src.shape(w), src.shape(y)
    if len(ash) < 2 or len(wsh) < 2:
        raise unsupported(node, "a 1-D operand")
    m, k, n = ash[-2], ash[-1], wsh[-1]
    if wsh[-2] != k or ysh[-2:] != (m, n):
        raise unsupported(node, f"shapes {ash} @ {wsh} -> {ysh}")
    batch = ysh[:-2]
    nb = int(np.prod(batch, dtype=np.int64))

    def offsets(shape):  # element offset of each output batch's matrix in the operand
        lead = (1,) * (len(batch) - len(shape[:-2])) + tuple(shape[:-2])
        idx = np.arange(int(np.prod(lead, dtype=np.int64)), dtype=np.int64).reshape(lead)
        return (np.broadcast_to(idx, batch).reshape(-1) * shape[-2] * shape[-1]).astype(np.int32)

    ao = src.new_const(offsets(ash).reshape(-1) if nb else np.zeros(1, np.int32), "int32_t")
    wo = src.new_const(offsets(wsh).reshape(-1) if nb else np.zeros(1, np.int32), "int32_t")
    wptr = src.const(w, np.asarray(src.array(w), np.float32), "float") if w in src.static else src.ptr(w)
    aptr = src.const(a, np.asarray(src.array(a), np.float32), "float") if a in src.static else src.ptr(a)
    src.emit(f"MatMul {node.name} (float): {nb} x {m}x{k} @ {k}x{n}",
             f"qc_matmul_f({aptr}, {wptr}, {src.ptr(y)}, {ao}, {wo}, {nb}, {m}, {k}, {n});")


def lstm(src: Source, node) -> None:
    from ..lowering.float_ops import lstm_unsupported

    _float_io(src, node)
    ins = list(node.inputs) + [""] * (8 - len(node.inputs))
    for i in ins[1:]:
        if i and i not in src.static:
            raise unsupported(node, f"dynamic input '{i}'")
    why = lstm_unsupported(node.attrs, [src.array(i) if i else None for i in ins])
    if why:
        raise unsupported(node, why)
    t, n, i = src.shape(ins[0])
    dirs, _, hid = src.shape(ins[2])
    direction = node.attrs.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    arg = lambda k: src.const(ins[k], np.asarray(src.array(ins[k]), np.float32), "float") if ins[k] else "NULL"
    outs = list(node.outputs) + [""] * (3 - len(node.outputs))
    optr = [src.ptr(o) if o else "NULL" for o in outs]
    src.need_scratch((2 * n * hid + 4 * hid) * 8)
    src.emit(f"LSTM {node.name} (float): {t} steps, {dirs} x {hid}",
             f"qc_lstm({src.ptr(ins[0])}, {arg(1)}, {arg(2)}, {arg(3)}, {arg(7)}, {arg(5)}, {arg(6)}, "
             f"{optr[0]}, {optr[1]}, {optr[2]}, {t}, {n}, {i}, {hid}, {dirs}, {int(direction == 'reverse')}, "
             f"(double*)scratch);")


def cast(src: Source, node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if src.dtype(x) != src.dtype(y):
        raise unsupported(node, f"{src.dtype(x)} -> {src.dtype(y)}")
    src.emit(f"Cast {node.name} (no-op)",
             f"memcpy({src.ptr(y)}, {src.ptr(x)}, {src.size(y) * np.dtype(src.dtype(y)).itemsize});")


def concat(src: Source, node) -> None:
    int_kernels.concat(src, node, axis=int(node.attrs["axis"]))


def resize(src: Source, node) -> None:
    a = node.attrs
    if a.get("mode", "nearest") != "nearest" or len(src.shape(node.inputs[0])) != 4:
        raise unsupported(node, f"mode {a.get('mode', 'nearest')}")
    ins = node.inputs
    scales = sizes = None
    for i in ins[1:]:
        if i and i not in src.static:
            raise unsupported(node, "dynamic scales or sizes")
    if len(ins) == 2 and ins[1]:
        scales = np.asarray(src.array(ins[1]), np.float64)
    else:
        if len(ins) > 2 and ins[2] and np.asarray(src.array(ins[2])).size:
            scales = np.asarray(src.array(ins[2]), np.float64)
        if len(ins) > 3 and ins[3] and np.asarray(src.array(ins[3])).size:
            sizes = np.asarray(src.array(ins[3]), np.int64)
    xs, ys = src.shape(node.inputs[0]), src.shape(node.outputs[0])
    if xs[:2] != ys[:2]:
        raise unsupported(node, "resizing the batch or channel axis")
    int_kernels.resize(src, node, layout="NCHW", scales=None if scales is None else list(scales[2:]),
                       sizes=None if sizes is None else list(sizes[2:]))


def _pads(node, xs, ys, kh, kw, transpose: bool):
    a = node.attrs
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or (transpose and a.get("output_shape")):
        # auto_pad / output_shape: the pads that give the traced output shape
        sh, sw = a.get("strides", [1, 1])
        dh, dw = a.get("dilations", [1, 1])
        if transpose:
            op = a.get("output_padding", [0, 0])
            th = (xs[2] - 1) * sh + dh * (kh - 1) + 1 + op[0] - ys[2]
            tw = (xs[3] - 1) * sw + dw * (kw - 1) + 1 + op[1] - ys[3]
        else:
            th = max((ys[2] - 1) * sh + dh * (kh - 1) + 1 - xs[2], 0)
            tw = max((ys[3] - 1) * sw + dw * (kw - 1) + 1 - xs[3], 0)
        upper = a.get("auto_pad") == "SAME_UPPER" or (not transpose and a.get("auto_pad") != "SAME_LOWER")
        if transpose and a.get("output_shape") and a.get("auto_pad") != "SAME_UPPER":
            upper = False
        return (th // 2, tw // 2) if upper else (th - th // 2, tw - tw // 2)
    p = a.get("pads", [0, 0, 0, 0])
    return int(p[0]), int(p[1])


def conv(src: Source, node) -> None:
    """float Conv and ConvTranspose (NCHW, 2-D, constant weights)."""
    _float_io(src, node)
    a = node.attrs
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    xs, ys = src.shape(x), src.shape(y)
    if len(xs) != 4 or w not in src.static or (b and b not in src.static):
        raise unsupported(node, "a non-2-D input or non-constant weights")
    ws = src.shape(w)
    kh, kw = ws[2], ws[3]
    g = int(a.get("group", 1))
    sh, sw = (int(v) for v in a.get("strides", [1, 1]))
    dh, dw = (int(v) for v in a.get("dilations", [1, 1]))
    transpose = node.op == "ConvTranspose"
    pt, pl = _pads(node, xs, ys, kh, kw, transpose)
    bsym = src.const(b, np.asarray(src.array(b), np.float32), "float") if b else "NULL"
    wsym = src.const(w, np.asarray(src.array(w), np.float32), "float")
    geo = f"{xs[0]}, {xs[1]}, {xs[2]}, {xs[3]}, {ys[1]}, {g}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {pt}, {pl}, " \
          f"{ys[2]}, {ys[3]}"
    if transpose:
        acc = -(-(ys[1] * ys[2] * ys[3] * 8) // 64) * 64
        src.need_scratch(acc + ws[1] * kh * kw * xs[2] * xs[3] * 8)  # double column sums
        src.emit(f"ConvTranspose {node.name} (float)",
                 f"qc_conv_transpose_f({src.ptr(x)}, {wsym}, {bsym}, {geo}, (double*)scratch, "
                 f"(double*)(scratch + {acc}), {src.ptr(y)});")
    else:
        src.emit(f"Conv {node.name} (float): {kh}x{kw}/{sh}",
                 f"qc_conv_f({src.ptr(x)}, {wsym}, {bsym}, {geo}, {src.ptr(y)});")


def emitter(op: str):
    if op in MOVEMENT:
        return movement
    if op in UNARY:
        return unary
    if op in BINARY:
        return binary
    return {"Softmax": softmax, "LogSoftmax": softmax, "Cast": cast, "Concat": concat, "Resize": resize,
            "Conv": conv, "ConvTranspose": conv, "MatMul": matmul, "LSTM": lstm, **{r: reduce for r in REDUCE}}.get(op)
