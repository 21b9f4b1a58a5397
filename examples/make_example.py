"""Write the quick-start example: ``tiny_convnet.onnx`` and 16 calibration samples.

    python examples/make_example.py

Outputs, next to this script (deterministic; the generated files are committed so
the quick start needs neither this script nor a download):

* ``tiny_convnet.onnx`` — ``fixtures.models.residual_concat_net()``: input
  ``input`` ``[1, 3, 32, 32]``, output ``output`` ``[1, 10]``; Conv/BN/Relu, residual
  Adds, a Concat of a 6-channel and a 16-channel branch, MaxPool, GAP, Gemm head.
* ``calib/sample_00.npy`` ... ``calib/sample_15.npy`` — one ``[1, 3, 32, 32]``
  float32 sample each: smooth synthetic RGB images (low-frequency colour fields,
  gradients and a few soft blobs, like blurry photos) normalized with the ImageNet
  mean/std, i.e. the value range a real image model sees.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test fixtures: models, tasks
from fixtures.models import residual_concat_net  # noqa: E402

HERE = Path(__file__).resolve().parent
NUM_SAMPLES = 16
HW = 32
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a [C, g, g] grid to [C, size, size]."""
    g = grid.shape[-1]
    pos = (np.arange(size) + 0.5) * g / size - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 1)
    i1 = np.clip(i0 + 1, 0, g - 1)
    f = np.clip(pos - i0, 0.0, 1.0)
    rows = grid[:, i0, :] * (1 - f)[None, :, None] + grid[:, i1, :] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i1] * f[None, None, :]


def smooth_image(rng: np.random.Generator, size: int = HW) -> np.ndarray:
    """A [3, size, size] float32 RGB image in [0, 1] that looks like a blurry photo."""
    base = rng.uniform(0.2, 0.8, size=(3, 1, 1))
    img = base + _upsample(rng.normal(0, 0.18, size=(3, 4, 4)), size)
    img += _upsample(rng.normal(0, 0.06, size=(3, 8, 8)), size)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    img += rng.uniform(0.0, 0.25) * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5)[None]
    for _ in range(int(rng.integers(1, 4))):  # soft blobs (objects)
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(size / 10, size / 3)
        mask = np.exp(-(((yy * (size - 1) - cy) ** 2 + (xx * (size - 1) - cx) ** 2) / (2 * r * r)))
        colour = rng.uniform(-0.4, 0.4, size=(3, 1, 1))
        img += colour * mask[None]
    img += rng.normal(0, 0.01, size=img.shape)  # sensor noise
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def calibration_samples(n: int = NUM_SAMPLES, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [((smooth_image(rng) - MEAN) / STD).astype(np.float32)[None] for _ in range(n)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    args = ap.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = residual_concat_net(channels=16, hw=HW, blocks=2, seed=0, num_classes=10)
    onnx.save_model(model, str(out / "tiny_convnet.onnx"))
    calib = out / "calib"
    calib.mkdir(exist_ok=True)
    for i, x in enumerate(calibration_samples()):
        np.save(calib / f"sample_{i:02d}.npy", x)
    size = (out / "tiny_convnet.onnx").stat().st_size
    print(f"wrote {out / 'tiny_convnet.onnx'} ({size / 1024:.0f} KB) and "
          f"{NUM_SAMPLES} samples in {calib}")


if __name__ == "__main__":
    main()
