"""Recognition: walk the QDQ graph in order and turn every `DQ -> op -> [Relu|Clip] -> Q`
group into one integer kernel (the op's lowering in conv, elementwise, pooling or
movement); a `DQ -> Q` pair becomes a Requant or nothing; constants fold; everything
else stays a float op with Dequantize / Quantize at its boundary (float_islands).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ...errors import ModelError
from ..float_ops import FLOAT_OPS, run_float_op
from ..integers import dtype_range
from .conv import lower_conv, lower_gemm, lower_matmul
from .elementwise import lower_add, lower_lut, lower_mul
from .float_islands import float_node, materialize_float
from .movement import lower_concat, lower_move, lower_resize
from .pooling import lower_avgpool, lower_gap, lower_maxpool
from .state import INT_DTYPES, Val, attrs_of, q_of

__all__ = ["recognise"]

# unary elementwise ops that become a 256-entry lookup table on int8 / uint8 inputs
LUT_OPS = frozenset({"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu",
                     "Softplus", "Exp", "Abs", "Neg", "Erf", "Sqrt", "Log", "Reciprocal"})
# integer data movement: the same op runs on the int8 tensor (NCHW), then a requant if needed
MOVE_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice",
                      "DepthToSpace", "Dropout"})
# op -> lowering(lw, node, inputs, tail) -> bool (False: the op stays float)
HANDLERS = {
    "Conv": lower_conv, "Gemm": lower_gemm, "MatMul": lower_matmul,
    "Add": lower_add, "Mul": lower_mul, "Concat": lower_concat,
    "MaxPool": lower_maxpool, "AveragePool": lower_avgpool,
    "GlobalAveragePool": lower_gap, "Resize": lower_resize,
    **{op: lower_lut for op in LUT_OPS}, **{op: lower_move for op in MOVE_OPS},
}


def recognise(lw) -> None:
    g = lw.model.graph
    inits = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name in inits:
            continue
        dt = str(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
        lw.add_tensor(inp.name, dt, lw.shape(inp.name))
        lw.prog.inputs.append(inp.name)
        if dt in INT_DTYPES:
            lw.vals[inp.name] = Val("int", pt=inp.name, dtype=dt, onnx_name=inp.name)
        else:
            lw.vals[inp.name] = Val("float", pt=inp.name, onnx_name=inp.name)
    for node in lw.nodes:
        if id(node) in lw.consumed:
            continue
        visit(lw, node)
    for name in lw.graph_outputs:
        bind_output(lw, name)


def bind_output(lw, name):
    v = lw.vals.get(name)
    if v is None:
        raise ModelError(f"graph output '{name}' was not lowered", "report this model as a bug")
    if v.kind == "qview":
        pt = materialize_float(lw, v, name)
    elif v.kind == "const":
        pt = materialize_float(lw, v, name + ".const")
    else:
        pt = v.pt
    if pt != name:
        info = lw.prog.tensors[pt]
        if name in lw.prog.tensors:  # the name is taken by an internal tensor; keep it unique
            name = lw.fresh(name)
        lw.add_tensor(name, info.dtype, info.shape, info.scale, info.zero_point)
        lw.emit("Identity", f"{name}.identity", [pt], [name], {}, domain="", act_inputs=[0])
        pt = name
    lw.prog.outputs.append(pt)


def visit(lw, node):
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        raise ModelError(f"node '{node.name}' uses op {node.domain}.{op}, which cannot be lowered",
                         "lower a model in the standard ONNX domain")
    if op == "Constant":
        at = attrs_of(node)
        value = at.get("value")
        if value is None:
            for key in ("value_float", "value_int", "value_floats", "value_ints"):
                if key in at:
                    value = np.asarray(at[key], dtype=np.float32 if "float" in key else np.int64)
        if value is None:
            raise ModelError(f"Constant node '{node.name}' holds no tensor", "re-export the model")
        lw.vals[node.output[0]] = Val("const", value=np.asarray(value), onnx_name=node.output[0])
        return
    ins = [lw.vals.get(i) if i else None for i in node.input]
    for i, v in zip(node.input, ins):
        if i and v is None:
            raise ModelError(f"node '{node.name}' reads '{i}', which is not produced before it",
                             "re-export the model")
    if op == "DequantizeLinear":
        return visit_dq(lw, node, ins)
    if op == "QuantizeLinear":
        return visit_q(lw, node, ins)
    real = [v for v in ins if v is not None]
    if real and all(v.kind == "const" for v in real) and op in FLOAT_OPS:
        outs = run_float_op(op, [None if v is None else v.value for v in ins], op_attrs(lw, node))
        for o, val in zip(node.output, outs):
            lw.vals[o] = Val("const", value=np.asarray(val), onnx_name=o)
        return
    if not try_integer(lw, node, ins):
        float_node(lw, node, ins)


def op_attrs(lw, node):
    at = attrs_of(node)
    if node.op_type == "Split":
        at["_num_outputs"] = len(node.output)
    return at


def visit_dq(lw, node, ins):
    x = ins[0]
    qp = lw.q_params(node)
    out = node.output[0]
    if qp is not None and x.kind == "const":
        scale, zp, axis, _ = qp
        q = np.asarray(x.value)
        if scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            fval = (q.astype(np.int64) - zp.reshape(shape).astype(np.int64)).astype(np.float32) * \
                scale.reshape(shape)
        else:
            fval = (q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale
        lw.vals[out] = Val("const", value=fval, qint=q, qscale=scale, qzp=zp,
                           qaxis=axis if scale.size > 1 else None, onnx_name=out)
        return
    if qp is not None and x.kind == "int" and qp[0].size == 1:
        scale, zp, _, dt = qp
        lw.vals[out] = Val("qview", pt=x.pt, scale=float(scale.reshape(-1)[0]),
                           zp=int(zp.reshape(-1)[0]), dtype=x.dtype, onnx_name=out)
        return
    float_node(lw, node, ins)


def visit_q(lw, node, ins):
    x = ins[0]
    qp = lw.q_params(node)
    out = node.output[0]
    if qp is None or qp[0].size != 1 or qp[3] not in INT_DTYPES:
        return float_node(lw, node, ins)
    scale, zp, _, dt = qp
    s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
    if x.kind == "const":
        lw.vals[out] = Val("const", value=q_of(x.value, s, z, dt), onnx_name=out)
        return
    if x.kind == "qview":
        if lw.same_params(x, s, z, dt):
            lw.vals[out] = Val("int", pt=x.pt, scale=s, zp=z, dtype=dt, onnx_name=out)
        else:
            pt = lw.emit_requant(x, s, z, dt, dtype_range(dt), out)
            lw.vals[out] = Val("int", pt=pt, scale=s, zp=z, dtype=dt, onnx_name=out)
        return
    if x.kind == "int":  # Q of an integer tensor: not a QDQ form we know
        return float_node(lw, node, ins)
    pt = lw.fresh(out)
    lw.add_tensor(pt, dt, lw.shape(out), s, z)
    lw.emit("Quantize", f"{node.name or out}.quantize", [x.pt], [pt],
            {"scale": s, "zero_point": z, "dtype": dt}, cls="agnostic", act_inputs=[0])
    lw.stats["integer_kernels"] += 1
    lw.vals[out] = Val("int", pt=pt, scale=s, zp=z, dtype=dt, onnx_name=out)


def q_tail(lw, node):
    """(Q nodes, activation node or None) when the op's only use is [Relu|Clip] -> Q."""
    if len([o for o in node.output if o]) != 1:
        return None
    out = node.output[0]
    if out in lw.graph_outputs:
        return None
    users = lw.consumers.get(out, [])
    act = None
    if len(users) == 1 and users[0].op_type in ("Relu", "Clip") and node.op_type not in ("Relu", "Clip"):
        act = users[0]
        if act.output[0] in lw.graph_outputs:
            return None
        users = lw.consumers.get(act.output[0], [])
        if act.op_type == "Clip" and lw.clip_bounds(act) is None:
            return None
    if not users or any(u.op_type != "QuantizeLinear" for u in users):
        return None
    params = [lw.q_params(u) for u in users]
    if any(p is None or p[0].size != 1 or p[3] not in INT_DTYPES for p in params):
        return None
    first = params[0]
    for p in params[1:]:
        if not (np.array_equal(p[0], first[0]) and np.array_equal(p[1], first[1]) and p[3] == first[3]):
            return None
    return users, act, (float(first[0].reshape(-1)[0]), int(first[1].reshape(-1)[0]), first[3])


def try_integer(lw, node, ins) -> bool:
    op = node.op_type
    handler = HANDLERS.get(op)
    if handler is None:
        return False
    tail = q_tail(lw, node)
    if tail is None:
        if op not in ("Conv", "Gemm", "MatMul") or len(node.output) != 1:
            return False
        # int8 in, float out: the output is not quantized (TensorRT-style placement)
    ok = handler(lw, node, ins, tail)
    if ok:
        lw.stats["integer_kernels"] += 1
        if tail is not None:
            qs, act, _ = tail
            if act is not None:
                lw.consumed.add(id(act))
            for q in qs:
                lw.consumed.add(id(q))
    return ok
