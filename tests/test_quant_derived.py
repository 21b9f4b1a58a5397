"""Min/max ranges derived from an observed tensor equal what ONNX Runtime computes, and a
build that derives them quantizes exactly as one that observes every tensor."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompiler.passes.calibrate as calibrate_pass
from qcompiler.driver.build import build
from qcompiler.ir import load_ir
from qcompiler.pipeline.registry import all_passes
from qcompiler.quant.derived import derivations, derived_ranges

from conftest import ort_session

all_passes()

SHAPE = [1, 4, 6, 6]


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _op_zoo():
    """x feeds one node of each kind; the derivable ones and the ones that are not."""
    inits = [_const(n, v) for n, v in [("three", 3.0), ("two", [2.0]), ("neg", -1.5), ("q", 0.25),
                                       ("m4", -4.0), ("zero", 0.0), ("lo", -1.0), ("hi", 2.0), ("h0", 0.5),
                                       ("six", 6.0), ("sixth", 1 / 6), ("z", 0.0),
                                       ("vec", np.linspace(-1, 1, 4).reshape(1, 4, 1, 1))]]
    n = helper.make_node
    nodes = [
        n("Relu", ["x"], ["relu"]),
        n("LeakyRelu", ["x"], ["leaky"], alpha=0.1),
        n("Clip", ["x", "lo", "hi"], ["clip"]),
        n("Clip", ["x", "h0"], ["clip_min_only"]),
        n("Add", ["x", "three"], ["add"]),
        n("Sub", ["x", "two"], ["sub"]),
        n("Sub", ["two", "x"], ["rsub"]),
        n("Mul", ["x", "neg"], ["mul_neg"]),
        n("Mul", ["q", "x"], ["mul_pos"]),
        n("Mul", ["x", "zero"], ["mul_zero"]),
        n("Div", ["x", "m4"], ["div_neg"]),
        # a HardSwish as exporters write it: each step follows from the one before
        n("Add", ["x", "three"], ["hs_add"]),
        n("Clip", ["hs_add", "z", "six"], ["hs_clip"]),
        n("Mul", ["hs_clip", "sixth"], ["hs_scaled"]),
        # subset ops
        n("Transpose", ["x"], ["transposed"], perm=[0, 2, 3, 1]),
        n("MaxPool", ["x"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Concat", ["x", "relu"], ["concat"], axis=1),
        # not derivable
        n("Mul", ["x", "x"], ["square"]),
        n("Mul", ["x", "vec"], ["per_channel"]),
        n("Div", ["two", "x"], ["reciprocal"]),
        n("Sigmoid", ["x"], ["sigmoid"]),
    ]
    outs = [o for nd in nodes for o in nd.output]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), outs


MONOTONIC = {"relu", "leaky", "clip", "clip_min_only", "add", "sub", "rsub", "mul_neg", "mul_pos", "mul_zero",
             "div_neg", "hs_add", "hs_clip", "hs_scaled"}
SUBSET = {"transposed", "pooled", "concat"}


def _internal(model, outs):
    """The zoo with x's readers' outputs as inner tensors: graph outputs are never derived."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("sink", TensorProto.FLOAT, None))
    m.graph.node.append(helper.make_node("Sum", outs[:1], ["sink"]))
    return m


def test_monotonic_ranges_equal_onnx_runtime():
    model, outs = _op_zoo()
    sess = ort_session(model)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(SHAPE).astype(np.float32) * 3 for _ in range(5)]
    values = {name: [] for name in ["x"] + outs}
    for x in xs:
        for name, v in zip(outs, sess.run(outs, {"x": x})):
            values[name].append(v)
        values["x"].append(x)
    true = {k: (float(min(v.min() for v in vs)), float(max(v.max() for v in vs))) for k, vs in values.items()}

    ir = load_ir(_internal(model, outs))
    names = ["x"] + outs
    for t in SUBSET:  # the placement puts a pass-through output in its input's scale group
        ir.ann.groups.union("x", t)
    ir.ann.groups.union("relu", "x")
    d = derivations(ir, names)
    assert set(d) == MONOTONIC | SUBSET
    got = derived_ranges(d, {"x": true["x"]})
    for name in MONOTONIC:
        assert got[name] == true[name], name  # the same float32 arithmetic: equal, not close
    for name in SUBSET:
        assert got[name][0] <= true[name][0] and true[name][1] <= got[name][1], name


def test_subset_op_outside_its_inputs_group_is_observed():
    model, outs = _op_zoo()
    ir = load_ir(_internal(model, outs))
    d = derivations(ir, ["x"] + outs)  # no groups joined: a maxpool with its own scale is measured
    assert not SUBSET & set(d)
    assert "hs_scaled" in d and d["hs_scaled"].sources == ["hs_clip"]


def test_chain_through_an_unobserved_tensor_is_composed():
    """x + 3 inside a fused Add+Clip is not observed: clip(x + 3) follows from x all the same,
    equal to ONNX Runtime's values, and so does (clip(x + 3) * 1/6)'s."""
    model, outs = _op_zoo()
    sess = ort_session(model)
    x = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32) * 4
    vals = dict(zip(outs, sess.run(outs, {"x": x})))
    ir = load_ir(_internal(model, outs))
    d = derivations(ir, ["x", "hs_clip", "hs_scaled"])
    assert set(d) == {"hs_clip", "hs_scaled"} and d["hs_clip"].sources == ["x"]
    got = derived_ranges(d, {"x": (float(x.min()), float(x.max()))})
    for name in ("hs_clip", "hs_scaled"):
        assert got[name] == (float(vals[name].min()), float(vals[name].max())), name
    assert d["hs_clip"].affine is None  # clip is not affine: no mean follows through it


def test_derivation_needs_an_observed_source():
    model, outs = _op_zoo()
    ir = load_ir(_internal(model, outs))
    d = derivations(ir, ["hs_clip", "hs_scaled"])  # hs_add is not observed: hs_clip must be
    assert set(d) == {"hs_scaled"}


# ---- in a build ---------------------------------------------------------------------------


def _hardswish_net():
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        n("Add", ["c1", "three"], ["a"]), n("Clip", ["a", "z", "six"], ["cl"]),
        n("Mul", ["c1", "cl"], ["m"]), n("Mul", ["m", "sixth"], ["hs"]),
        n("MaxPool", ["hs"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        n("Relu", ["c2"], ["r"]),
        n("Concat", ["r", "p"], ["cat"], axis=1),
        n("GlobalAveragePool", ["cat"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             _const("three", 3.0), _const("z", 0.0), _const("six", 6.0), _const("sixth", 1 / 6)]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _calib():
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(6)]
    return lambda: ({"x": x} for x in xs)


def _qparams(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return sorted((n.output[0], float(inits[n.input[1]]), int(inits[n.input[2]]))
                  for n in model.graph.node if n.op_type == "QuantizeLinear")


@pytest.mark.parametrize("target", ["x86", "arm64", "arm64-sym"])
def test_build_with_derived_ranges_quantizes_as_if_all_were_observed(target, monkeypatch):
    net = _hardswish_net()
    fetched = []
    real_observe = calibrate_pass.observe_session

    def spy(model, names, *args, **kwargs):
        fetched.append(list(names))
        return real_observe(model, names, *args, **kwargs)

    monkeypatch.setattr(calibrate_pass, "observe_session", spy)
    opts = {"calib_method": "minmax", "evaluate": False}
    derived = build(net, target=target, calib=_calib(), options=opts)
    n_derived = derived.report["passes"]["calibrate"]["derived_tensors"]
    monkeypatch.setattr(calibrate_pass, "derivations", lambda ir, names: {})
    observed = build(net, target=target, calib=_calib(), options=opts)
    assert n_derived > 0
    assert len(fetched[0]) == len(fetched[1]) - n_derived  # the session fetched fewer tensors
    assert _qparams(derived.model) == _qparams(observed.model)
    assert derived.ir.ann.notes["ranges"].keys() == observed.ir.ann.notes["ranges"].keys()


@pytest.mark.parametrize("method", ["moving_average", "percentile", "entropy", "mse"])
def test_histogram_and_averaging_methods_observe_every_tensor(method):
    r = build(_hardswish_net(), target="x86", calib=_calib(), options={"calib_method": method, "evaluate": False})
    assert r.report["passes"]["calibrate"]["derived_tensors"] == 0
