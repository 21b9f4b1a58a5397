"""The accuracy tools on an outlier channel (the failure bench/bench_accuracy.py measures on
PP-OCR's direction classifier): the activation channel-range flag, Constant-node weights in
sabotage_channels, labelled evaluation data for a task metric, reusing an analysis in the
mixed-precision search, and MAC counts of models with stale exporter shapes."""

import json
import logging

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from qcompiler.analysis.bitops import mac_counts
from qcompiler.analysis.evaldata import load_eval_data
from qcompiler.driver.prepare import prepare_build
from qcompiler.analysis.metrics import top1
from qcompiler.precision.mixed_precision import mixed_precision
from qcompiler.analysis.sensitivity import analyze, load_analysis, write_reports
from fixtures.synthetic import cle_net, gaussian_batches, reestimate_bn, sabotage_channels
from qcompiler.errors import UsageError

from conftest import ort_run

LAYER = "block0.expand.conv"  # 16 -> 32 channels, BN, Relu, then a depthwise conv reads it
FACTORS = [100.0] + [1.0] * 31  # one outlier channel


def _run(model, feeds):
    return ort_run(model, feeds, optimized=True)[0]


@pytest.fixture(scope="module")
def nets():
    m = cle_net(blocks=1, hw=8)
    data = gaussian_batches(m, 4, batch=4)
    m = reestimate_bn(m, data)
    return m, sabotage_channels(m, LAYER, FACTORS), data


def _labelled(model, data):
    """The FP32 model's own top-1 as labels: FP32 accuracy is 100%."""
    xs = np.concatenate([d["input"] for d in data])
    out = _run(model, {"input": xs})
    return xs, out.reshape(len(out), -1).argmax(axis=1)


def test_activation_channel_range_flag_names_the_tensor_and_both_layers(nets):
    clean, bad, data = nets
    res = analyze(bad, "x86", lambda: iter(data), eval_batches=1, layers="weighted")
    flags = [f for f in res["flags"] if f["kind"] == "activation_channel_range"]
    assert [f["where"] for f in flags] == ["block0.expand.relu.out"]
    assert set(flags[0]["kernels"]) == {"conv_act:block0.expand.conv", "conv_act:block0.dw.conv"}
    assert flags[0]["value"] > 32 and "channel 0 of 32" in flags[0]["message"]
    st = res["tensors"]["block0.expand.relu.out"]
    assert st["channel_argmax"] == 0 and st["channels"] == 32
    row = next(r for r in res["layers"] if r["kernel"] == "conv_act:block0.dw.conv")
    assert "activation_channel_range" in row["flags"]
    ok = analyze(clean, "x86", lambda: iter(data), eval_batches=1, layers="weighted")
    assert not [f for f in ok["flags"] if f["kind"] == "activation_channel_range"]
    assert ok["tensors"]["block0.expand.relu.out"]["channel_ratio"] < 32


def test_sabotage_edits_constant_node_weights(nets):
    clean, _, data = nets
    m = onnx.ModelProto()
    m.CopyFrom(clean)
    g = m.graph
    consts = [helper.make_node("Constant", [], [i.name], value=i, name=f"const_{i.name}") for i in g.initializer]
    del g.initializer[:]
    nodes = consts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    bad = sabotage_channels(m, LAYER, FACTORS)
    assert not bad.graph.initializer
    gamma = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in bad.graph.node if n.op_type == "Constant"}
    ref = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node if n.op_type == "Constant"}
    assert np.allclose(gamma["block0.expand.bn.weight"][0], 100 * ref["block0.expand.bn.weight"][0])
    assert np.allclose(gamma["block0.expand.bn.weight"][1:], ref["block0.expand.bn.weight"][1:])
    a, b = _run(m, data[0]), _run(bad, data[0])
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_eval_data_file_carries_labels_to_the_metric(nets, tmp_path):
    clean, bad, data = nets
    xs, ys = _labelled(bad, data)
    np.savez(tmp_path / "val.npz", input=xs, label=ys)
    batches = load_eval_data(str(tmp_path / "val.npz"), bad, batch_size=5)
    assert [len(b["input"]) for b in batches] == [5, 5, 5, 1]
    assert np.array_equal(np.concatenate([b["label"] for b in batches]), ys)
    outs = [[_run(bad, {"input": b["input"]})] for b in batches]
    assert top1(outs, batches) == 100.0
    with pytest.raises(ValueError, match="label"):
        top1(outs, [{"input": b["input"]} for b in batches])
    np.savez(tmp_path / "wrong.npz", images=xs, label=ys)
    with pytest.raises(UsageError, match="'input'"):
        load_eval_data(str(tmp_path / "wrong.npz"), bad)
    np.savez(tmp_path / "short.npz", input=xs, label=ys[:-1])
    with pytest.raises(UsageError, match="samples"):
        load_eval_data(str(tmp_path / "short.npz"), bad)


def test_max_drop_on_labelled_data_reuses_the_analysis(nets, tmp_path):
    clean, bad, data = nets
    xs, ys = _labelled(bad, data)
    np.savez(tmp_path / "val.npz", input=xs, label=ys)
    res = analyze(bad, "x86", lambda: iter(data), eval_batches=1)
    write_reports(res, tmp_path / "an", plots=False)
    layers = len(res["layers"])
    names, opts, extra = prepare_build(
        bad, "x86", ["canonicalize", "fold-bn", "fuse-conv-bias-act", "insert-observers", "calibrate", "place-qdq"],
        lambda: iter(data), {"max_drop": 2.0, "metric": "qcompiler.analysis.metrics:top1",
                             "eval_data": str(tmp_path / "val.npz"), "analysis": str(tmp_path / "an")})
    rep = extra["mixed_precision"]
    assert rep["ranking_from"] == "given analysis" and rep["eval_samples"] == len(xs)
    assert rep["full_int8"]["metric_fp32"] == 100.0
    assert rep["evaluations"] < layers  # no new analysis (that alone costs 2 x layers + 1)
    assert rep["full_int8"]["metric_drop"] > 2.0
    assert rep["reached"] and rep["result"]["metric_drop"] <= 2.0
    # the two layers around the outlier channel, and nothing else
    assert {k["kernel"] for k in rep["kept_float"]} == {"conv_act:block0.expand.conv", "conv_act:block0.dw.conv"}
    assert 0 < rep["int8_mac_share"] < 1 and all(k["macs"] > 0 for k in rep["kept_float"])
    assert "eval_data" not in opts and "analysis" not in opts
    # an analysis of another model is refused
    other = analyze(cle_net(blocks=2, hw=8), "x86", lambda: iter(gaussian_batches(cle_net(blocks=2, hw=8), 1)),
                    eval_batches=1, layers="weighted")
    with pytest.raises(UsageError, match="does not match"):
        mixed_precision(bad, "x86", lambda: iter(data), min_sqnr=99, sensitivity=other, eval_batches=1)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger("qcompiler")
    log.addHandler(handler)
    try:  # another target with the same layers: a warning, and the ranking is used
        rep = mixed_precision(bad, "x86-avx2", lambda: iter(data), min_sqnr=-99,
                              sensitivity=load_analysis(tmp_path / "an"), eval_batches=1)
    finally:
        log.removeHandler(handler)
    assert rep["reached"] and any("made for target 'x86'" in m for m in seen)


def test_cli_eval_data_and_analysis_options(nets, tmp_path):
    import click

    from qcompiler.cli.analyze import build_options, build_options_to_dict, register

    clean, bad, data = nets
    xs, ys = _labelled(bad, data)
    onnx.save(bad, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "calib.npy", xs)
    np.savez(tmp_path / "val.npz", input=xs, label=ys)

    @click.group()
    def cli():
        pass

    register(cli)
    runner = CliRunner()
    common = [str(tmp_path / "m.onnx"), "--target", "x86", "--calib", str(tmp_path / "calib.npy"), "--batch-size", "8",
              "--eval-batches", "1", "-q"]
    r = runner.invoke(cli, ["analyze", *common, "--layers", "weighted", "--out", str(tmp_path / "an"), "--no-plots",
                            "--eval-data", str(tmp_path / "val.npz")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "an" / "analysis.json").read_text())["eval_batches"] == 1
    r = runner.invoke(cli, ["mixed-precision", *common, "--max-drop", "50", "--metric", "qcompiler.analysis.metrics:top1",
                            "--eval-data", str(tmp_path / "val.npz"), "--analysis", str(tmp_path / "an" / "analysis.json"),
                            "--report", str(tmp_path / "mp.json")])
    assert r.exit_code == 0, r.output
    assert "(FP32 100); 16 evaluation samples; ranking from the given analysis" in r.output
    rep = json.loads((tmp_path / "mp.json").read_text())
    assert rep["eval_samples"] == len(xs) and rep["ranking_from"] == "given analysis"

    @click.command()
    @build_options
    def fake_build(**kw):
        click.echo(json.dumps(build_options_to_dict(**kw), sort_keys=True))

    r = runner.invoke(fake_build, ["--max-drop", "0.5", "--metric", "m:f", "--eval-data", "v.npz", "--analysis", "a.json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"analysis": "a.json", "eval_data": "v.npz", "max_drop": 0.5, "metric": "m:f"}
    r = runner.invoke(fake_build, ["--eval-data", "v.npz"])
    assert r.exit_code != 0 and "only used with --min-sqnr or --max-drop" in str(r.exception)


def test_mac_counts_ignore_stale_exporter_shapes(nets):
    clean, _, data = nets
    m = onnx.shape_inference.infer_shapes(clean)
    assert len(m.graph.value_info) > 5
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        d = vi.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_value = -1  # what Paddle2ONNX writes for a dynamic batch
    want = mac_counts(clean, data[0])
    got = mac_counts(m, data[0])
    assert got == want and min(want.values()) > 0 and len(want) == 5
