"""`qcompiler.build()` with the same options writes the same bytes as `qcompiler build`, for
every option the command has. Each case gives the command line and, written out separately,
the Python call a script would make; a flag without a case fails
`test_every_build_flag_has_a_case`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qcompiler
from qcompiler.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "tiny_convnet.onnx"
CALIB = ROOT / "examples" / "calib"
PLUGIN = ROOT / "examples" / "plugins" / "count_convs.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Side inputs some flags read: overrides, layer types, eval data, a metric, an analysis,
    an image folder with its preprocessing, and a Q/DQ model to import."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "overrides.json").write_text(json.dumps({"keep_float": ["block0.*"],
                                                  "layers": {"stem.conv": {"activation": "float"}}}))
    (d / "layers.json").write_text(json.dumps({"block1*": {"weight": "int4"}}))
    x = np.stack([np.load(p)[0] if np.load(p).ndim == 4 else np.load(p) for p in sorted(CALIB.glob("*.npy"))])
    np.savez(d / "eval.npz", input=x.astype(np.float32), label=np.arange(len(x)) % 10)
    (d / "metric.py").write_text("def neg_mean(outputs_list, batches):\n"
                                 "    return -float(sum(abs(o[0]).mean() for o in outputs_list))\n")
    from PIL import Image

    rng = np.random.default_rng(0)
    (d / "images").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / "images" / f"{i}.png")
    (d / "pre.json").write_text(json.dumps({"resize": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3,
                                            "scale": 1 / 255, "layout": "NCHW"}))
    assert main(["build", str(MODEL), "--target", "x86", "--calib", str(CALIB), "-o", str(d / "qdq.onnx"),
                 "-q"]) == 0
    assert main(["analyze", str(MODEL), "--target", "x86", "--calib", str(CALIB), "--out", str(d / "analysis"),
                 "--no-plots", "-q"]) == 0
    return d


def _cases(f: Path):
    """(id, CLI flags after MODEL, model, build() keywords)."""
    c, x86 = str(CALIB), {"target": "x86", "calib": str(CALIB)}
    return [
        ("target", ["--target", "arm64", "--calib", c], MODEL, dict(target="arm64", calib=c)),
        ("default-target", ["--calib", c], MODEL, dict(calib=c)),
        ("fp32", [], MODEL, {}),
        ("pipeline", ["--pipeline", "canonicalize,fold-bn"], MODEL, dict(pipeline=["canonicalize", "fold-bn"])),
        ("add-pass", ["--add-pass", "count-convs:after=fold-bn", "--plugin", str(PLUGIN)], MODEL,
         dict(add_passes=["count-convs:after=fold-bn"], plugins=[str(PLUGIN)])),
        ("dump-dir", ["--calib", c, "--dump-dir", "{tmp}/dumps"], MODEL, dict(calib=c, dump_dir="{tmp}/dumps2")),
        ("calib-samples", ["--calib", c, "--calib-samples", "5"], MODEL, dict(calib=c, calib_samples=5)),
        ("batch-size", ["--calib", c, "--batch-size", "1"], MODEL, dict(calib=c, batch_size=1)),
        ("method", ["--calib", c, "--method", "entropy"], MODEL, dict(**x86, options={"calib_method": "entropy"})),
        ("percentile", ["--calib", c, "--method", "percentile", "--percentile", "99.5"], MODEL,
         dict(**x86, options={"calib_method": "percentile", "percentile": 99.5})),
        ("clip-weight", ["--calib", c, "--clip-weight", "2"], MODEL,
         dict(**x86, options={"mse_clip_weight": 2.0})),
        ("preprocess", ["--calib", str(f / "images"), "--preprocess", str(f / "pre.json")], MODEL,
         dict(calib=str(f / "images"), preprocess=str(f / "pre.json"))),
        ("emit-qop", ["--calib", c, "--emit", "qop"], MODEL, dict(**x86, options={"emit": "qop"})),
        ("emit-program", ["--target", "arm64", "--calib", c, "--emit", "program"], MODEL,
         dict(target="arm64", calib=c, options={"emit": "program"})),
        ("emit-c", ["--target", "arm64", "--calib", c, "--emit", "c"], MODEL,
         dict(target="arm64", calib=c, options={"emit": "c"})),
        ("report", ["--calib", c, "--report", "{tmp}/r.json"], MODEL, dict(calib=c)),
        ("keep-going", ["--calib", c, "--keep-going"], MODEL, dict(calib=c, keep_going=True)),
        ("force", ["--calib", c, "--force"], MODEL, dict(calib=c)),
        ("warn-sqnr", ["--calib", c, "--warn-sqnr", "50"], MODEL, dict(calib=c, options={"warn_sqnr": 50.0})),
        ("quiet", ["--calib", c, "--quiet"], MODEL, dict(calib=c)),
        ("data-free", ["--data-free", "--input-range", "-1,1", "--bn-sigmas", "4"], MODEL,
         dict(options={"data_free": True, "bn_sigmas": 4.0,
                       "input_stats": {"*": {"range": [-1.0, 1.0], "mean": 0.0, "std": 1 / 3}}})),
        ("input-stats", ["--data-free", "--input-stats", "0,0.5"], MODEL,
         dict(options={"data_free": True, "input_stats": {"*": {"mean": 0.0, "std": 0.5}}})),
        ("equalize", ["--calib", c, "--equalize"], MODEL, dict(**x86, options={"equalize": True})),
        ("bias-correction", ["--calib", c, "--bias-correction"], MODEL,
         dict(**x86, options={"bias_correction": True})),
        ("no-equalize", ["--calib", c, "--no-equalize", "--no-bias-correction"], MODEL,
         dict(**x86, options={"equalize": False, "bias_correction": False})),
        ("min-sqnr", ["--calib", c, "--min-sqnr", "40"], MODEL, dict(**x86, options={"min_sqnr": 40.0})),
        ("max-drop", ["--calib", c, "--max-drop", "0.001", "--metric", f"{f}/metric.py:neg_mean",
                      "--eval-data", str(f / "eval.npz")], MODEL,
         dict(**x86, options={"max_drop": 0.001, "metric": f"{f}/metric.py:neg_mean",
                              "eval_data": str(f / "eval.npz")})),
        ("analysis", ["--calib", c, "--min-sqnr", "40", "--analysis", str(f / "analysis" / "analysis.json")],
         MODEL, dict(**x86, options={"min_sqnr": 40.0, "analysis": str(f / "analysis" / "analysis.json")})),
        ("overrides", ["--target", "arm64", "--calib", c, "--overrides", str(f / "overrides.json")], MODEL,
         dict(target="arm64", calib=c, options={"overrides": str(f / "overrides.json")})),
        ("keep-float", ["--calib", c, "--keep-float", "block1.*"], MODEL,
         dict(**x86, options={"keep_float": ["block1.*"]})),
        ("mode-dynamic", ["--mode", "dynamic"], MODEL, dict(options={"mode": "dynamic"})),
        ("mode-import", ["--target", "x86", "--mode", "import", "--import-strict"], f / "qdq.onnx",
         dict(target="x86", options={"mode": "import", "import_strict": True})),
        ("weight-dtype", ["--target", "arm64", "--calib", c, "--weight-dtype", "int4", "--weight-range", "minmax"],
         MODEL, dict(target="arm64", calib=c, options={"weight_dtype": "int4", "weight_range": "minmax"})),
        ("activation-dtype", ["--target", "arm64", "--calib", c, "--activation-dtype", "int16"], MODEL,
         dict(target="arm64", calib=c, options={"activation_dtype": "int16"})),
        ("layer-dtypes", ["--target", "arm64", "--calib", c, "--layer-dtypes", str(f / "layers.json")], MODEL,
         dict(target="arm64", calib=c, options={"layer_dtypes": {"block1*": {"weight": "int4"}}})),
        ("adaround", ["--calib", c, "--adaround", "--adaround-iters", "4", "--adaround-seconds", "600"], MODEL,
         dict(**x86, options={"adaround": True, "adaround_iters": 4, "adaround_seconds": 600.0})),
    ]


def _flags_of_cases(f):
    return {a for _, args, _, _ in _cases(f) for a in args if a.startswith("-")}


def test_every_build_flag_has_a_case(tmp_path):
    flags = {o for p in cli.commands["build"].params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
    # every case passes -o and -q; --plugin goes with --add-pass
    missing = flags - _flags_of_cases(tmp_path) - {"-o", "--output", "-q", "-h", "--help", "--plugin"}
    assert not missing, f"build flags without an API case: {sorted(missing)}"


def _read_output(path: Path) -> dict:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    return {"model": path.read_bytes()}


CASE_IDS = [case[0] for case in _cases(Path("."))]


@pytest.mark.parametrize("case", CASE_IDS)
def test_build_api_writes_the_bytes_the_cli_writes(files, tmp_path, case):
    _, args, model, kwargs = next(k for k in _cases(files) if k[0] == case)
    emit_c = "c" in (kwargs.get("options") or {}).get("emit", "")
    a, b = tmp_path / ("a" if emit_c else "a.onnx"), tmp_path / ("b" if emit_c else "b.onnx")
    args = [s.replace("{tmp}", str(tmp_path)) for s in args]
    assert main(["build", str(model), *args, "-o", str(a), "-q"]) == 0
    kwargs = {k: (v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v) for k, v in kwargs.items()}
    qcompiler.build(model, **kwargs).save(b)
    assert _read_output(a) == _read_output(b)
