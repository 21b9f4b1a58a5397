"""Sensitivity analysis, mixed precision, bit-ops report, overrides and the commands."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from qcompiler.analysis.bitops import bitops_report, mac_counts
from qcompiler.precision.mixed_precision import mixed_precision
from qcompiler.analysis.sensitivity import analyze, format_table, write_reports
from fixtures.synthetic import cle_net, gaussian_batches, reestimate_bn, sabotage_channels
from qcompiler.precision.variants import VariantBuilder
from qcompiler.driver.build import build


@pytest.fixture(scope="module")
def sabotaged():
    m = cle_net(depthwise=True)
    data = gaussian_batches(m, 6)
    m = reestimate_bn(m, data)
    return sabotage_channels(m, "block0.expand.conv"), data


def test_analyze_finds_sabotaged_layer(sabotaged, tmp_path):
    m, data = sabotaged
    res = analyze(m, "x86", lambda: iter(data), eval_batches=2)
    top3 = res["ranking"][:3]
    print(format_table(res, 5))
    assert "conv_act:block0.expand.conv" in top3
    assert len(res["layers"]) == 8 and res["evaluations"] == 17  # full + 2 per layer
    row = next(r for r in res["layers"] if r["kernel"] == "conv_act:block0.expand.conv")
    assert row["only"]["sqnr_db"] < res["layers"][0]["only"]["sqnr_db"] or row["rank"] <= 3
    assert any(f["kind"] == "weight_channel_range" for f in res["flags"])
    files = write_reports(res, tmp_path / "an", worst=2)
    doc = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert doc["ranking"] == res["ranking"] and "tensors" in doc
    assert (tmp_path / "an" / "sensitivity.png").stat().st_size > 1000
    assert len(files["plots"]) >= 2
    assert "block0.expand.conv" in (tmp_path / "an" / "analysis.md").read_text()


def test_input_range_mismatch_flag():
    from fixtures.models import residual_concat_net

    m = residual_concat_net(channels=8, hw=8, batch="N")
    data = gaussian_batches(m, 3, batch=2)
    res = analyze(m, "x86", lambda: iter(data), eval_batches=1, layers="weighted",
                  thresholds={"input_range_mismatch": 1.0001})
    assert any(f["kind"] == "input_range_mismatch" for f in res["flags"])
    assert all(r["op"] in ("Conv", "Gemm", "MatMul") for r in res["layers"])


def test_mixed_precision_reaches_budget_with_few_layers():
    m = cle_net(blocks=8, hw=16)
    data = gaussian_batches(m, 4, batch=2)
    m = reestimate_bn(m, data)
    clean = VariantBuilder(m, "x86", lambda: iter(data), eval_batches=2).evaluate([])["sqnr_db"]
    bad = sabotage_channels(m, "block6.dw.conv")
    rep = mixed_precision(bad, "x86", lambda: iter(data), min_sqnr=clean - 1.0, eval_batches=2)
    print(rep["full_int8"], rep["result"], [k["kernel"] for k in rep["kept_float"]])
    assert rep["reached"] and rep["result"]["sqnr_db"] >= clean - 1.0
    assert rep["full_int8"]["sqnr_db"] < clean - 5
    assert 1 <= len(rep["kept_float"]) <= 3
    assert rep["int8_mac_share"] >= 0.90
    for k in rep["kept_float"]:
        assert k["why"] and k["extra_bitops"] == k["macs"] * (1024 - 64)
    # the keep_float list builds
    r = build(bad, target="x86", calib=lambda: iter(data), options={"keep_float": rep["keep_float"], "evaluate": False})
    kept = set(rep["keep_float"])
    assert kept <= set(r.report["float_reasons"])


def test_mixed_precision_cosine_budget_and_metric(sabotaged):
    m, data = sabotaged
    rep = mixed_precision(m, "x86", lambda: iter(data), max_drop=0.01, eval_batches=2)
    assert rep["reached"] and 1 - rep["result"]["cosine"] <= 0.01

    def metric(outs, batches):  # agreement of channel argmax with the FP32 model's
        return float(np.mean([o[0].mean() for o in outs]))

    rep = mixed_precision(m, "x86", lambda: iter(data), max_drop=1e9, metric=metric, eval_batches=1)
    assert rep["reached"] and rep["kept_float"] == [] and "metric_drop" in rep["result"]


def test_bitops_totals_are_sums(sabotaged):
    m, data = sabotaged
    r = build(m, target="x86", calib=lambda: iter(data), options={"keep_float": ["head.conv"], "evaluate": False})
    rep = bitops_report(r.ir, None, data[0])
    assert rep["total_macs"] == sum(x["macs"] for x in rep["layers"])
    assert rep["total_bitops"] == sum(x["bitops"] for x in rep["layers"])
    assert all(x["bitops"] == x["macs"] * x["activation_bits"] * x["weight_bits"] for x in rep["layers"])
    head = next(x for x in rep["layers"] if x["name"] == "head.conv")
    assert (head["activation_bits"], head["weight_bits"]) == (32, 32)
    others = [x for x in rep["layers"] if x["name"] != "head.conv"]
    assert all((x["activation_bits"], x["weight_bits"]) == (8, 8) for x in others)
    assert rep["int8_macs"] == rep["total_macs"] - head["macs"]
    assert rep["total_macs"] == sum(mac_counts(m, data[0]).values())
    fp = bitops_report(m, None, data[0])
    assert fp["total_bitops"] == fp["fp32_bitops"] and fp["int8_mac_share"] == 0
    assert rep["size"]["parameter_bytes"] < fp["size"]["parameter_bytes"] / 2
    # the exported model gives the same numbers as the IR
    assert bitops_report(r.model, r.ir.ann.plan, data[0])["total_bitops"] == rep["total_bitops"]


def test_overrides_and_hooks(sabotaged, tmp_path):
    from qcompiler.driver.prepare import prepare_build
    from qcompiler.errors import UsageError

    m, data = sabotaged
    cfg = tmp_path / "o.json"
    cfg.write_text(json.dumps({"keep_float": ["head.*"], "layers": {"block1.dw.conv": {"activation": "int16"},
                                                                     "stem.conv": {"activation": "float"}}}))
    names, opts, extra = prepare_build(m, "x86", ["canonicalize", "fold-bn", "insert-observers", "calibrate",
                                                  "place-qdq"], None, {"overrides": str(cfg)})
    assert {"head.*", "stem.conv", "block1.dw.conv"} <= set(opts["keep_float"])  # x86 declares no int16
    assert "kept float" in extra["overrides"]["block1.dw.conv"]
    with pytest.raises(UsageError):
        prepare_build(m, "x86", ["calibrate"], None, {"min_sqnr": 30})
    names, opts, extra = prepare_build(m, "x86", ["canonicalize", "fold-bn", "fuse-conv-bias-act",
                                                  "insert-observers", "calibrate", "place-qdq"],
                                       lambda: iter(data), {"min_sqnr": 15.0, "mp_eval_batches": 2})
    assert extra["mixed_precision"]["reached"] and opts["keep_float"]


def test_int16_override_on_a_target_that_declares_it(sabotaged, tmp_path):
    from qcompiler.driver.prepare import prepare_build
    from qcompiler.target import load_target

    src = tmp_path / "x86-int16.qtarget"
    src.write_text('target x86i16 extends x86 "int16 activations for convs allowed" {\n'
                   '  activation for Conv int16 symmetric per_tensor\n}\n')
    t = load_target(str(src))
    m, data = sabotaged
    base = [p for p in t.pipeline if p != "lower-layout"]
    names, opts, extra = prepare_build(m, t, base, None, {"overrides": {"layers": {"block0.dw.conv": {"activation": "int16"}}}})
    assert opts["int16_layers"] == ["block0.dw.conv"] and "precision-overrides" in names
    r = build(m, target=t, pipeline=names, calib=lambda: iter(data), options=dict(opts, evaluate=False))
    dtypes = {qp.dtype for name, qp in r.ir.ann.qparams.items() if name == "block0.expand.relu.out"}
    assert dtypes == {"int16"}


def test_commands_register_and_run(sabotaged, tmp_path):
    import click

    from qcompiler.cli.analyze import build_options, build_options_to_dict, register

    m, data = sabotaged
    model = tmp_path / "m.onnx"
    import onnx

    onnx.save(m, str(model))
    np.save(tmp_path / "calib.npy", np.concatenate([d["input"] for d in data[:3]]))

    @click.group()
    def cli():
        pass

    register(cli)
    runner = CliRunner()
    res = runner.invoke(cli, ["analyze", str(model), "--target", "x86", "--calib", str(tmp_path / "calib.npy"),
                              "--batch-size", "4", "--eval-batches", "1", "--out", str(tmp_path / "out"), "-q",
                              "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "rank" in res.output and (tmp_path / "out" / "analysis.json").exists()
    res = runner.invoke(cli, ["mixed-precision", str(model), "--target", "x86", "--calib",
                              str(tmp_path / "calib.npy"), "--batch-size", "4", "--eval-batches", "1",
                              "--min-sqnr", "12", "-o", str(tmp_path / "kf.json"), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "kf.json").read_text())["keep_float"]

    @click.command()
    @build_options
    def fake_build(**kw):
        click.echo(json.dumps(build_options_to_dict(**kw), sort_keys=True))

    res = runner.invoke(fake_build, ["--data-free", "--input-range", "-1,1", "--min-sqnr", "30", "--keep-float", "a*"])
    assert res.exit_code == 0, res.output
    opts = json.loads(res.output)
    assert opts["data_free"] and opts["min_sqnr"] == 30 and opts["keep_float"] == ["a*"]
    assert opts["input_stats"]["*"]["range"] == [-1.0, 1.0]
