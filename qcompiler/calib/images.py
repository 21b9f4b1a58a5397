"""Image calibration samples: decoding (Pillow) and a stated preprocessing.

A :class:`Preprocess` turns one image file into one model sample, in this order:

1. decode, apply the EXIF orientation, convert to RGB (or to grayscale for "GRAY");
2. ``resize``: an int resizes the *short side* to that size keeping the aspect ratio,
   ``[h, w]`` resizes to exactly h x w;
3. ``crop``: center crop to an int (square) or ``[h, w]``;
4. ``x * scale`` (default 1/255), then ``(x - mean) / std`` per channel when given
   (in the RGB channel order, before any BGR swap);
5. ``color``: "RGB" (default), "BGR" (channels reversed) or "GRAY" (one channel);
6. ``layout``: "NCHW" gives a (C, H, W) sample, "NHWC" a (H, W, C) one;
7. ``dtype``: "float32" (default), "float16", "float64", or "uint8" (rounded, clipped).

A config is a dict, a :class:`Preprocess`, or a file: ``.json``, or a small TOML file
(``key = value`` lines, optionally under a ``[preprocess]`` table)::

    resize = 256
    crop = 224
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    layout = "NCHW"
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Preprocess",
    "load_preprocess",
    "infer_preprocess",
    "load_image",
    "is_image_file",
]

log = logging.getLogger("qcompiler.calib")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

_LAYOUTS = ("NCHW", "NHWC")
_COLORS = ("RGB", "BGR", "GRAY")
_DTYPES = ("float32", "float16", "float64", "uint8")
_INTERP = ("nearest", "bilinear", "bicubic", "lanczos", "box")
_ALIASES = {
    "center_crop": "crop",
    "size": "resize",
    "channel_order": "color",
    "color_order": "color",
    "data_format": "layout",
}


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _size(key: str, value: Any, allow_int: bool = True) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and allow_int:
        if value <= 0:
            raise CalibrationError(f"preprocess '{key}' must be positive, got {value}", None)
        return int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value
    ):
        return int(value[0]), int(value[1])
    raise CalibrationError(
        f"preprocess '{key}' must be an int (short side or square) or [height, width], got {value!r}",
        f"write e.g. {key} = 224 or {key} = [224, 224]",
    )


def _floats(key: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(float(v) for v in value)
    raise CalibrationError(
        f"preprocess '{key}' must be a number or a list of numbers, got {value!r}",
        f"write e.g. {key} = [0.485, 0.456, 0.406]",
    )


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    v = str(value)
    for c in choices:
        if v.upper() == c.upper():
            return c
    raise CalibrationError(
        f"preprocess '{key}' must be one of {', '.join(choices)}, got {value!r}", None
    )


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model sample (see the module docstring)."""

    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    color: str = "RGB"
    dtype: str = "float32"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", _size("resize", self.resize))
        object.__setattr__(self, "crop", _size("crop", self.crop))
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, (int, float, np.integer, np.floating))
            or not np.isfinite(self.scale)
        ):
            raise CalibrationError(f"preprocess 'scale' must be a number, got {self.scale!r}", "write e.g. scale = 0.00392156862745098")
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "mean", _floats("mean", self.mean))
        object.__setattr__(self, "std", _floats("std", self.std))
        object.__setattr__(self, "layout", _choice("layout", self.layout, _LAYOUTS))
        object.__setattr__(self, "color", _choice("color", self.color, _COLORS))
        object.__setattr__(self, "dtype", _choice("dtype", self.dtype, _DTYPES).lower())
        object.__setattr__(
            self, "interpolation", _choice("interpolation", self.interpolation, _INTERP).lower()
        )
        c = self.channels
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v is not None and len(v) not in (1, c):
                raise CalibrationError(
                    f"preprocess '{key}' has {len(v)} values but color {self.color} has {c} channel(s)",
                    f"give 1 or {c} values",
                )
        if self.std is not None and any(s == 0 for s in self.std):
            raise CalibrationError("preprocess 'std' must not contain 0", None)

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    @classmethod
    def from_dict(cls, config: dict) -> "Preprocess":
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for k, v in config.items():
            key = _ALIASES.get(str(k).lower(), str(k).lower())
            if key not in known:
                raise CalibrationError(
                    f"unknown preprocess option '{k}'",
                    f"valid options: {', '.join(sorted(known))}",
                )
            kwargs[key] = v
        return cls(**kwargs)

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Sample shape for an image of the given size (after resize and crop)."""
        h, w = self._resized_size(height, width)
        if self.crop is not None:
            h, w = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
        c = self.channels
        return (c, h, w) if self.layout == "NCHW" else (h, w, c)

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        if self.resize is None:
            return height, width
        if isinstance(self.resize, tuple):
            return self.resize
        s = self.resize
        if height <= width:
            return s, max(1, int(round(width * s / height)))
        return max(1, int(round(height * s / width))), s

    def apply(self, image, origin: str = "image") -> np.ndarray:
        """A decoded PIL image -> one sample array."""
        from PIL import Image

        img = image.convert("L" if self.color == "GRAY" else "RGB")
        h, w = img.height, img.width
        rh, rw = self._resized_size(h, w)
        if (rh, rw) != (h, w):
            resample = {
                "nearest": Image.NEAREST,
                "bilinear": Image.BILINEAR,
                "bicubic": Image.BICUBIC,
                "lanczos": Image.LANCZOS,
                "box": Image.BOX,
            }[self.interpolation]
            img = img.resize((rw, rh), resample=resample)
        if self.crop is not None:
            ch, cw = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
            if ch > rh or cw > rw:
                raise CalibrationError(
                    f"image '{origin}' is {rh}x{rw} after resizing, smaller than the crop {ch}x{cw}",
                    "resize to at least the crop size (e.g. resize = crop) or lower crop",
                )
            top = (rh - ch) // 2
            left = (rw - cw) // 2
            img = img.crop((left, top, left + cw, top + ch))
        x = np.asarray(img, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        x = x * np.float32(self.scale)
        if self.mean is not None:
            x = x - np.asarray(self.mean, dtype=np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, dtype=np.float32)
        if self.color == "BGR":
            x = x[:, :, ::-1]
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        if self.dtype == "uint8":
            x = np.clip(np.rint(x), 0, 255)
        return np.ascontiguousarray(x.astype(self.dtype))


# ---- config files -------------------------------------------------------------------


def _parse_toml_like(text: str, origin: str) -> dict:
    """Minimal ``key = value`` parser (values: JSON literals or bare words)."""
    out: dict = {}
    section: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if "=" not in line:
            raise CalibrationError(
                f"preprocess file '{origin}' line {lineno}: expected 'key = value', got {raw.strip()!r}",
                None,
            )
        key, value = (s.strip() for s in line.split("=", 1))
        if section not in (None, "preprocess"):
            continue
        try:
            out[key] = json.loads(value.replace("'", '"'))
        except json.JSONDecodeError:
            if value.lower() in ("true", "false"):
                out[key] = value.lower() == "true"
            else:
                out[key] = value.strip("\"'")
    return out


def _read_config_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CalibrationError(f"cannot read preprocess file '{path}': {e.strerror or e}", None) from None
    suffix = path.suffix.lower()
    if suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CalibrationError(
                f"preprocess file '{path}' is not valid JSON: {e.msg} at line {e.lineno}", None
            ) from None
    else:
        data = None
        try:
            import tomllib  # Python >= 3.11

            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                data = None
        except ImportError:  # pragma: no cover - Python 3.10
            pass
        if data is None:
            data = _parse_toml_like(text, str(path))
    if not isinstance(data, dict):
        raise CalibrationError(f"preprocess file '{path}' must hold a table of options", None)
    if isinstance(data.get("preprocess"), dict):
        data = data["preprocess"]
    return data


def load_preprocess(config) -> Preprocess:
    """A Preprocess from a Preprocess, a dict, or a .json / TOML-like file path."""
    if isinstance(config, Preprocess):
        return config
    if isinstance(config, dict):
        return Preprocess.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        if not p.is_file():
            raise CalibrationError(f"preprocess file '{config}' does not exist", None)
        return Preprocess.from_dict(_read_config_file(p))
    raise CalibrationError(
        f"preprocess must be a dict or a file path, got {type(config).__name__}", None
    )


def infer_preprocess(shape: tuple) -> Preprocess | None:
    """A default Preprocess for an image input of the given (N, C, H, W)/(N, H, W, C) shape.

    Fixed H and W give an exact resize; scale 1/255, no mean/std, RGB. None if the
    shape does not look like an image input.
    """
    if len(shape) != 4:
        return None

    def fixed(d):
        return isinstance(d, (int, np.integer)) and d > 0

    if fixed(shape[1]) and shape[1] in (1, 3):
        layout, c, h, w = "NCHW", shape[1], shape[2], shape[3]
    elif fixed(shape[3]) and shape[3] in (1, 3):
        layout, c, h, w = "NHWC", shape[3], shape[1], shape[2]
    else:
        return None
    resize = (int(h), int(w)) if fixed(h) and fixed(w) else None
    return Preprocess(resize=resize, layout=layout, color="GRAY" if c == 1 else "RGB")


def load_image(path: str, preprocess: Preprocess) -> np.ndarray:
    """Decode one image file and preprocess it; CalibrationError naming the file if it fails."""
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover
        raise CalibrationError(
            "reading calibration images needs Pillow", "pip install 'qcompiler[images]'"
        ) from None
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return preprocess.apply(im, origin=str(path))
    except CalibrationError:
        raise
    except Exception as e:  # Pillow raises many types for bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CalibrationError(
            f"cannot decode calibration image '{path}': {reason}",
            "remove or replace the file",
        ) from None
