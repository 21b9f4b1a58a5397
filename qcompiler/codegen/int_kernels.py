"""C statements for the program's integer kernels (domain qcompiler.program).

One function per kernel op; each reads the node's attributes and constants, checks that
the shapes fit a C kernel of qc_kernels.h, and emits one call. What a kernel computes is
defined by qcompiler/lowering/interpreter.py; the C kernels reproduce it bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from ..lowering import int_kernels as ref
from ..lowering.fixed_point import quantize_multiplier
from ..lowering.layouts import block_of, is_blocked, same_activation_form
from .source import DT_CODE, Source, flit, ilit, unsupported


def _dt(src: Source, name: str, node) -> str:
    code = DT_CODE.get(src.dtype(name))
    if code is None:
        raise unsupported(node, f"tensor '{name}' of type {src.dtype(name)}")
    return code


def _lay(layout: str) -> str:
    return "QC_NHWC" if layout == "NHWC" else ("QC_BLOCKED" if is_blocked(layout) else "QC_NCHW")


def quantize(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    if src.dtype(x) != "float32":
        raise unsupported(node, f"input of type {src.dtype(x)}")
    src.emit(f"Quantize {node.name}",
             f"qc_quantize({src.ptr(x)}, {src.ptr(y)}, {src.size(y)}, {flit(a['scale'])}, "
             f"{int(a.get('zero_point', 0))}, {_dt(src, y, node)});")


def dequantize(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    src.emit(f"Dequantize {node.name}",
             f"qc_dequantize({src.ptr(x)}, {_dt(src, x, node)}, {src.ptr(y)}, {src.size(y)}, "
             f"{flit(a['scale'])}, {int(a.get('zero_point', 0))});")


def layout_convert(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    s, d = a["src"], a["dst"]
    xs = src.shape(x)
    if len(xs) not in (4, 5):
        raise unsupported(node, f"a {len(xs)}-D tensor")
    _, h, w, _, scp = src.spatial(x, s)
    _, _, _, _, dcp = src.spatial(y, d)
    channels = int(a["channels"]) if a.get("channels") is not None else scp
    esize = np.dtype(src.dtype(x)).itemsize
    if esize not in (1, 4):
        raise unsupported(node, f"tensor type {src.dtype(x)}")
    pad = a.get("pad_value", 0)
    src.emit(f"LayoutConvert {node.name}: {s} -> {d}",
             f"qc_layout_convert({src.ptr(x)}, {src.ptr(y)}, {esize}, {xs[0]}, {h}, {w}, {channels}, "
             f"{_lay(s)}, {block_of(s)}, {scp}, {_lay(d)}, {block_of(d)}, {dcp}, {int(pad)}, {flit(pad)});")


def conv(src: Source, node) -> None:
    a = node.attrs
    x, w, b, y = node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0]
    kind, layout = a["kind"], a["layout"]
    in_layout = a.get("in_layout", layout)
    g = int(a.get("group", 1))
    kh, kw = (int(v) for v in a["kernel_shape"])
    sh, sw = (int(v) for v in a.get("strides", [1, 1]))
    dh, dw = (int(v) for v in a.get("dilations", [1, 1]))
    pt, pl, pb, pr = (int(v) for v in a.get("pads", [0, 0, 0, 0]))
    planes, h, wd, lanes, cphys = src.spatial(x, in_layout)
    _, ho, wo, _, ocphys = src.spatial(y, layout)
    n = src.shape(x)[0]
    bias = np.asarray(src.array(b)).astype(np.int32).reshape(-1)
    oc = bias.size
    if oc != ocphys:
        raise unsupported(node, f"{oc} bias entries for {ocphys} output channels")
    float_out = a.get("output") == "float"
    if float_out and src.dtype(y) != "float32":
        raise unsupported(node, "a float-out conv with an integer output")
    ydt = "QC_F32" if float_out else _dt(src, y, node)
    zx = int(a.get("x_zero_point", 0))
    rq = src.requant(node, node.inputs[3:], int(a.get("y_zero_point", 0)), int(a.get("qmin", 0)),
                     int(a.get("qmax", 0)))
    hp, wp = h + pt + pb, wd + pl + pr
    wsym, bsym = src.const(w, np.asarray(src.array(w), np.int8), "int8_t"), src.const(b, bias, "int32_t")
    gg = oc if kind == "depthwise" else g
    geo = f"{{{n}, {cphys}, {hp}, {wp}, {oc}, {gg}, {kh}, {kw}, " \
          f"{sh}, {sw}, {dh}, {dw}, {ho}, {wo}}}"
    xp_elems = planes * hp * wp * lanes
    k = block_of(layout)
    wshape = tuple(src.shape(w))
    if layout == "NCHW" and in_layout == "NCHW":
        if wshape != (oc, cphys // gg, kh, kw):
            raise unsupported(node, f"NCHW weight shape {wshape}")
        acc, call = ho * wo, f"qc_conv_nchw(xp, {wsym}, {bsym}, &g, acc, &rq, {src.ptr(y)}, {ydt});"
    elif layout == "NHWC" and in_layout == "NHWC":
        dwise = kind == "depthwise"
        want = (kh, kw, oc) if dwise else (oc, kh, kw, cphys // g)
        if wshape != want:
            raise unsupported(node, f"NHWC weight shape {wshape}")
        acc, call = 0, f"qc_conv_nhwc(xp, {wsym}, {bsym}, &g, {int(dwise)}, &rq, {src.ptr(y)}, {ydt});"
    elif kind == "first" and layout in ("NCHW44", "NCHW44_DOT") and in_layout == "NCHW":
        if wshape != (oc // 4, kh, kw, cphys, 4):
            raise unsupported(node, f"first-layer weight shape {wshape}")
        acc, call = ho * wo * 4, f"qc_conv_first44(xp, {wsym}, {bsym}, &g, acc, &rq, {src.ptr(y)}, {ydt});"
    elif kind == "depthwise" and is_blocked(layout) and same_activation_form(in_layout, layout):
        if wshape != (oc // k, 1, 1, kh, kw, k) or cphys != oc:
            raise unsupported(node, f"blocked depthwise weight shape {wshape}")
        acc = ho * wo * k
        call = f"qc_conv_dw_blocked(xp, {wsym}, {bsym}, &g, {k}, acc, &rq, {src.ptr(y)}, {ydt});"
    elif layout in ("NCHW44", "NCHW44_DOT") and in_layout in ("NCHW44", "NCHW44_DOT"):
        if cphys % (4 * g) or oc % (4 * g):
            raise unsupported(node, f"group {g} without whole blocks of 4")
        want = (oc // 4, cphys // 4, kh, kw, 4, 4) if kind == "dense" else \
            (g, oc // 4 // g, cphys // 4 // g, kh, kw, 4, 4)
        if wshape != want:
            raise unsupported(node, f"{layout} weight shape {wshape}")
        dot = int(layout == "NCHW44_DOT")
        s8 = int(src.dtype(x) == "int8")
        acc, call = ho * wo * 4, f"qc_conv_nchw44(xp, {wsym}, {bsym}, &g, {dot}, {s8}, acc, &rq, {src.ptr(y)}, {ydt});"
    elif layout in ("NC4HW4", "NC32HW32") and in_layout == layout:
        if cphys % (k * g) or oc % g:
            raise unsupported(node, f"group {g} without whole blocks of {k}")
        want = (oc, cphys // k, kh, kw, k) if kind == "dense" else (g, oc // g, cphys // k // g, kh, kw, k)
        if wshape != want:
            raise unsupported(node, f"{layout} weight shape {wshape}")
        acc, call = ho * wo, f"qc_conv_vec(xp, {wsym}, {bsym}, &g, {k}, acc, &rq, {src.ptr(y)}, {ydt});"
    else:
        raise unsupported(node, f"{kind} conv from {in_layout} to {layout}")
    xp_bytes = -(-xp_elems * 2 // 64) * 64
    src.need_scratch(xp_bytes + acc * 4)
    portable = [f"int16_t* xp = (int16_t*)scratch;",
                f"int32_t* acc = (int32_t*)(scratch + {xp_bytes});",
                f"qc_pad_i16({src.ptr(x)}, {_dt(src, x, node)}, {planes}, {h}, {wd}, {lanes}, {pt}, {pl}, {pb}, {pr}, "
                f"{zx}, xp);",
                "(void)acc;",
                call]
    fast = _x86_conv(src, node, kind, g, (n, cphys, h, wd, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ho, wo), zx, bias,
                     ydt, in_layout, layout)
    if fast:
        portable = fast[:-1] + ["#ifdef QC_X86", f"if (!{fast[-1]})", "#endif", "{"] + \
            ["  " + st for st in portable] + ["}"]
    src.emit(f"Conv {node.name}: {kind} {layout}, {kh}x{kw}/{sh}, group {g}",
             f"static const qc_conv_geo g = {geo};",
             f"static const qc_rq rq = {rq};",
             *portable)


def _ceil(v: int, m: int) -> int:
    return -(-int(v) // m) * m


def _x86_conv(src: Source, node, kind, g, geo, zx, bias, ydt, in_layout, layout):
    """Statements of the AVX2 / AVX-512 VNNI path of an NCHW conv (qc_x86.h), or None; the
    last one is the call, which returns 0 when the CPU has neither (portable path runs)."""
    if not (src.x86 and in_layout == layout == "NCHW" and src.dtype(node.inputs[0]) in ("int8", "uint8")):
        return None
    n, c, h, wd, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ho, wo = geo
    x, y = node.inputs[0], node.outputs[0]
    w = np.asarray(src.array(node.inputs[1]), np.int8)
    xdt = _dt(src, x, node)
    hp, wp = h + pt + pb, wd + pl + pr
    if kind == "depthwise" and g == c == oc and w.shape == (oc, 1, kh, kw):
        hq, wq = -(-hp // sh), -(-wp // sw)
        nq = ho * wq
        nqp = _ceil(nq, 32)
        total = sh * sw * hq * wq + nqp + 64
        src.need_scratch(_ceil(total * 2, 64) + nqp * 4)
        d = f"{{{n}, {c}, {h}, {wd}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {pt}, {pl}, {ho}, {wo}, {hq}, {wq}, " \
            f"{nq}, {nqp}, {hq * wq}}}"
        wsym = src.const(node.inputs[1], w, "int8_t")
        return [f"static const qc_x86_dw xd = {d};",
                f"qc_conv_dw_x86({src.ptr(x)}, {xdt}, {zx}, {wsym}, {src.const(node.inputs[2], bias, 'int32_t')}, "
                f"&xd, &rq, {src.ptr(y)}, {ydt}, scratch)"]
    if g != 1 or w.shape != (oc, c, kh, kw):
        return None
    k = c * kh * kw
    k4, ocp = _ceil(k, 4), _ceil(oc, 8)
    p = ho * wo
    pp = _ceil(p, 32)
    direct = int(kh == kw == 1 and sh == sw == 1 and pt == pl == pb == pr == 0)
    a = np.zeros((ocp, k4), np.int8)
    a[:oc, :k] = w.reshape(oc, k)
    b2 = np.zeros(ocp, np.int32)
    b2[:oc] = bias
    if xdt == "QC_I8":  # the input is offset by 128 to u8: take 128 * sum(w) back out
        b2[:oc] -= 128 * w.reshape(oc, k).astype(np.int32).sum(axis=1)
    xpad = 0 if direct else _ceil(n * c * hp * wp, 64)
    src.need_scratch(xpad + _ceil(wp + 64, 64) + _ceil(k4 * pp, 64) + k4 * 8)
    cg = f"{{{n}, {c}, {h}, {wd}, {oc}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {pt}, {pl}, {pb}, {pr}, {ho}, {wo}, " \
         f"{k}, {k4}, {ocp}, {p}, {pp}, {direct}}}"
    return [f"static const qc_x86_conv xc = {cg};",
            f"qc_conv_nchw_x86({src.ptr(x)}, {xdt}, {zx}, {src.new_const(a, 'int8_t')}, {src.new_const(b2, 'int32_t')}, "
            f"&xc, &rq, {src.ptr(y)}, {ydt}, scratch)"]


def gemm(src: Source, node) -> None:
    a = node.attrs
    x, w, b, y = node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0]
    xs = src.shape(x)
    k = xs[-1]
    m = int(np.prod(xs[:-1], dtype=np.int64))
    wshape = src.shape(w)
    if len(wshape) != 2 or wshape[1] != k:
        raise unsupported(node, f"weight shape {wshape} for K = {k}")
    nout = wshape[0]
    bias = np.asarray(src.array(b)).astype(np.int32).reshape(-1)
    if bias.size != nout:
        raise unsupported(node, f"{bias.size} bias entries for {nout} outputs")
    float_out = a.get("output") == "float"
    ydt = "QC_F32" if float_out else _dt(src, y, node)
    rq = src.requant(node, node.inputs[3:], int(a.get("y_zero_point", 0)), int(a.get("qmin", 0)),
                     int(a.get("qmax", 0)))
    src.emit(f"Gemm {node.name}: {m} x {k} -> {nout}",
             f"static const qc_rq rq = {rq};",
             f"qc_gemm({src.ptr(x)}, {_dt(src, x, node)}, {int(a.get('a_zero_point', 0))}, "
             f"{src.const(w, np.asarray(src.array(w), np.int8), 'int8_t')}, {src.const(b, bias, 'int32_t')}, "
             f"{m}, {nout}, {k}, &rq, {src.ptr(y)}, {ydt});")


def requant(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    if any(np.asarray(src.array(q)).size != 1 for q in node.inputs[1:]):
        raise unsupported(node, "per-channel constants")
    rq = src.requant(node, node.inputs[1:], int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"]))
    src.emit(f"Requant {node.name}",
             f"static const qc_rq rq = {rq};",
             f"qc_requant({src.ptr(x)}, {_dt(src, x, node)}, {int(a.get('x_zero_point', 0))}, {src.size(y)}, &rq, "
             f"{src.ptr(y)}, {_dt(src, y, node)});")


def _scalar(src: Source, name: str):
    return np.asarray(src.array(name)).reshape(-1)[0]


def add(src: Source, node) -> None:
    a = node.attrs
    x, z, y = node.inputs[0], node.inputs[1], node.outputs[0]
    zy, qmin, qmax = int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"])
    za, zb = int(a.get("a_zero_point", 0)), int(a.get("b_zero_point", 0))
    if src.prog.requant == "float_scale":
        fa, fb = _scalar(src, node.inputs[2]), _scalar(src, node.inputs[3])
        p = (f"{{{za}, {zb}, 0, 0, 0, 0, 0, {flit(fa)}, {flit(fb)}, "
             f"{{QC_RQ_FLOAT, NULL, NULL, NULL, NULL, 0, 0, {zy}, {qmin}, {qmax}}}}}")
    else:
        ma, sa, mb, sb = (int(_scalar(src, q)) for q in node.inputs[2:6])
        rq = src.requant(node, node.inputs[6:8], zy, qmin, qmax)
        p = f"{{{za}, {zb}, {int(a.get('left_shift', 20))}, {ma}, {sa}, {mb}, {sb}, 0.0f, 0.0f, {rq}}}"
    src.emit(f"Add {node.name}",
             f"static const qc_bcast bc = {src.bcast(y, src.shape(x), src.shape(z), node)};",
             f"static const qc_add_p p = {p};",
             f"qc_add({src.ptr(x)}, {_dt(src, x, node)}, {src.ptr(z)}, {_dt(src, z, node)}, &bc, &p, {src.ptr(y)}, "
             f"{_dt(src, y, node)});")


def mul(src: Source, node) -> None:
    a = node.attrs
    x, z, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if any(np.asarray(src.array(q)).size != 1 for q in node.inputs[2:]):
        raise unsupported(node, "per-channel constants")
    rq = src.requant(node, node.inputs[2:], int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"]))
    src.emit(f"Mul {node.name}",
             f"static const qc_bcast bc = {src.bcast(y, src.shape(x), src.shape(z), node)};",
             f"static const qc_rq rq = {rq};",
             f"qc_mul({src.ptr(x)}, {_dt(src, x, node)}, {int(a.get('a_zero_point', 0))}, {src.ptr(z)}, "
             f"{_dt(src, z, node)}, {int(a.get('b_zero_point', 0))}, &bc, &rq, {src.ptr(y)}, {_dt(src, y, node)});")


def concat(src: Source, node, axis: int = None) -> None:
    """Concat kernel (axis in the layout's physical terms) and ONNX Concat (plain)."""
    y = node.outputs[0]
    ys = src.shape(y)
    if axis is None:
        axis = ref._phys_axis(node.attrs.get("layout", "NCHW"), int(node.attrs["axis"]), len(ys))
    axis = axis + len(ys) if axis < 0 else axis
    esize = np.dtype(src.dtype(y)).itemsize
    outer = int(np.prod(ys[:axis], dtype=np.int64))
    row = int(np.prod(ys[axis:], dtype=np.int64)) * esize
    stmts, at = [], 0
    for i in node.inputs:
        if not i:
            continue
        if src.dtype(i) != src.dtype(y):
            raise unsupported(node, "inputs of different types")
        chunk = int(np.prod(src.shape(i)[axis:], dtype=np.int64)) * esize
        if chunk:
            stmts.append(f"qc_concat_part({src.ptr(i)}, {src.ptr(y)}, {outer}, {chunk}, {row}, {at});")
        at += chunk
    if at != row:
        raise unsupported(node, "inputs that do not fill the output")
    src.emit(f"Concat {node.name} (axis {axis})", *stmts)


def maxpool(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    layout = a.get("layout", "NCHW")
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pt, pl = a.get("pads", [0, 0, 0, 0])[:2]
    src.emit(f"MaxPool {node.name}",
             f"static const qc_plane xi = {src.plane(x, layout)}, yo = {src.plane(y, layout)};",
             f"qc_maxpool({src.ptr(x)}, {_dt(src, x, node)}, &xi, {src.ptr(y)}, &yo, {kh}, {kw}, {sh}, {sw}, "
             f"{dh}, {dw}, {pt}, {pl});")


def _pool_rq(src: Source, node, counts: np.ndarray) -> str:
    """The requantization of an average: M = scale_ratio / n for each window size n,
    derived exactly as the interpreter's _pool_requant does."""
    a = node.attrs
    ratio = float(np.asarray(src.array(node.inputs[1]), dtype=np.float64).reshape(-1)[0])
    zy, qmin, qmax = int(a.get("y_zero_point", 0)), int(a["qmin"]), int(a["qmax"])
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    if src.prog.requant == "float_scale":
        return src.requant_table(scale=np.float32(ratio) / counts.astype(np.float32), zp=zy, qmin=qmin, qmax=qmax)
    mult, shift = quantize_multiplier(ratio / counts.astype(np.float64))
    return src.requant_table(mult=mult, shift=shift, zp=zy, qmin=qmin, qmax=qmax)


def avgpool(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    layout = a.get("layout", "NCHW")
    _, geo = ref._pool_windows(np.zeros(src.shape(x), np.int32), a, layout, 0)
    counts = ref._window_counts(geo, bool(a.get("count_include_pad", 0)))
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    dh, dw = a.get("dilations", [1, 1])
    pt, pl = a.get("pads", [0, 0, 0, 0])[:2]
    src.emit(f"AveragePool {node.name}",
             f"static const qc_plane xi = {src.plane(x, layout)}, yo = {src.plane(y, layout)};",
             f"static const qc_rq rq = {_pool_rq(src, node, counts)};",
             f"qc_avgpool({src.ptr(x)}, {_dt(src, x, node)}, {int(a.get('x_zero_point', 0))}, &xi, {src.ptr(y)}, "
             f"{_dt(src, y, node)}, &yo, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {pt}, {pl}, &rq);")


def global_avgpool(src: Source, node) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    layout = a.get("layout", "NCHW")
    _, h, w, _, _ = src.spatial(x, layout)
    rq = _pool_rq(src, node, np.asarray([h * w]))
    src.emit(f"GlobalAveragePool {node.name}",
             f"static const qc_plane xi = {src.plane(x, layout)}, yo = {src.plane(y, layout)};",
             f"static const qc_rq rq = {rq};",
             f"qc_global_avgpool({src.ptr(x)}, {_dt(src, x, node)}, {int(a.get('x_zero_point', 0))}, &xi, "
             f"{src.ptr(y)}, {_dt(src, y, node)}, &yo, &rq);")


def resize(src: Source, node, layout: str = None, scales=None, sizes=None) -> None:
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    layout = layout or a.get("layout", "NCHW")
    _, h, w, _, _ = src.spatial(x, layout)
    _, ho, wo, _, _ = src.spatial(y, layout)
    scales = scales if scales is not None else a.get("scales")
    sizes = sizes if sizes is not None else a.get("sizes")
    idx = []
    for i, (n_in, n_out_traced) in enumerate(((h, ho), (w, wo))):
        if sizes:
            n_out = int(sizes[i])
            scale = n_out / n_in
        else:
            scale = float(scales[i])
            n_out = int(math.floor(n_in * scale))
        if n_out != n_out_traced:
            raise unsupported(node, "output size differs from the traced shape")
        idx.append(ref.nearest_indices(n_in, n_out, scale, a.get("coordinate_transformation_mode", "half_pixel"),
                                       a.get("nearest_mode", "round_prefer_floor")).astype(np.int32))
    esize = np.dtype(src.dtype(x)).itemsize
    if esize not in (1, 4):
        raise unsupported(node, f"tensor type {src.dtype(x)}")
    src.emit(f"Resize {node.name} (nearest)",
             f"static const qc_plane xi = {src.plane(x, layout)}, yo = {src.plane(y, layout)};",
             f"qc_resize_nearest({src.ptr(x)}, {src.ptr(y)}, {esize}, &xi, &yo, {src.new_const(idx[0], 'int32_t')}, "
             f"{src.new_const(idx[1], 'int32_t')});")


def lut(src: Source, node) -> None:
    x, t, y = node.inputs[0], node.inputs[1], node.outputs[0]
    table = np.asarray(src.array(t))
    if table.size != 256 or table.dtype.itemsize != 1:
        raise unsupported(node, f"a table of {table.size} {table.dtype} entries")
    src.emit(f"Lut {node.name} ({node.attrs.get('function', '?')})",
             f"qc_lut({src.ptr(x)}, {_dt(src, x, node)}, {src.size(y)}, {src.const(t)}, {src.ptr(y)});")


KERNELS = {
    "Quantize": quantize, "Dequantize": dequantize, "LayoutConvert": layout_convert, "Conv": conv, "Gemm": gemm,
    "Requant": requant, "Add": add, "Mul": mul, "Concat": concat, "MaxPool": maxpool, "AveragePool": avgpool,
    "GlobalAveragePool": global_avgpool, "Resize": resize, "Lut": lut,
}

__all__ = ["KERNELS", "ilit"]
