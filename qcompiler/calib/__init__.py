"""Calibration data: loading, checking and batching user samples."""

from .data import CalibrationBatches, CalibSource, format_shape, load_calibration, open_source
from .images import IMAGE_EXTENSIONS, Preprocess, infer_preprocess, load_image, load_preprocess

__all__ = [
    "IMAGE_EXTENSIONS",
    "CalibSource",
    "CalibrationBatches",
    "Preprocess",
    "format_shape",
    "infer_preprocess",
    "load_calibration",
    "load_image",
    "load_preprocess",
    "open_source",
]
