"""Pre-quantized models: ONNX Runtime's quantize_static output (QDQ) imported with its
scales and re-targeted without calibration; QOperator and dynamic forms recognised."""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompiler.formats.qdq_import import detect_form
from qcompiler.pipeline.modes import prepare_build
from qcompiler.driver.build import build
from qcompiler.errors import QCompilerError
from qcompiler.analysis.report import sqnr_db
from qcompiler.target import load_target

from conftest import ort_session

ort_quant = pytest.importorskip("onnxruntime.quantization")


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """conv-relu, strided conv-relu, 1x1 conv + residual Add-relu, conv (the output)."""
    rng = np.random.default_rng(seed)

    def w(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32),
                                       name)

    def b(name, n):
        return numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), name)

    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"), n("Relu", ["c1"], ["r1"], name="relu1"),
             n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             n("Relu", ["c2"], ["r2"], name="relu2"), n("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
             n("Add", ["c3", "r2"], ["a"], name="add"), n("Relu", ["a"], ["r3"], name="relu3"),
             n("Conv", ["r3", "w4", "b4"], ["y"], pads=[1, 1, 1, 1], name="conv4")]
    inits = [w("w1", (8, 3, 3, 3)), b("b1", 8), w("w2", (16, 8, 3, 3)), b("b2", 16), w("w3", (16, 16, 1, 1)),
             b("b3", 16), w("w4", (16, 16, 3, 3)), b("b4", 16)]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def net():
    return conv_net()


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]


@pytest.fixture(scope="module")
def held():
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]


def ort_quantize(net, batches, fmt="QDQ", activation="QInt8", extra=None) -> onnx.ModelProto:
    class Reader(ort_quant.CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        src, dst = str(Path(d) / "m.onnx"), str(Path(d) / "q.onnx")
        onnx.save(net, src)
        ort_quant.quantize_static(src, dst, Reader(), quant_format=getattr(ort_quant.QuantFormat, fmt),
                                  activation_type=getattr(ort_quant.QuantType, activation),
                                  weight_type=ort_quant.QuantType.QInt8, per_channel=True, extra_options=extra or {})
        return onnx.load(dst)


def _run(model, feeds_list):
    s = ort_session(model)  # no optimizations: the reference Q/DQ semantics
    return np.concatenate([s.run(None, f)[0] for f in feeds_list])


def _import(model, target="arm64", **options):
    names, opts = prepare_build(model, load_target(target).pipeline, options)
    assert names[:2] == ["canonicalize", "import-qdq"]
    return build(model, target=target, pipeline=names, options=opts)  # no calibration data


@pytest.fixture(scope="module")
def s8s8(net, batches):
    return ort_quantize(net, batches, extra={"ActivationSymmetric": True, "WeightSymmetric": True})


def test_s8s8_import_to_arm64_matches_its_own_qdq_semantics(s8s8, held):
    r = _import(s8s8)
    rep = r.report["import"]
    assert rep["form"] == "qdq" and rep["warnings"] == []
    assert rep["kernels"] == 5 and rep["weights_kept_exactly"] == 4
    assert r.report["pipeline"][-1] == "lower-layout"  # the rest of arm64's pipeline ran
    onnx.checker.check_model(r.model)
    theirs, ours = _run(s8s8, held), _run(r.model, held)
    out_dq = next(n for n in s8s8.graph.node if n.output[0] == "y")
    step = float(numpy_helper.to_array(next(i for i in s8s8.graph.initializer if i.name == out_dq.input[1])))
    assert np.abs(theirs - ours).max() <= step * (1 + 1e-5)
    # the integer weights are the imported ones
    by = {k: v["by"] for k, v in r.ir.ann.notes["weight_codes"].items()}
    assert set(by.values()) == {"imported"} and len(by) == 4


def test_u8_asymmetric_import_is_retargeted_to_s8_symmetric(net, batches, held):
    u8 = ort_quantize(net, batches, activation="QUInt8")  # ORT's x86 default; Relus become Q ranges
    r = _import(u8, target="arm64-sym")  # zero-point-free int8 kernels
    rep = r.report["import"]
    assert any("uint8 asymmetric" in w and "re-derived" in w for w in rep["warnings"])
    assert rep["relu_made_explicit"] >= 1
    types = {i.name: i.data_type for i in r.model.graph.initializer}
    assert {types[n.input[2]] for n in r.model.graph.node if n.op_type == "QuantizeLinear"} == {TensorProto.INT8}
    ref = _run(net, held)
    assert sqnr_db(ref, _run(r.model, held)) > sqnr_db(ref, _run(u8, held)) - 2.0
    with pytest.raises(QCompilerError, match="re-derived"):
        _import(u8, import_strict=True)
    # x86 wants u8 asymmetric activations: kept as they are
    rx = _import(u8, target="x86")
    assert not any("activation" in w for w in rx.report["import"]["warnings"])
    np.testing.assert_allclose(_run(rx.model, held), _run(u8, held), atol=1e-5)


def test_other_forms_are_recognised(net, batches):
    qop = ort_quantize(net, batches, fmt="QOperator", activation="QUInt8")
    assert detect_form(qop).form == "qoperator"
    with pytest.raises(QCompilerError, match="QOperator form .*QLinearConv"):
        _import(qop)
    with tempfile.TemporaryDirectory() as d:
        onnx.save(net, str(Path(d) / "m.onnx"))
        ort_quant.quantize_dynamic(str(Path(d) / "m.onnx"), str(Path(d) / "q.onnx"),
                                   weight_type=ort_quant.QuantType.QUInt8)
        dyn = onnx.load(str(Path(d) / "q.onnx"))
    form = detect_form(dyn)
    assert form.form == "integer" and "dynamically quantized" in form.message
    with pytest.raises(QCompilerError, match="dynamically quantized"):
        prepare_build(dyn, load_target("arm64").pipeline, {})
    assert prepare_build(net, load_target("arm64").pipeline, {})[1]["mode"] == "static"
    with pytest.raises(QCompilerError, match="no quantization nodes"):
        build(net, target="arm64", pipeline=["canonicalize", "import-qdq", "place-qdq"])


def test_qformat_and_dtypes_commands(s8s8, tmp_path):
    import click
    from click.testing import CliRunner

    from qcompiler.cli.formats import build_options, build_options_to_dict, register

    @click.group()
    def cli():
        pass

    register(cli)
    p = tmp_path / "q.onnx"
    onnx.save(s8s8, str(p))
    res = CliRunner().invoke(cli, ["qformat", str(p)])
    assert res.exit_code == 0 and "form: qdq" in res.output and "--mode import" in res.output
    res = CliRunner().invoke(cli, ["dtypes", "--target", "arm64"])
    assert res.exit_code == 0 and "int4" in res.output and "int16" in res.output

    @click.command()
    @build_options
    def fake(**kw):
        click.echo(repr(sorted(build_options_to_dict(**kw).items())))

    res = CliRunner().invoke(fake, ["--mode", "import", "--weight-dtype", "int4", "--adaround", "--adaround-seconds",
                                    "30", "--layer-dtypes", '{"conv1": {"activation": "int16"}}'])
    assert res.exit_code == 0, res.output
    assert "('adaround_seconds', 30.0)" in res.output and "'layer_dtypes'" in res.output


def test_s8s8_import_lowered_to_an_arm64_program_matches_its_own_qdq_semantics(s8s8, held):
    """Issue 6's criterion end to end: ONNX Runtime's QDQ model, imported without calibration,
    lowered to the arm64 integer program (NCHW44, fixed-point requantization) and run by the
    reference interpreter, agrees with ONNX Runtime running that same QDQ model."""
    from qcompiler.lowering.interpreter import run_program
    from qcompiler.lowering.lower import lower_to_program

    r = _import(s8s8)
    prog = lower_to_program(r.ir, "arm64")
    ours = np.concatenate([next(iter(run_program(prog, f).values())) for f in held])
    theirs = _run(s8s8, held)
    out_dq = next(n for n in s8s8.graph.node if n.output[0] == "y")
    step = float(numpy_helper.to_array(next(i for i in s8s8.graph.initializer if i.name == out_dq.input[1])))
    steps = np.abs(theirs - ours) / step
    assert steps.max() <= 1 + 1e-5, steps.max()
    assert np.mean(steps < 0.5) >= 0.99  # almost every element is the same integer
