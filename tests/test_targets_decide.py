"""The three shipped targets decide differently on the same small conv/residual/concat model."""

import numpy as np
import pytest

from qcompiler.driver.build import build
from fixtures.models import residual_concat_net


@pytest.fixture(scope="module")
def builds():
    net = residual_concat_net()
    rng = np.random.default_rng(0)
    data = [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    return {t: build(net, target=t, calib=lambda: iter(data), options={"evaluate": False})
            for t in ("x86", "arm64", "cuda")}


def test_activation_dtypes_differ(builds):
    def act_dtype(r):
        return {qp.dtype for name, qp in r.ir.ann.qparams.items() if qp.axis is None and qp.dtype != "int32"}

    assert act_dtype(builds["x86"]) == {"uint8"}
    assert act_dtype(builds["arm64"]) == {"int8"}
    assert act_dtype(builds["cuda"]) == {"int8"}


def test_quantized_tensor_sets_differ(builds):
    sets = {t: set(r.ir.ann.plan.tensors) for t, r in builds.items()}
    # TensorRT's rules leave weighted outputs that no kernel reads in float
    assert sets["cuda"] < sets["x86"]
    assert sets["arm64"] == sets["x86"]  # same rules, different numbers


def test_layout_plans_differ(builds):
    x86, arm, cuda = (builds[t].ir.ann.layout for t in ("x86", "arm64", "cuda"))
    assert x86 == {}  # ONNX Runtime keeps NCHW; no lower-layout in the x86 pipeline
    assert arm["stem.conv"].startswith("NCHW44") and "IC=3" in arm["stem.conv"]
    assert cuda["stem.conv"].startswith("NC4HW4") and "padded to 4" in cuda["stem.conv"]
    assert set(arm) == set(cuda)
    assert all(arm[n].split()[0] != cuda[n].split()[0] for n in arm)
