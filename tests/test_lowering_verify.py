"""Lowering regressions found by verifying the real models, and the verify report's
integer outputs and end-to-end tensors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.lowering.interpreter import run_program
from qcompiler.lowering.lower import lower_to_program
from qcompiler.lowering.verify import integer_outputs, ort_session, verify_program

from test_lowering_models import inputs, qdq


class _Q:
    """A hand-written QDQ graph."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def c(self, name, v):
        self.inits.append(numpy_helper.from_array(np.asarray(v), name))
        return name

    def q(self, x, name, s, zp=0):
        self.nodes.append(helper.make_node("QuantizeLinear", [x, self.c(f"{name}_s", np.float32(s)),
                                                              self.c(f"{name}_z", np.int8(zp))], [f"{name}_q"]))
        return f"{name}_q"

    def dq(self, xq, name):
        self.nodes.append(helper.make_node("DequantizeLinear", [xq, f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
        return f"{name}_dq"

    def q_dq(self, x, name, s, zp=0):
        return self.dq(self.q(x, name, s, zp), name)

    def qconst(self, name, q, s):
        self.c(name, np.int8(q))
        self.c(f"{name}_s", np.float32(s))
        self.c(f"{name}_z", np.int8(0))
        return self.dq(name, name)

    def op(self, op, ins, out, **attrs):
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def model(self, x_shape, out, out_shape):
        g = helper.make_graph(self.nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


S_X = 0.09370001  # a depthwise output scale of PP-OCR cls where the tie showed


def _scalar_op_model(op):
    """x -> Q -> DQ -> op(x, scalar constant) [-> Clip(0, 6)] -> Q -> DQ."""
    b = _Q()
    x = b.q_dq("x", "in", S_X)
    if op == "hardswish_add":  # HardSwish's clip(x + 3, 0, 6), output scale 6/127
        y = b.op("Add", [x, b.qconst("three", 127, 3.0 / 127)], "sum")
        y = b.op("Clip", [y, b.c("lo", np.float32(0)), b.c("hi", np.float32(6))], "clip")
        s_y = 6.0 / 127
    else:  # x * 0.5 at the input's scale: every odd x is an exact rounding tie
        y = b.op("Mul", [b.qconst("half", 64, 0.5 / 64), x], "prod")
        s_y = S_X
    out = b.q_dq(y, "out", s_y)
    return b.model([1, 1, 16, 16], out, [1, 1, 16, 16])


@pytest.mark.parametrize("op", ["hardswish_add", "mul_half"])
@pytest.mark.parametrize("target", ["arm64", "arm64-dot", "cuda"])
def test_scalar_constant_operand_is_a_table_exact_on_every_input(op, target):
    """Add / Mul of an int8 tensor and a scalar constant lowers to a Lut computed like the
    QDQ model. The fixed-point Add rounded x = 0 of clip(x + 3, 0, 6) (exactly
    63.50000024 steps) to 63 instead of 64, on 1-7 % of the elements of the HardSwish layers
    of PP-OCR; the Mul kernel rounds x * 0.5's exact ties up where QuantizeLinear rounds
    them to even."""
    m = _scalar_op_model(op)
    prog = lower_to_program(m, target)
    luts = [n for n in prog.nodes if n.op == "Lut"]
    assert [n.attrs["function"] for n in luts] == ["Add" if op == "hardswish_add" else "Mul"], prog.op_counts()
    assert not any(n.op in ("Add", "Mul") and n.is_kernel for n in prog.nodes)
    x = (np.arange(-128, 128, dtype=np.float32) * np.float32(S_X)).reshape(1, 1, 16, 16)
    got = next(iter(run_program(prog, {"x": x}).values()))
    ref = ort_session(m).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, ref)
    rep = verify_program(prog, m, [x], task="none", layerwise=True)
    assert rep.layers and all(t.exact == t.elements for t in rep.layers), rep.format()


def test_vector_constant_operand_keeps_the_add_kernel():
    """A per-channel constant is not a function of one 8-bit value: still an Add kernel."""
    b = _Q()
    x = b.q_dq("x", "in", 0.05)
    b.c("bias", np.arange(-4, 4, dtype=np.int8).reshape(1, 8, 1, 1))
    b.c("bias_s", np.float32(0.1))
    b.c("bias_z", np.int8(0))
    y = b.op("Add", [x, b.dq("bias", "bias")], "sum")
    m = b.model([1, 8, 4, 4], b.q_dq(y, "out", 0.06), [1, 8, 4, 4])
    prog = lower_to_program(m, "arm64")
    assert any(n.op == "Add" and n.is_kernel for n in prog.nodes) and not any(n.op == "Lut" for n in prog.nodes)
    rep = verify_program(prog, m, [np.random.default_rng(0).normal(0, 2, (1, 8, 4, 4)).astype(np.float32)],
                         task="none")
    assert rep.step_share >= 0.999, rep.format()


def test_float_outputs_are_judged_on_the_integer_tensors_behind_them():
    """Softmax after an int8-in, float-out Gemm and Sigmoid after a DQ: the outputs have no
    quantization step; the integer tensors where the float tails start do."""
    rng = np.random.default_rng(1)
    b = _Q()
    x = b.q_dq("x", "in", 0.05)
    b.c("w", rng.integers(-127, 128, size=(16, 5)).astype(np.int8))
    b.c("w_s", np.float32(0.01))
    b.c("w_z", np.int8(0))
    y = b.op("MatMul", [x, b.dq("w", "w")], "logits")
    b.op("Softmax", [y], "probs", axis=-1)
    m = b.model([4, 16], "probs", [4, 5])
    prog = lower_to_program(m, "arm64")
    gemm = next(n for n in prog.nodes if n.op == "Gemm")
    assert gemm.attrs["output"] == "float"
    assert integer_outputs(prog) == [gemm.inputs[0]] == ["in_q"]
    xs = [rng.normal(0, 2, (4, 16)).astype(np.float32) for _ in range(3)]
    rep = verify_program(prog, m, xs)
    assert [t.name for t in rep.int_outputs] == ["in_q"] and rep.int_outputs[0].elements == 3 * 4 * 16
    assert rep.int_outputs[0].exact == rep.int_outputs[0].elements  # a Quantize: bit exact
    assert rep.step_share == 1.0 and rep.ok(), rep.format()
    assert "integer tensor in_q" in rep.format()

    b = _Q()
    b.op("Sigmoid", [b.q_dq("x", "in", 0.1)], "p")
    m = b.model([1, 1, 8, 8], "p", [1, 1, 8, 8])
    prog = lower_to_program(m, "cuda")
    assert integer_outputs(prog) == ["in_q"]
    rep = verify_program(prog, m, [rng.normal(0, 2, (1, 1, 8, 8)).astype(np.float32)], task="probmap")
    assert rep.task == "prob_map" and rep.task_rate == 1.0
    assert rep.step_outputs() == rep.int_outputs


def test_tensorwise_follows_execution_order_and_ends_at_the_output():
    q = qdq("small")
    prog = lower_to_program(q, "arm64")
    rep = verify_program(prog, q, inputs(3), tensorwise=True)
    order = {o: i for i, n in enumerate(prog.nodes) for o in n.outputs}
    names = [t.name for t in rep.tensors]
    assert len(names) >= 8 and names == sorted(names, key=order.get)
    # the output is quantized: its integer form is the last tensor, and agrees with the output
    (last,) = rep.int_outputs
    assert last.name == names[-1]
    assert last.exact == rep.outputs[0].exact and last.elements == rep.outputs[0].elements
    assert rep.to_json()["tensors"][0]["name"] == names[0]


def _float_bias_model(op):
    """Q -> DQ -> Conv / Gemm with a float (unquantized) bias of half accumulator units
    -> Q: every output is an exact rounding tie unless the bias is kept unrounded."""
    rng = np.random.default_rng(2)
    b = _Q()
    x = b.q_dq("x", "in", 0.5)
    if op == "Conv":
        b.c("w", rng.integers(-5, 6, size=(8, 4, 1, 1)).astype(np.int8))
        shape, wshape = [1, 4, 5, 5], [8]
    else:
        b.c("w", rng.integers(-5, 6, size=(8, 4)).astype(np.int8))
        shape, wshape = [3, 4], [8]
    b.c("w_s", np.full(wshape, 0.25, np.float32))
    b.c("w_z", np.zeros(wshape, np.int8))
    b.nodes.append(helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["w_dq"], axis=0))
    bias = b.c("bias", (0.0625 * (2 * np.arange(8) + 1)).astype(np.float32))  # (j + 1/2) * s_x * s_w
    if op == "Conv":
        y = b.op("Conv", [x, "w_dq", bias], "y")
    else:
        y = b.op("Gemm", [x, "w_dq", bias], "y", transB=1)
    out = b.q_dq(y, "out", 0.125)
    return b.model(shape, out, shape[:1] + [8] + shape[2:])


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_float_scale_target_keeps_a_float_bias_unrounded(op):
    """cuda (TensorRT placement) leaves biases float; its float epilogue adds them before
    rounding. Rounding them to int32 first (as the lowering did) moved every output here
    across a tie."""
    m = _float_bias_model(op)
    prog = lower_to_program(m, "cuda")
    k = next(n for n in prog.nodes if n.op == op)
    y_bias = prog.constants[k.inputs[-1]]
    assert k.inputs[-1].endswith(".y_bias") and y_bias.dtype == np.float32
    np.testing.assert_array_equal(y_bias[:8], 0.5 * (2 * np.arange(8) + 1))
    assert not np.any(prog.constants[k.inputs[2]])  # int32 bias: only the (zero) zero-point term
    rng = np.random.default_rng(3)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    xs = [(rng.integers(-20, 21, size=shape) * 0.5).astype(np.float32) for _ in range(3)]
    for x in xs:
        np.testing.assert_array_equal(next(iter(run_program(prog, {"x": x}).values())),
                                      ort_session(m).run(None, {"x": x})[0])
    # a fixed-point target has no float epilogue: the bias is rounded to int32 there
    k = next(n for n in lower_to_program(m, "arm64").nodes if n.op == op)
    assert not k.inputs[-1].endswith(".y_bias")


def test_argmax_flips_report_the_reference_margin():
    """A flip is listed with the reference's top-1 minus top-2, in output steps."""
    def model(scale):
        b = _Q()
        return b.model([2, 3], b.q_dq("x", "in", scale), [2, 3])

    prog = lower_to_program(model(1.0), "arm64")  # coarse: 0.2, 0.4, 0.1 all quantize to 0
    x = np.array([[0.2, 0.4, 0.1], [3.0, 1.0, 0.0]], np.float32)
    rep = verify_program(prog, model(0.01), [x])
    assert rep.task == "argmax" and rep.task_agree == 1 and rep.task_total == 2
    (flip,) = rep.task_flips
    assert (flip["sample"], flip["row"], flip["in_steps"]) == (0, 0, True)
    assert flip["reference_margin"] == pytest.approx(0.2, abs=1e-6)  # (0.4 - 0.2) / step 1.0
    assert "argmax differs on 1 row(s)" in rep.format() and rep.to_json()["task_flips"] == [flip]


def test_integer_outputs_pass_through_integer_data_movement():
    """An int8 Flatten result is named after the QDQ model's float Flatten output: the
    comparison must go back to a tensor that holds the same integers in both."""
    b = _Q()
    flat = b.op("Flatten", [b.q_dq("x", "in", 0.1)], "flat", axis=1)
    b.op("Sigmoid", [b.q_dq(flat, "fq", 0.1)], "p")
    m = b.model([2, 3, 2, 2], "p", [2, 12])
    prog = lower_to_program(m, "arm64")
    assert "flat" in prog.tensors and prog.tensors["flat"].dtype == "int8"
    assert integer_outputs(prog) == ["flat"]
    assert integer_outputs(prog, {"in_q", "fq_q"}) == ["in_q"]
    rep = verify_program(prog, m, [np.random.default_rng(4).normal(0, 3, (2, 3, 2, 2)).astype(np.float32)],
                         task="none")
    assert [t.name for t in rep.int_outputs] == ["in_q"]
    assert rep.int_outputs[0].exact == rep.int_outputs[0].elements == 24, rep.format()
