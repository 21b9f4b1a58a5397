"""The calibration source of a build or an analysis: a zero-argument callable that returns a
fresh iterator of input batches, checked against the model before any work starts."""

from __future__ import annotations

from typing import Callable, Iterator


def calibration_source(model_path, calib, samples=None, batch_size=None, preprocess=None) -> Callable[[], Iterator]:
    """`calib` (a path, an array dict, an iterable: see qcompiler.calib.data) for the model at
    `model_path` (or a ModelProto); names, shapes and dtypes are checked up front."""
    from qcompiler.ir import read_model

    from .data import load_calibration
    from .model_checks import check_calibratable
    from .specs import input_specs

    model = read_model(model_path, lazy=True) if not hasattr(model_path, "graph") else model_path
    check_calibratable(model, model_path if not hasattr(model_path, "graph") else "the model")
    specs = input_specs(model)

    def fresh():  # the preprocess file is read and checked by load_calibration
        return load_calibration(calib, specs, samples=samples, batch_size=batch_size, preprocess=preprocess)

    fresh()
    return fresh
