"""Program contents and file format: requant constants, save/load round trip, errors."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qcompiler.errors import ModelError, UsageError
from qcompiler.lowering.fixed_point import multiplier_to_float
from qcompiler.lowering.interpreter import run_program
from qcompiler.lowering.lower import lower_to_program
from qcompiler.lowering.program import DOMAIN, FORMAT, load_program, program_to_onnx, save_program

from test_lowering_models import inputs, qdq


def _weight_scales(model):
    """ONNX Conv node name -> per-channel weight scales (through the weight's DequantizeLinear)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            out[n.name] = inits[dq[n.input[1]].input[1]].astype(np.float64)
    return out


@pytest.mark.parametrize("target", ["arm64", "arm64-dot"])
def test_requant_constants_match_m(target):
    q = qdq("mixed")
    prog = lower_to_program(q, target)
    assert prog.requant == "fixed_point"
    scales = _weight_scales(q)
    checked = 0
    for n in prog.nodes:
        if n.op != "Conv":
            continue
        s_x = prog.tensors[n.inputs[0]].scale
        s_y = prog.tensors[n.outputs[0]].scale
        s_w = np.broadcast_to(scales[n.name], (n.attrs["out_channels"],))
        m = np.float64(s_x) * s_w / np.float64(s_y)
        q31 = prog.constants[n.inputs[3]][: len(m)]
        shift = prog.constants[n.inputs[4]][: len(m)]
        assert q31.dtype == np.int32 and shift.dtype == np.int32
        got = multiplier_to_float(q31, shift)
        assert np.all(np.abs(got - m) <= m * 2.0 ** -31)
        assert np.all((q31 >= 2 ** 30) | (q31 == 0))
        # padded output channels requantize to nothing
        assert np.all(prog.constants[n.inputs[3]][len(m):] == 0)
        checked += 1
    assert checked == 9
    # Add: each input rescaled to 2 * max(s_a, s_b), the sum to the output scale
    add = next(n for n in prog.nodes if n.op == "Add")
    ls = add.attrs["left_shift"]
    ma = multiplier_to_float(prog.constants[add.inputs[2]], prog.constants[add.inputs[3]])
    mb = multiplier_to_float(prog.constants[add.inputs[4]], prog.constants[add.inputs[5]])
    my = multiplier_to_float(prog.constants[add.inputs[6]], prog.constants[add.inputs[7]])
    sa, sb = prog.tensors[add.inputs[0]].scale, prog.tensors[add.inputs[1]].scale
    sy = prog.tensors[add.outputs[0]].scale
    twice = 2 * max(sa, sb)
    for got, want in ((ma, sa / twice), (mb, sb / twice), (my, twice / (2 ** ls * sy))):
        assert abs(got - want) <= want * 2.0 ** -31


def _hand_qdq():
    """x -> Q(u8, zp 10) -> DQ -> Conv(+int32 bias) -> Relu -> Q(zp 3) -> DQ -> Conv -> Clip(0, 6)
    -> Q(zp 5) -> DQ: the fused form our own quantizer writes (no Q between conv and act)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def c(name, v):
        inits.append(numpy_helper.from_array(np.asarray(v), name))
        return name

    def q_dq(x, name, s, zp):
        nodes.append(helper.make_node("QuantizeLinear", [x, c(f"{name}_s", np.float32(s)),
                                                         c(f"{name}_z", np.uint8(zp))], [f"{name}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"]))
        return f"{name}_dq"

    def conv(x, name, cin, cout, s_x):
        w = rng.integers(-127, 128, size=(cout, cin, 3, 3)).astype(np.int8)
        s_w = (rng.uniform(0.5, 1.5, cout) * 0.01).astype(np.float32)
        nodes.append(helper.make_node("DequantizeLinear", [c(f"{name}_w", w), c(f"{name}_ws", s_w),
                                                           c(f"{name}_wz", np.zeros(cout, np.int8))],
                                      [f"{name}_wdq"], axis=0))
        b = rng.integers(-2000, 2000, size=cout).astype(np.int32)
        bs = (np.float32(s_x) * s_w).astype(np.float32)
        nodes.append(helper.make_node("DequantizeLinear", [c(f"{name}_b", b), c(f"{name}_bs", bs),
                                                           c(f"{name}_bz", np.zeros(cout, np.int32))],
                                      [f"{name}_bdq"], axis=0))
        nodes.append(helper.make_node("Conv", [x, f"{name}_wdq", f"{name}_bdq"], [f"{name}_y"], pads=[1, 1, 1, 1]))
        return f"{name}_y"

    x = q_dq("x", "in", 0.05, 10)
    y = conv(x, "c1", 4, 8, 0.05)
    nodes.append(helper.make_node("Relu", [y], ["r1"]))
    y = q_dq("r1", "a1", 0.04, 3)
    y = conv(y, "c2", 8, 6, 0.04)
    nodes.append(helper.make_node("Clip", [y, c("lo", np.float32(0)), c("hi", np.float32(6))], ["r2"]))
    y = q_dq("r2", "a2", 0.03, 5)
    g = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 6, 6, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("target", ["x86", "arm64", "cuda"])
def test_conv_bias_folds_zero_points_and_clamp_absorbs_relu(target):
    from qcompiler.lowering.verify import verify_program

    m = _hand_qdq()
    prog = lower_to_program(m, target)
    convs = [n for n in prog.nodes if n.op == "Conv"]
    assert [n.attrs["activation"] for n in convs] == ["relu", "clip(0.0, 6.0)"]
    assert [n.attrs["x_zero_point"] for n in convs] == [10, 3]
    assert (convs[0].attrs["qmin"], convs[0].attrs["qmax"]) == (3, 255)  # Relu: clamp at the zero point
    assert (convs[1].attrs["qmin"], convs[1].attrs["qmax"]) == (5, 205)  # Clip(0, 6): Q(0)=5, Q(6)=205
    assert not any(n.op in ("Relu", "Clip", "Lut") for n in prog.nodes)
    # int32 bias with the zero-point term folded in: b - zp_x * sum(w)
    w = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "c1_w")).astype(np.int64)
    b = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "c1_b")).astype(np.int64)
    np.testing.assert_array_equal(prog.constants[convs[0].inputs[2]][:8], b - 10 * w.reshape(8, -1).sum(1))
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-0.5, 12, size=(1, 4, 6, 6)).astype(np.float32) for _ in range(4)]
    rep = verify_program(prog, m, xs, task="none")
    assert rep.within_one_share >= 0.999, rep.format()


def test_save_load_round_trip(tmp_path):
    q = qdq("mixed")
    prog = lower_to_program(q, "arm64")
    path = tmp_path / "model.program.onnx"
    save_program(prog, path)
    assert sorted(os.listdir(tmp_path)) == ["model.program.onnx"]  # atomic: no temporary left
    back = load_program(path)
    assert (back.target, back.rounding, back.requant) == ("arm64", "single_rounding", "fixed_point")
    assert [(n.op, n.name, n.inputs, n.outputs, n.domain) for n in back.nodes] == \
        [(n.op, n.name, n.inputs, n.outputs, n.domain) for n in prog.nodes]
    for a, b in zip(prog.nodes, back.nodes):
        for k, v in a.attrs.items():
            w = b.attrs[k]
            if isinstance(v, float):
                assert np.float32(v) == np.float32(w), (a.name, k)
            else:
                assert list(v) == list(w) if isinstance(v, (list, tuple)) else v == w, (a.name, k)
    assert back.tensors == prog.tensors
    assert set(back.constants) == set(prog.constants)
    for k, v in prog.constants.items():
        assert back.constants[k].dtype == v.dtype
        np.testing.assert_array_equal(back.constants[k], v)
    assert back.plan == prog.plan
    for x in inputs(2):
        a, b = run_program(prog, {"input": x}), run_program(back, {"input": x})
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_file_opens_as_onnx(tmp_path):
    prog = lower_to_program(qdq("small"), "arm64")
    model = program_to_onnx(prog)
    onnx.checker.check_model(model)  # custom-domain kernels are not checked against schemas
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["qcompiler.format"] == FORMAT and meta["qcompiler.target"] == "arm64"
    assert meta["qcompiler.rounding"] == "single_rounding" and meta["qcompiler.requant"] == "fixed_point"
    assert any(n.domain == DOMAIN and n.op_type == "Conv" for n in model.graph.node)
    docs = {vi.name: vi.doc_string for vi in model.graph.value_info}
    assert any("layout=NCHW44" in d for d in docs.values())
    packed = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert len(packed[conv.input[1]].dims) in (5, 6)  # a packed weight


def test_errors(tmp_path):
    prog = lower_to_program(qdq("small"), "arm64")
    with pytest.raises(UsageError, match="needs input 'input'"):
        run_program(prog, {})
    with pytest.raises(UsageError, match="no input 'other'"):
        run_program(prog, {"input": inputs(1)[0], "other": np.zeros(1)})
    with pytest.raises(ModelError, match=r"failed: .*"):
        run_program(prog, {"input": np.zeros((1, 5, 16, 16), np.float32)})
    plain = tmp_path / "plain.onnx"
    onnx.save(qdq("small"), plain)
    with pytest.raises(ModelError, match="not a qcompiler program"):
        load_program(plain)
    with pytest.raises(ModelError, match="does not exist"):
        load_program(tmp_path / "missing.onnx")


def test_unknown_op_is_a_clear_error():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="Hardmax"):
        lower_to_program(m, "arm64")


def test_cli_entry_points(tmp_path):
    """What `qcompiler build --emit program`, `qcompiler run` and `qcompiler verify` call."""
    from qcompiler.driver.build import build
    from qcompiler.ir.io import save_model
    from qcompiler.lowering.lower import program_exporter
    from qcompiler.lowering.verify import verify_files
    from qcompiler.program_files import run_to_file
    from test_lowering_models import small_net

    data = inputs(8, seed=50)
    calib = lambda: iter({"input": x} for x in data)  # noqa: E731
    qdq_res = build(small_net(), target="arm64", calib=calib)
    save_model(qdq_res.model, tmp_path / "m.qdq.onnx")
    res = build(small_net(), target="arm64", calib=calib, options={"emit": "program", "exporter": program_exporter})
    assert res.report["program"]["conv_layouts"] == {"NCHW44": 3}
    decisions = res.report["program"]["conv_decisions"]
    assert len(decisions) == 3 and all(v.startswith("NCHW44 (") for v in decisions.values())
    assert any("IC=3: first-layer NCHW44 packing" in v for v in decisions.values())
    save_model(res.model, tmp_path / "m.program.onnx")
    d = tmp_path / "d"
    d.mkdir()
    for i, x in enumerate(inputs(4, seed=9)):
        np.save(d / f"x{i}.npy", x)
    outs = run_to_file(tmp_path / "m.program.onnx", d / "x0.npy", tmp_path / "y.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), next(iter(outs.values())))
    run_to_file(tmp_path / "m.program.onnx", d / "x0.npy", tmp_path / "y.npz")
    assert list(np.load(tmp_path / "y.npz").keys()) == list(outs)
    rep = verify_files(tmp_path / "m.program.onnx", tmp_path / "m.qdq.onnx", d)
    assert rep.samples == 4 and rep.ok(), rep.format()
    with pytest.raises(UsageError, match="one input file"):
        run_to_file(tmp_path / "m.program.onnx", d, tmp_path / "z.npy")
    with pytest.raises(UsageError, match=r"\.npy or \.npz"):
        run_to_file(tmp_path / "m.program.onnx", d / "x0.npy", tmp_path / "z.txt")
