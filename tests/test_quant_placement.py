"""QDQ placement follows each target's rules, and the quantized models stay close to FP32."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qcompiler.driver.build import build
from fixtures.models import residual_concat_net

from conftest import ort_run, ort_session

QUANT_PIPELINE = ["canonicalize", "fold-bn", "fuse-conv-bias-act", "insert-observers", "calibrate",
                  "unify-concat-scales", "place-qdq", "fold-requant"]


@pytest.fixture(scope="module")
def net():
    return residual_concat_net()


@pytest.fixture(scope="module")
def batches(net):
    name = net.graph.input[0].name
    shape = [d.dim_value or 1 for d in net.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(12)]


def _build(net, batches, target, **options):
    return build(net, target=target, pipeline=QUANT_PIPELINE, calib=lambda: iter(batches), options=options)


def _run(model, feeds, reference=False):
    """reference=True runs the plain QDQ semantics (no fused integer kernels): s8 activations
    in ONNX Runtime's fused x86 kernels saturate on CPUs without VNNI, which says nothing
    about an arm64 or cuda model."""
    return ort_run(model, feeds, optimized=not reference)


def _q_dtypes(model):
    return {n.output[0]: _init_dtype(model, n.input[2]) for n in model.graph.node if n.op_type == "QuantizeLinear"}


def _init_dtype(model, name):
    for init in model.graph.initializer:
        if init.name == name:
            return onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
    return None


@pytest.mark.parametrize("target,dtype", [("x86", np.uint8), ("arm64", np.int8), ("cuda", np.int8)])
def test_activation_dtype_follows_target(net, batches, target, dtype):
    r = _build(net, batches, target)
    onnx.checker.check_model(r.model, full_check=True)
    dtypes = set(_q_dtypes(r.model).values())
    assert dtypes == {np.dtype(dtype)}
    # weights are int8 initializers behind DequantizeLinear, biases int32 where the target says so
    dq_inputs = Counter(str(_init_dtype(r.model, n.input[0])) for n in r.model.graph.node
                        if n.op_type == "DequantizeLinear")
    assert dq_inputs["int8"] >= 11
    if target == "cuda":
        assert dq_inputs["int32"] == 0  # TensorRT keeps biases float
    else:
        assert dq_inputs["int32"] >= 11


def test_outputs_stay_close_to_fp32(net, batches):
    for target in ("x86", "arm64", "cuda"):
        r = _build(net, batches, target)
        ref = _run(net, batches[0])[0]
        out = _run(r.model, batches[0], reference=target != "x86")[0]
        sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
        assert sqnr > 25, (target, sqnr)


def test_no_qdq_inside_fused_regions(net, batches):
    r = _build(net, batches, "x86")
    for region in r.ir.ann.regions.values():
        nodes = [n for n in r.ir.graph.nodes if n.name in region.nodes]
        for n in nodes[:-1]:  # the region's inner edges carry no Q
            assert all(c.op != "QuantizeLinear" for t in n.outputs for c in t.outputs), region


def test_cuda_does_not_quantize_weighted_outputs(net, batches):
    r = _build(net, batches, "cuda")
    plan = r.ir.ann.plan
    tensors = set(plan.tensors)
    consumers = Counter()
    for node in r.ir.graph.nodes:
        for t in node.inputs:
            consumers[t.name] += 1
    weighted_outputs = [k.output for k in plan.kernels if k.op in ("Conv", "Gemm", "MatMul")]
    # a weighted kernel's output is quantized only when some other kernel reads it (TensorRT's rule);
    # the final Gemm's output (a graph output) is never quantized on cuda
    x86 = set(_build(net, batches, "x86").ir.ann.plan.tensors)
    assert net.graph.output[0].name in x86
    assert net.graph.output[0].name not in tensors
    assert len([t for t in weighted_outputs if t in tensors]) < len(weighted_outputs)


def test_cuda_one_qdq_pair_per_consumer(net, batches):
    r = _build(net, batches, "cuda")
    for node in r.model.graph.node:
        if node.op_type == "DequantizeLinear":
            users = [n for n in r.model.graph.node if node.output[0] in n.input]
            assert len(users) <= 1, node.name


def test_concat_inputs_share_one_scale(net, batches):
    r = _build(net, batches, "x86")
    concat = next(n for n in r.ir.graph.nodes if n.op == "Concat")

    def before_qdq(t):  # the float tensor a DQ <- Q pair was placed on
        dq = r.ir.producer(t)
        return r.ir.producer(dq.inputs[0]).inputs[0].name if dq is not None and dq.op == "DequantizeLinear" else t.name

    members = [before_qdq(t) for t in concat.inputs] + [concat.outputs[0].name]
    qps = [r.ir.ann.qparams[m] for m in members if m in r.ir.ann.qparams]
    assert len(qps) == len(members) and all(qp == qps[0] for qp in qps)
    assert r.report["passes"]["unify-concat-scales"]["ops_unified"] == 1


def test_fold_requant_removes_identity_pairs_within_one_step(net, batches):
    """A DQ->Q pair with equal parameters folds away and changes no output bit."""
    r = _build(net, batches, "x86")
    from qcompiler.ir import ir_to_model, load_ir
    from qcompiler.pipeline import Context
    from qcompiler.pipeline.registry import get_pass

    # Re-quantize one DQ output with the same parameters: an identity round trip.
    ir = load_ir(r.model)
    dq = next(n for n in ir.graph.nodes if n.op == "DequantizeLinear" and not ir.is_const(n.inputs[0]))
    scale, zp = dq.inputs[1], dq.inputs[2]

    def roundtrip(src):
        q = ir.add_node("QuantizeLinear", [src, scale, zp], out_dtype=np.uint8)
        d = ir.add_node("DequantizeLinear", [q.outputs[0], scale, zp], out_dtype=np.float32)
        return d.outputs[0]

    ir.insert_on_edge(dq.outputs[0], roundtrip)
    ir.toposort()
    unfolded = ir_to_model(ir)
    ctx = Context(target=r.target)
    changed = get_pass("fold-requant")().run(ir, ctx)
    ir.cleanup()
    ir.toposort()
    ir.verify()
    assert changed and ctx.report["passes"]["fold-requant"]["identity_pairs_removed"] == 1
    folded = ir_to_model(ir)
    assert sum(n.op_type == "QuantizeLinear" for n in folded.graph.node) == \
        sum(n.op_type == "QuantizeLinear" for n in unfolded.graph.node) - 1
    a = _run(unfolded, batches[0])[0]
    b = _run(folded, batches[0])[0]
    np.testing.assert_array_equal(a, b)


def test_qop_matches_qdq_within_one_step(net, batches):
    qdq = _build(net, batches, "x86")
    qop = _build(net, batches, "x86", emit="qop")
    ops = Counter(n.op_type for n in qop.model.graph.node)
    assert ops["QLinearConv"] == 11 and ops["Conv"] == 0
    a = _run(qdq.model, batches[1])[0]
    b = _run(qop.model, batches[1])[0]
    out_scale = float(onnx.numpy_helper.to_array(next(
        i for i in qdq.model.graph.initializer if i.name.endswith("_scale") and
        i.name.startswith(qdq.model.graph.output[0].name))))
    assert np.max(np.abs(a - b)) <= out_scale * 1.001
    # the report counts the integer operators' MACs as INT8, the same total as the QDQ model's
    assert qop.report["macs"]["int8_share"] == 1.0 and qdq.report["macs"]["int8_share"] == 1.0
    assert qop.report["macs"]["total_macs"] == qdq.report["macs"]["total_macs"] > 0
    kept = _build(net, batches, "x86", emit="qop", keep_float=[qdq.report["bitops"]["layers"][0]["name"]])
    assert 0 < kept.report["macs"]["int8_share"] < 1
    assert kept.report["macs"]["total_macs"] == qdq.report["macs"]["total_macs"]


def test_report_lists_float_reasons_and_counts(batches):
    from fixtures.models import conv_bias_add_act

    m = conv_bias_add_act("HardSwish")
    name = m.graph.input[0].name
    shape = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    data = [{name: np.random.default_rng(i).standard_normal(shape).astype(np.float32)} for i in range(4)]
    r = build(m, target="x86", pipeline=QUANT_PIPELINE, calib=lambda: iter(data))
    reasons = r.report["float_reasons"]
    assert any("HardSwish" in v and "x86" in v for v in reasons.values()), reasons
    assert r.report["quantization"]["qdq"]["QuantizeLinear"] >= 1
    assert r.report["size"]["after"] > 0


def _gated_net():
    """Conv-Relu -> squeeze-excite gate (GAP, Conv, HardSigmoid, Mul) -> Conv -> GAP -> Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(0, 0.3, (8, 4, 3, 3))), ("w2", rng.normal(0, 3.0, (8, 8, 1, 1))),
        ("w3", rng.normal(0, 0.5, (3, 8, 1, 1))))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Conv", ["g", "w2"], ["s"]),
             helper.make_node("HardSigmoid", ["s"], ["gate"]),
             helper.make_node("Mul", ["r", "gate"], ["m"]),
             helper.make_node("Conv", ["m", "w3"], ["c3"]),
             helper.make_node("GlobalAveragePool", ["c3"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Softmax", ["f"], ["prob"], axis=1)]
    graph = helper.make_graph(nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("method", ["entropy", "percentile", "mse"])
def test_histogram_methods_keep_gates_and_outputs_whole(method):
    # A gate or a probability near its bound is common, not an outlier: clipping it costs
    # accuracy, so bounded-op outputs and graph outputs keep their observed range.
    model = _gated_net()
    rng = np.random.default_rng(6)
    feeds = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(16)]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([onnx.helper.make_tensor_value_info("gate", onnx.TensorProto.FLOAT, None)])
    sess = ort_session(probe, optimized=True)
    observed = {"prob": 0.0, "gate": 0.0}
    for f in feeds:
        prob, gate = sess.run(None, f)
        observed = {"prob": max(observed["prob"], float(prob.max())), "gate": max(observed["gate"], float(gate.max()))}
    r = _build(model, feeds, "x86", calib_method=method)
    assert r.report["passes"]["calibrate"]["full_range_tensors"] >= 2
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in r.model.graph.initializer}
    tops = {}
    for n in r.model.graph.node:  # the gate's QuantizeLinear; the DequantizeLinear giving the output
        key = n.input[0] if n.op_type == "QuantizeLinear" else n.output[0] if n.op_type == "DequantizeLinear" else None
        if key in observed:
            scale, zp = float(inits[n.input[1]]), int(inits[n.input[2]])
            tops[key] = (255 - zp) * scale
    assert set(tops) == {"prob", "gate"}
    for name, top in tops.items():
        assert top >= observed[name] * (1 - 1e-6), (name, top, observed[name])


def _hardswish_net():
    """Conv -> x * relu6(x + 3) / 6 (a Paddle/PyTorch export's HardSwish) -> Conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.float32(3.0), "three"), numpy_helper.from_array(np.float32(0.0), "lo"),
             numpy_helper.from_array(np.float32(6.0), "six")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "three"], ["c3"]),
             helper.make_node("Clip", ["c3", "lo", "six"], ["r6"]),
             helper.make_node("Mul", ["c", "r6"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["hs"]),
             helper.make_node("Conv", ["hs", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("target", ["x86", "arm64"])
def test_fold_requant_turns_a_scalar_mul_into_a_scale(target):
    # The "/ 6" (a Mul by 1/6 after canonicalize) between two quantized tensors becomes the
    # scale of the tensor before it: one Mul, one DQ and one Q fewer, outputs within one step.
    model = _hardswish_net()
    rng = np.random.default_rng(9)
    feeds = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(8)]
    folded = _build(model, feeds, target)
    unfolded = build(model, target=target, pipeline=QUANT_PIPELINE[:-1], calib=lambda: iter(feeds))
    assert folded.report["passes"]["fold-requant"]["scalar_muls_folded"] == 1
    ops_f = Counter(n.op_type for n in folded.model.graph.node)
    ops_u = Counter(n.op_type for n in unfolded.model.graph.node)
    assert ops_f["Mul"] == ops_u["Mul"] - 1 and ops_f["QuantizeLinear"] == ops_u["QuantizeLinear"] - 1
    onnx.checker.check_model(folded.model, full_check=True)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in folded.model.graph.initializer}
    out_dq = next(n for n in folded.model.graph.node if n.output[0] == "y")
    step = float(inits[out_dq.input[1]])
    for f in feeds[:3]:
        a = _run(unfolded.model, f, reference=True)[0]
        b = _run(folded.model, f, reference=True)[0]
        assert np.max(np.abs(a - b)) <= step * 1.001


def test_fold_requant_folds_one_mul_of_a_chain():
    # conv -> relu -> Mul(0.5) -> Mul(3) -> conv: after the first fold the tensor before the second Mul
    # is written on another tensor's grid, so the second Mul stays (folding it too would
    # scale by 0.5 twice).
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(10)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.float32(0.5), "half"), numpy_helper.from_array(np.float32(3.0), "three")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["c"]),  # (a Mul right after a conv folds into it)
             helper.make_node("Mul", ["c", "half"], ["m1"]),
             helper.make_node("Mul", ["m1", "three"], ["m2"]),
             helper.make_node("Conv", ["m2", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(8)]
    folded = _build(model, feeds, "x86")
    unfolded = build(model, target="x86", pipeline=QUANT_PIPELINE[:-1], calib=lambda: iter(feeds))
    assert folded.report["passes"]["fold-requant"]["scalar_muls_folded"] == 1
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in folded.model.graph.initializer}
    step = float(inits[next(n for n in folded.model.graph.node if n.output[0] == "y").input[1]])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for f in feeds[:3]:
        a = _run(unfolded.model, f, reference=True)[0]
        b = _run(folded.model, f, reference=True)[0]
        assert np.max(np.abs(a - b)) <= step * 1.001
        assert np.max(np.abs(b - ref.run(None, f)[0])) < 0.1 * np.max(np.abs(ref.run(None, f)[0]))
