"""Shared test helpers: run a model in ONNX Runtime, random inputs, output comparison.

`ort_run(model_or_path, feeds)` runs with ORT's graph optimizations turned off, so a
comparison tests the graph qcompiler wrote, not the fusions ORT would apply to it; test
files make their sessions with `ort_session` (optimized=True for ORT's fused kernels).
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ModelLike = Union[onnx.ModelProto, str, os.PathLike]

#: Relative tolerance of FP32 passes: max |a - b| <= RTOL * max(|a|max, floor).
RTOL = 1e-4

# child processes (CLI runs, memory probes) import the fixtures package beside this file
_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_HERE, os.environ.get("PYTHONPATH")) if p)


def ort_session(model, optimized: bool = False) -> ort.InferenceSession:
    """A CPU session for a ModelProto, a path, or a qcompiler IR (exported first), one thread.
    By default without graph optimizations: the graph as written (a QDQ model's reference
    float semantics). optimized=True: ORT's default optimizations (a QDQ model then runs
    ORT's fused integer kernels)."""
    if not isinstance(model, (onnx.ModelProto, str, os.PathLike)):
        from qcompiler.ir import ir_to_model

        model = ir_to_model(model)
    opts = ort.SessionOptions()
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def ort_run(model: ModelLike, feeds: Dict[str, np.ndarray],
            output_names: Optional[Sequence[str]] = None, optimized: bool = False) -> List[np.ndarray]:
    """Outputs of `model` (a ModelProto, a path, or a qcompiler IR) on `feeds`, in graph order."""
    return ort_session(model, optimized).run(list(output_names) if output_names else None, feeds)


def ort_outputs(model: ModelLike, feeds: Dict[str, np.ndarray], optimized: bool = False) -> Dict[str, np.ndarray]:
    """Outputs by name."""
    sess = ort_session(model, optimized)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
       onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
       onnx.TensorProto.FLOAT16: np.float16}


def random_feeds(model: ModelLike, seed: int = 0, dims: Optional[Dict[str, int]] = None,
                 default_dim: int = 1) -> Dict[str, np.ndarray]:
    """Standard-normal inputs for every graph input of `model`; dynamic dims from `dims`
    (by dim_param name) or `default_dim`."""
    m = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            else:
                shape.append((dims or {}).get(d.dim_param, default_dim))
        dtype = _NP.get(tt.elem_type, np.float32)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def max_rel_err(ref: np.ndarray, got: np.ndarray, floor: float = 0.0) -> float:
    """max |ref - got| divided by max(|ref|max, floor)."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    assert ref.shape == got.shape, f"shape {got.shape} != reference shape {ref.shape}"
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, floor)
    if scale == 0.0:
        return float(np.abs(got).max()) if got.size else 0.0
    return float(np.abs(ref - got).max()) / scale


def assert_close(ref: np.ndarray, got: np.ndarray, rtol: float = RTOL, floor: float = 0.0,
                 what: str = "output") -> None:
    """|ref - got|max <= rtol * max(|ref|max, floor); NaN/Inf anywhere fails."""
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = max_rel_err(ref, got, floor)
    assert err <= rtol, f"{what}: max error {err:.3g} relative to |ref|max exceeds {rtol:g}"


def assert_same_outputs(original: ModelLike, compiled: ModelLike, feeds: Dict[str, np.ndarray],
                        rtol: float = RTOL, floor: float = 0.0) -> None:
    """Every output of `compiled` matches `original`'s output of the same name."""
    ref = ort_outputs(original, feeds)
    got = ort_outputs(compiled, feeds)
    assert set(got) == set(ref), f"output names changed: {sorted(ref)} -> {sorted(got)}"
    for name in ref:
        assert_close(ref[name], got[name], rtol, floor, what=f"output '{name}'")


def op_count(model, op: str) -> int:
    """How many nodes of type `op` a ModelProto or IR holds."""
    if isinstance(model, onnx.ModelProto):
        return sum(1 for n in model.graph.node if n.op_type == op)
    return sum(1 for n in model.graph.nodes if n.op == op)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save_model(model, os.fspath(path))
    return os.fspath(path)


@pytest.fixture
def model_file(tmp_path):
    """`model_file(model, name='model.onnx')` saves a ModelProto under tmp_path, returns the path."""

    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> str:
        return save(model, tmp_path / name)

    return _save


@pytest.fixture
def conv_bn_relu_path(tmp_path) -> str:
    from fixtures.models import conv_bn_relu

    return save(conv_bn_relu(), tmp_path / "conv_bn_relu.onnx")


#: test files by what makes them slow; `pytest -m "not slow"` is the inner loop
_REAL_MODEL_FILES = {"test_arm64_runtime.py", "test_codegen_x86.py", "test_real_models_fp32.py",
                     "test_real_models_int8.py", "test_target_matrix.py", "test_transformer_static.py"}
_PACKAGING_FILES = {"test_packaging.py"}
_SLOW_FILES = _REAL_MODEL_FILES | _PACKAGING_FILES | {"test_api_matches_cli.py", "test_codegen_arm64.py", "test_codegen_exact.py",
                                                      "test_codegen_cli.py", "test_large_model_memory.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if name in _REAL_MODEL_FILES:
            item.add_marker(pytest.mark.real_models)
        if name in _PACKAGING_FILES:
            item.add_marker(pytest.mark.packaging)
        if name in _SLOW_FILES:
            item.add_marker(pytest.mark.slow)
