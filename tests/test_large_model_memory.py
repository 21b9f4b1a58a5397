"""Large models without copies of their weights: external data read lazily (each weight at
most once, only when a pass needs its values), canonicalize without a weight round trip,
sessions and exports that stream tensors instead of serializing copies, and a bound on a
build's peak memory relative to the model's size.

The >2 GB case itself is bench/bench_large_model.py (opt-in); here the size limits are
lowered so that small models take the same paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

import qcompiler.ir.io as qio
from qcompiler.driver.build import build
from qcompiler.ir import ir_to_model, load_ir, model_to_ir
from qcompiler.passes.canonicalize import Canonicalize
from qcompiler.pipeline import Context
from qcompiler.quant.session import ort_session
from fixtures.models import conv_bn_relu, opset11_model, residual_concat_net, with_external_data

from conftest import assert_same_outputs, random_feeds


def _weights(ir):
    return {t.name: t for t in ir.graph.tensors().values() if isinstance(t, gs.Constant)}


def _normalized(model: onnx.ModelProto) -> bytes:
    for t in model.graph.initializer:
        t.ClearField("data_location")
    return model.SerializeToString()


def test_lazy_read_leaves_the_weights_in_their_files(tmp_path):
    model = residual_concat_net(channels=16, hw=8, blocks=1)
    path = with_external_data(model, str(tmp_path), "model.onnx", size_threshold=64)
    lazy = qio.read_model(path, lazy=True)
    external = [t for t in lazy.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert external and not any(t.HasField("raw_data") for t in external)
    ir = model_to_ir(lazy)
    in_files = [c for c in _weights(ir).values() if isinstance(c._values, qio.FileValues)]
    assert len(in_files) == len(external)
    eager = load_ir(path)
    for c in in_files:
        assert np.array_equal(c._values.load(), _weights(eager)[c.name].values)
    # the export reads them back: the same model as from the eagerly read one (onnx's loader
    # leaves an explicit data_location: DEFAULT behind, the lazy path no field: same meaning)
    assert _normalized(ir_to_model(ir)) == _normalized(ir_to_model(eager))
    assert all(isinstance(c._values, qio.FileValues) for c in in_files), "an export must not keep the values"
    assert qio.model_size(lazy) >= sum(qio.raw_nbytes(t) for t in qio.read_model(path).graph.initializer)


def test_lazy_read_checks_the_byte_ranges(tmp_path):
    path = with_external_data(conv_bn_relu(cin=3, cout=8, hw=8), str(tmp_path), "model.onnx", size_threshold=64)
    data = path + ".data"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) - 1)
    with pytest.raises(qio.ModelError, match="external data"):
        qio.read_model(path, lazy=True)


@pytest.mark.parametrize("make", [lambda: conv_bn_relu(cin=3, cout=16, hw=8), opset11_model],
                         ids=["opset13", "opset11"])
def test_canonicalize_keeps_the_weight_objects(make, monkeypatch):
    """Shape inference (and the opset upgrade) see the model without its weights; the weights
    go back onto the re-imported graph as the same objects, not copies."""
    monkeypatch.setattr(qio, "EXTERNAL_MIN_BYTES", 256)  # the conv weights of these small models
    model = make()
    ir = load_ir(model)
    before = {name: c._values for name, c in _weights(ir).items() if c._values.nbytes >= qio.EXTERNAL_MIN_BYTES}
    assert before
    Canonicalize().run(ir, Context())
    after = _weights(ir)
    assert all(after[name]._values is values for name, values in before.items())
    assert ir.opset >= 13
    shaped = [t for t in ir.graph.tensors().values() if isinstance(t, gs.Variable) and t.shape is not None]
    assert len(shaped) > len(ir.graph.inputs) + len(ir.graph.outputs), "shape inference ran"
    assert_same_outputs(model, ir_to_model(ir), random_feeds(model))


def test_build_reads_each_weight_once_and_only_when_needed(tmp_path, monkeypatch):
    """A static x86 build of a model with external data: every weight is read from its file
    at most once (sessions and exports copy the files, they do not load them)."""
    model = residual_concat_net(channels=16, hw=8, blocks=1)
    path = with_external_data(model, str(tmp_path), "model.onnx", size_threshold=64)
    reads = Counter()
    real = qio.FileValues.load

    def counting(self):
        reads[self.tensor.name] += 1
        return real(self)

    monkeypatch.setattr(qio.FileValues, "load", counting)
    monkeypatch.setattr(qio, "SESSION_FILE_BYTES", 0)  # every session goes through a data file
    x = np.random.default_rng(0).random((4, 1, 3, 8, 8)).astype(np.float32)
    res = build(path, target="x86", calib=lambda: ({"input": b} for b in x))
    in_files = {t.name for t in onnx.load(path, load_external_data=False).graph.initializer
                if t.data_location == TensorProto.EXTERNAL}
    assert reads and set(reads) <= in_files and max(reads.values()) == 1, reads
    assert res.report["accuracy"]["outputs"]  # the FP32 reference session ran (from the files)
    q = {t.name: t for t in res.model.graph.initializer}
    assert any(t.data_type == TensorProto.INT8 and qio.raw_nbytes(t) for t in q.values())


def test_session_over_the_limit_streams_and_matches(monkeypatch):
    """ort_session from an IR and from a ModelProto through a data file gives the outputs of
    the serialized model, and leaves both as they were."""
    model = residual_concat_net(channels=16, hw=8, blocks=1)
    feeds = random_feeds(model)
    ref = ort_session(model).run(None, feeds)[0]
    ir = load_ir(model)
    before = model.SerializeToString()
    monkeypatch.setattr(qio, "SESSION_FILE_BYTES", 0)
    for source in (model, ir):
        got = ort_session(source, outputs=[]).run(None, feeds)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert model.SerializeToString() == before
    assert _normalized(ir_to_model(ir)) == _normalized(ir_to_model(load_ir(model)))


def _gemm_model(folder: str, dims=(1024, 8192, 2048, 1000)) -> str:
    """x -> Gemm -> Relu -> Gemm -> Relu -> Gemm, weights streamed into model.onnx.data."""
    rng = np.random.default_rng(0)
    path = os.path.join(folder, "model.onnx")
    inits, nodes, x = [], [], "x"
    with open(path + ".data", "wb") as f:
        for i, (k, n) in enumerate(zip(dims[:-1], dims[1:])):
            offset = f.tell()
            f.write((rng.standard_normal((n, k), dtype=np.float32) * np.float32(np.sqrt(2 / k))).tobytes())
            w = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[n, k])
            w.data_location = TensorProto.EXTERNAL
            for key, v in (("location", "model.onnx.data"), ("offset", str(offset)), ("length", str(n * k * 4))):
                e = w.external_data.add()
                e.key, e.value = key, v
            inits += [w, onnx.numpy_helper.from_array(np.zeros(n, np.float32), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"], name=f"fc{i}", transB=1))
            x = f"g{i}"
            if i < len(dims) - 2:
                nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
                x = f"r{i}"
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dims[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, dims[-1]])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


_CHILD = textwrap.dedent("""
    import json, os
    import qcompiler.ir.io as qio
    from qcompiler.cli.main import main
    from fixtures.models import conv_bn_relu
    import numpy as np, onnx

    def status(key):  # VmHWM / VmRSS of this process in bytes (ru_maxrss keeps the parent's)
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    # warm up: a tiny build loads every module and ONNX Runtime's kernels
    onnx.save(conv_bn_relu(cin=3, cout=8, hw=8), "tiny.onnx")
    np.save("tiny.npy", np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32))
    assert main(["build", "tiny.onnx", "--target", "x86", "--calib", "tiny.npy", "-o", "tiny.int8.onnx", "-q"]) == 0
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = status("VmRSS")
    except OSError:
        base = status("VmHWM")
    qio.SESSION_FILE_BYTES = 16 << 20  # the large-model paths, for a ~100 MB model
    rc = main(["build", "model.onnx", "--target", "x86", "--calib", "calib.npy", "-o", "out.onnx",
               "-q", "--report", "r.json"])
    print(json.dumps({"rc": rc, "base": base, "peak": status("VmHWM")}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_build_peak_memory_about_twice_the_model(tmp_path):
    """A ~100 MB model (three Gemms, external data) built for x86 with a report, in a child
    process: its peak RSS grows by at most 3x the model's size over a warmed-up interpreter
    (2.5x measured; about 2x at 2.3 GB, where the fixed costs weigh less: the INT8 session
    of the report and the INT8 copies in the IR and the exported proto). When each step
    copied the weights, a 2.3 GB model peaked at about 7x its size.
    """
    path = _gemm_model(str(tmp_path))
    size = os.path.getsize(path) + os.path.getsize(path + ".data")
    np.save(tmp_path / "calib.npy", np.random.default_rng(1).random((8, 1024)).astype(np.float32))
    p = subprocess.run([sys.executable, "-c", _CHILD], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["rc"] == 0, p.stderr[-2000:]
    growth = (r["peak"] - r["base"]) / size
    assert growth <= 3.0, f"peak RSS grew by {growth:.2f}x the model size ({size / 2**20:.0f} MiB)"
    assert os.path.getsize(tmp_path / "out.onnx") < 0.3 * size, "the weights did not shrink about 4x"
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"]["outputs"]
