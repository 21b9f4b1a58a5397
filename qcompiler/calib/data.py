"""Calibration data: sources, up-front checks, lazy batching.

Sources (see :func:`open_source`):

- a ``.npy`` file: one array for the model's single input, first axis = samples;
- a ``.npz`` file: one array per input name, first axis = samples (a lone unnamed
  ``arr_0`` feeds a single-input model);
- a folder of ``.npy``/``.npz`` files, read in sorted order (sub-folders included);
  each file holds one sample (rank of the input minus one) or a batch (rank of the input);
- a folder of images (.jpg, .jpeg, .png, .bmp) or one image file, decoded with Pillow
  and turned into samples by a :class:`~qcompiler.calib.images.Preprocess`;
- a dict ``{input_name: array}`` (first axis = samples), or any iterable of such dicts
  (each item one sample or one batch, decided by rank as for folder files); for a
  single-input model, bare arrays work in place of the dicts.

The first axis of every model input is taken to be its batch axis. A sample is the
input's shape without it; :func:`load_calibration` splits files and items into samples
and stacks samples into batches of ``batch_size``. Samples of different shapes (dynamic
H/W) never share a batch: a batch ends early when the shape changes. Nothing is read
before it is needed (``.npy`` files are memory-mapped; folders are listed, not loaded),
except the first sample, which is read up front so that names, shapes and dtypes are
checked before any work starts.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError
from .images import IMAGE_EXTENSIONS, Preprocess, infer_preprocess, is_image_file, load_image, load_preprocess

__all__ = [
    "Chunk",
    "CalibSource",
    "NpyFileSource",
    "NpzFileSource",
    "ArrayFolderSource",
    "ImageFolderSource",
    "IterableSource",
    "MappingSource",
    "open_source",
    "CalibrationBatches",
    "load_calibration",
    "format_shape",
]

log = logging.getLogger("qcompiler.calib")

InputSpecs = Mapping[str, tuple[tuple, Any]]

_SOURCE_HINT = (
    "pass a .npy or .npz file, a folder of .npy/.npz files or images, "
    "or an iterable of {input_name: array} dicts"
)


@dataclass
class Chunk:
    """Raw arrays read from one place of a source.

    arrays: {input name or None (= the single input): array}.
    origin: where they came from, for messages ("data/x.npy", "item 3").
    kind:   "batch" (first axis = samples), "sample" (one sample) or "auto" (by rank).
    """

    arrays: dict
    origin: str
    kind: str


class CalibSource:
    """A lazily read calibration source; iterate :meth:`chunks`."""

    description = "calibration data"
    num_samples: int | None = None  # known sample count (for progress), if cheap to know

    def chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise CalibrationError(
            f"cannot read calibration file '{path}': {_reason(e)}",
            "check that it is a .npy file written by numpy.save",
        ) from None


def _load_npz(path: str) -> dict[str, np.ndarray]:
    from .npz import load_npz_mapped

    try:
        return load_npz_mapped(path)  # mapped, not read: memory stays flat in the sample count
    except Exception as e:
        raise CalibrationError(
            f"cannot read calibration file '{path}': {_reason(e)}",
            "check that it is a .npz file written by numpy.savez",
        ) from None


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text or type(e).__name__


class NpyFileSource(CalibSource):
    """One .npy file: the single input's samples along the first axis (memory-mapped)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.description = self.path
        arr = _load_npy(self.path)
        self.num_samples = int(arr.shape[0]) if arr.ndim else None

    def chunks(self) -> Iterator[Chunk]:
        yield Chunk({None: _load_npy(self.path)}, self.path, "batch")


class NpzFileSource(CalibSource):
    """One .npz file: one array per input name, samples along the first axis (memory-mapped)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.description = self.path

    def chunks(self) -> Iterator[Chunk]:
        yield Chunk(_load_npz(self.path), self.path, "batch")


class ArrayFolderSource(CalibSource):
    """A folder of .npy/.npz files in sorted order; each file one sample or one batch."""

    def __init__(self, root: str | os.PathLike, files: list[str]) -> None:
        self.root = str(root)
        self.files = files
        self.description = f"{self.root} ({len(files)} array files)"

    def chunks(self) -> Iterator[Chunk]:
        for f in self.files:
            if f.lower().endswith(".npy"):
                yield Chunk({None: _load_npy(f)}, f, "auto")
            else:
                yield Chunk(_load_npz(f), f, "auto")


class ImageFolderSource(CalibSource):
    """Image files in sorted order, each one sample after ``preprocess``."""

    def __init__(self, root: str | os.PathLike, files: list[str], preprocess: Preprocess | None) -> None:
        self.root = str(root)
        self.files = files
        self.preprocess = preprocess
        self.num_samples = len(files)
        self.description = f"{self.root} ({len(files)} images)"

    def chunks(self) -> Iterator[Chunk]:
        if self.preprocess is None:
            raise CalibrationError(
                f"calibration images in '{self.root}' need a preprocess config",
                "give preprocess (resize, crop, mean, std, layout, ...) as a dict or a .json/.toml file",
            )
        for f in self.files:
            yield Chunk({None: load_image(f, self.preprocess)}, f, "sample")


class MappingSource(CalibSource):
    """A dict {input_name: array} with samples along each array's first axis."""

    def __init__(self, arrays: Mapping) -> None:
        self.arrays = dict(arrays)
        self.description = "dict of arrays"
        first = next(iter(self.arrays.values()), None)
        shape = np.shape(first) if first is not None else ()
        self.num_samples = int(shape[0]) if len(shape) else None

    def chunks(self) -> Iterator[Chunk]:
        yield Chunk(self.arrays, "dict of arrays", "batch")


class ArraySource(CalibSource):
    """One in-memory array for the single input, samples along the first axis."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.description = "array"
        self.num_samples = int(array.shape[0]) if array.ndim else None

    def chunks(self) -> Iterator[Chunk]:
        yield Chunk({None: self.array}, "array", "batch")


class IterableSource(CalibSource):
    """Any iterable of {input_name: array} dicts (or bare arrays for one input)."""

    def __init__(self, items: Iterable) -> None:
        self.items = items
        self.description = f"{type(items).__name__} of samples"

    def chunks(self) -> Iterator[Chunk]:
        for i, item in enumerate(self.items):
            origin = f"item {i}"
            if isinstance(item, Mapping):
                yield Chunk(dict(item), origin, "auto")
            elif isinstance(item, np.ndarray):
                yield Chunk({None: item}, origin, "auto")
            else:
                raise CalibrationError(
                    f"calibration {origin} is a {type(item).__name__}, not a dict of arrays",
                    "yield {input_name: numpy_array} dicts",
                )


def _scan_folder(root: Path) -> tuple[list[str], list[str]]:
    arrays: list[str] = []
    images: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            low = name.lower()
            if low.endswith((".npy", ".npz")):
                arrays.append(full)
            elif is_image_file(low):
                images.append(full)
    key = lambda f: os.path.relpath(f, root)  # noqa: E731
    return sorted(arrays, key=key), sorted(images, key=key)


def open_source(obj, preprocess=None) -> CalibSource:
    """A CalibSource for a path (file or folder), a dict, an array, or an iterable."""
    if isinstance(obj, CalibSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if not p.exists():
            raise CalibrationError(f"calibration data '{obj}' does not exist", _SOURCE_HINT)
        if p.is_file():
            suffix = p.suffix.lower()
            if suffix == ".npy":
                return NpyFileSource(p)
            if suffix == ".npz":
                return NpzFileSource(p)
            if suffix in IMAGE_EXTENSIONS:
                pp = load_preprocess(preprocess) if preprocess is not None else None
                return ImageFolderSource(p, [str(p)], pp)
            raise CalibrationError(
                f"calibration file '{obj}' has an unsupported type '{p.suffix}'",
                "use .npy, .npz, or an image (.jpg, .png, .bmp)",
            )
        arrays, images = _scan_folder(p)
        if arrays and images:
            raise CalibrationError(
                f"calibration folder '{obj}' mixes {len(arrays)} array files and {len(images)} images",
                "keep one kind of file in the folder",
            )
        if not arrays and not images:
            raise CalibrationError(
                f"calibration folder '{obj}' has no .npy, .npz or image files", _SOURCE_HINT
            )
        if arrays:
            return ArrayFolderSource(p, arrays)
        pp = load_preprocess(preprocess) if preprocess is not None else None
        return ImageFolderSource(p, images, pp)
    if isinstance(obj, Mapping):
        return MappingSource(obj)
    if isinstance(obj, np.ndarray):
        return ArraySource(obj)
    if isinstance(obj, (bytes, bytearray)) or not isinstance(obj, Iterable):
        raise CalibrationError(
            f"calibration data of type {type(obj).__name__} is not supported", _SOURCE_HINT
        )
    return IterableSource(obj)


# ---- specs and checks ---------------------------------------------------------------


def _is_fixed(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0


def _fmt_dim(d) -> str:
    if _is_fixed(d):
        return str(int(d))
    if isinstance(d, str) and d:
        return d
    return "?"


def format_shape(shape) -> str:
    """(N, 3, 224, 224)-style text; dynamic dims print their name or '?'."""
    dims = [_fmt_dim(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _normalize_specs(input_specs: InputSpecs) -> dict[str, tuple[tuple, np.dtype]]:
    if not input_specs:
        raise ValueError("input_specs is empty: the model needs at least one input")
    out = {}
    for name, spec in input_specs.items():
        try:
            shape, dtype = spec
            out[str(name)] = (tuple(shape), np.dtype(dtype))
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad input spec for {name!r}: {spec!r} ({e})") from None
    return out


def _list(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


class _Checker:
    """Turns chunks into checked samples for a set of input specs."""

    def __init__(self, specs: dict[str, tuple[tuple, np.dtype]], is_images: bool) -> None:
        self.specs = specs
        self.names = list(specs)
        self.is_images = is_images

    def _resolve_names(self, chunk: Chunk) -> dict[str, Any]:
        arrays = chunk.arrays
        if None in arrays:
            if len(self.names) != 1:
                what = "an image" if chunk.kind == "sample" and self.is_images else "one array"
                raise CalibrationError(
                    f"calibration data '{chunk.origin}' holds {what} but the model has "
                    f"{len(self.names)} inputs ({_list(self.names)})",
                    "use .npz files or dicts with one array per input name",
                )
            return {self.names[0]: arrays[None]}
        keys = list(arrays)
        if len(self.names) == 1 and keys == ["arr_0"]:
            return {self.names[0]: arrays["arr_0"]}
        unknown = [k for k in keys if k not in self.specs]
        if unknown:
            raise CalibrationError(
                f"calibration data '{chunk.origin}' has array '{unknown[0]}' but the model's "
                f"inputs are {_list(self.names)}",
                "name the arrays after the model inputs",
            )
        missing = [n for n in self.names if n not in arrays]
        if missing:
            have = _list(keys) if keys else "nothing"
            raise CalibrationError(
                f"calibration data '{chunk.origin}' has no array for input '{missing[0]}' "
                f"(it has {have}; the model's inputs are {_list(self.names)})",
                "give one array per model input",
            )
        return {n: arrays[n] for n in self.names}

    def _shape_error(self, name, arr_shape, origin, detail, hint) -> CalibrationError:
        spec_shape = self.specs[name][0]
        return CalibrationError(
            f"calibration array '{name}' has shape {tuple(arr_shape)} but input '{name}' "
            f"expects {format_shape(spec_shape)}: {detail} (in {origin})",
            hint,
        )

    def _check_sample_shape(self, name, sample_shape, arr_shape, origin, kind) -> None:
        spec_shape = self.specs[name][0]
        want = spec_shape[1:]
        if self.is_images:
            hint = f"set the preprocess resize/crop/layout to give {format_shape(want)} samples"
        else:
            hint = f"reshape the data to {format_shape(spec_shape)} (first axis: samples)"
        for k, (g, w) in enumerate(zip(sample_shape, want), start=1):
            if _is_fixed(w) and g != int(w):
                if kind == "sample":
                    detail = f"axis {k - 1} of the sample is {g}, not {int(w)}"
                else:
                    detail = f"axis {k} is {g}, not {int(w)}"
                raise self._shape_error(name, arr_shape, origin, detail, hint)

    def _check_dtype(self, name, arr: np.ndarray, origin) -> None:
        want = self.specs[name][1]
        got = arr.dtype
        if got == want:
            return
        ok = got.kind in "biuf" and np.can_cast(got, want, casting="same_kind")
        if want.kind == "b":
            ok = got.kind == "b"
        if not ok:
            raise CalibrationError(
                f"calibration array '{name}' has dtype {got} but input '{name}' expects {want} "
                f"(in {origin})",
                f"convert the data, e.g. with .astype(numpy.{want})",
            )

    def samples(self, chunk: Chunk) -> Iterator[dict[str, np.ndarray]]:
        arrays = self._resolve_names(chunk)
        modes: dict[str, str] = {}
        prepared: dict[str, np.ndarray] = {}
        for name, raw in arrays.items():
            arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
            if arr.dtype.kind not in "biuf":
                raise CalibrationError(
                    f"calibration array '{name}' has dtype {arr.dtype}, not a number type "
                    f"(in {chunk.origin})",
                    "give numeric numpy arrays",
                )
            spec_shape = self.specs[name][0]
            rank = len(spec_shape)
            if chunk.kind == "batch":
                mode = "batch" if arr.ndim == rank else None
                detail = (
                    f"the first axis counts samples, so each sample is "
                    f"{format_shape(arr.shape[1:])}, not {format_shape(spec_shape[1:])}"
                )
            elif chunk.kind == "sample":
                mode = "sample" if arr.ndim == rank - 1 else None
                detail = f"one sample must be {format_shape(spec_shape[1:])}"
            else:
                mode = "batch" if arr.ndim == rank else "sample" if arr.ndim == rank - 1 else None
                detail = (
                    f"give one sample {format_shape(spec_shape[1:])} or a batch "
                    f"{format_shape(spec_shape)}"
                )
            if mode is None:
                hint = (
                    f"set the preprocess layout/color to give {format_shape(spec_shape[1:])} samples"
                    if self.is_images
                    else f"reshape the data to {format_shape(spec_shape)} (first axis: samples)"
                )
                raise self._shape_error(name, arr.shape, chunk.origin, detail, hint)
            sample_shape = arr.shape[1:] if mode == "batch" else arr.shape
            self._check_sample_shape(name, sample_shape, arr.shape, chunk.origin, mode)
            self._check_dtype(name, arr, chunk.origin)
            modes[name] = mode
            prepared[name] = arr
        if len(set(modes.values())) > 1:
            raise CalibrationError(
                f"calibration data '{chunk.origin}' mixes single samples and batches: "
                + ", ".join(f"'{n}' is a {m}" for n, m in modes.items()),
                "give every input either one sample or a batch with the same first axis",
            )
        mode = next(iter(modes.values()))
        if mode == "sample":
            yield prepared
            return
        counts = {n: a.shape[0] for n, a in prepared.items()}
        if len(set(counts.values())) > 1:
            raise CalibrationError(
                f"calibration arrays in '{chunk.origin}' have different sample counts: "
                + ", ".join(f"'{n}' has {c}" for n, c in counts.items()),
                "give every input the same number of samples",
            )
        mapped = [a for a in prepared.values() if isinstance(a, np.memmap)]
        for i in range(next(iter(counts.values()))):
            if not mapped:
                yield {n: a[i] for n, a in prepared.items()}
                continue
            yield {n: np.array(a[i]) if isinstance(a, np.memmap) else a[i] for n, a in prepared.items()}
            if i % 8 == 7:
                for a in mapped:
                    _drop_pages(a, i + 1)


def _drop_pages(a: np.memmap, count: int) -> None:
    """Release the pages of the first `count` samples of a memory-mapped array once they
    are copied: mapped pages that were read count as the process's memory until it ends,
    which would make peak memory grow with the sample count after all."""
    import mmap

    mm = getattr(a, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not a.flags.c_contiguous or a.ndim == 0:
        return
    try:
        base = np.frombuffer(mm, np.uint8).ctypes.data
        end = a.ctypes.data - base + count * a.strides[0]
        length = end - end % mmap.PAGESIZE
        if length > 0:
            mm.madvise(mmap.MADV_DONTNEED, 0, length)
    except (ValueError, OSError, AttributeError):  # an optimisation only
        pass


_WARNED: set = set()


def _warn_once(msg: str, *args) -> None:
    """A build loads its calibration data several times (checks, calibration, evaluation):
    say each thing once."""
    text = msg % args
    if text not in _WARNED:
        _WARNED.add(text)
        log.warning(text)


def _check_orientation(pre, sample_image: str) -> None:
    """resize = [h, w] is height first: landscape images made portrait (or the reverse) are
    usually [w, h] given by mistake, which a model with dynamic H/W would take silently."""
    if pre is None or not isinstance(pre.resize, tuple) or pre.resize[0] == pre.resize[1]:
        return
    try:
        from PIL import Image

        with Image.open(sample_image) as im:
            w, h = im.size
    except Exception:  # undecodable: load_image names the file later
        return
    if h != w and (h > w) != (pre.resize[0] > pre.resize[1]):
        _warn_once("preprocess resize %s is [height, width]: it turns the %dx%d (HxW) image '%s' %s; "
                   "if you meant [width, height], swap the values", list(pre.resize), h, w, sample_image,
                   "portrait" if pre.resize[0] > pre.resize[1] else "landscape")


def _check_finite(sample: dict[str, np.ndarray], index: int, origin: str, specs=None) -> None:
    for name, a in sample.items():
        want = np.dtype(specs[name][1]) if specs and name in specs else None
        if (want is not None and want.kind == "f" and a.dtype.kind == "f" and a.dtype.itemsize > want.itemsize
                and a.size and np.isfinite(a).all()):
            big = float(np.abs(a).max())
            if big > float(np.finfo(want).max):  # the cast to the input's type would make it Inf
                raise CalibrationError(
                    f"calibration input '{name}' has values beyond {want}'s range ({big:.3g}) in sample {index} "
                    f"(from {origin}); the model's input is {want}",
                    f"scale the data into the model's input range, or drop that sample")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            n_nan = int(np.isnan(a).sum())
            n_inf = int(np.isinf(a).sum())
            what = " and ".join(
                s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else "") if s
            )
            raise CalibrationError(
                f"calibration input '{name}' has {what} values in sample {index} (from {origin})",
                "calibration inputs must be finite: clean or drop that sample",
            )


# ---- batching -----------------------------------------------------------------------


class CalibrationBatches(Iterator):
    """Iterator of batches {input_name: array}; made by :func:`load_calibration`.

    batch_size: samples per batch (a batch is shorter at the end, or where the sample
    shape changes). num_samples / num_batches: known totals for a progress bar, or None.
    samples_seen / batches_seen: counts so far.
    """

    def __init__(self, gen, names, batch_size, num_samples, description) -> None:
        self._gen = gen
        self.input_names = list(names)
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.num_batches = None if num_samples is None else math.ceil(num_samples / batch_size)
        self.description = description
        self.samples_seen = 0
        self.batches_seen = 0

    def __iter__(self) -> "CalibrationBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._gen)
        self.batches_seen += 1
        self.samples_seen += next(iter(batch.values())).shape[0]
        return batch

    def __repr__(self) -> str:
        return (
            f"CalibrationBatches({self.description}, batch_size={self.batch_size}, "
            f"num_batches={self.num_batches})"
        )


def _resolve_batch_size(specs, batch_size) -> tuple[int, int | None]:
    fixed = {n: int(s[0][0]) for n, s in specs.items() if len(s[0]) and _is_fixed(s[0][0])}
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise CalibrationError(
                f"calibration batch size must be a positive integer, got {batch_size!r}", None
            )
        batch_size = int(batch_size)
    values = set(fixed.values())
    if len(values) > 1:
        raise CalibrationError(
            "the model's inputs have different fixed batch sizes: "
            + ", ".join(f"'{n}' {b}" for n, b in fixed.items()),
            "export the model with a common or dynamic batch dimension",
        )
    if values:
        (fb,) = values
        if batch_size is not None and batch_size != fb:
            name = next(iter(fixed))
            raise CalibrationError(
                f"calibration batch size {batch_size} does not fit input '{name}', whose batch "
                f"dimension is fixed at {fb}",
                f"use batch size {fb}, or export the model with a dynamic batch dimension",
            )
        return fb, fb
    return batch_size or 1, None


def load_calibration(
    source,
    input_specs: InputSpecs,
    samples: int | None = None,
    batch_size: int | None = None,
    preprocess=None,
) -> CalibrationBatches:
    """Check calibration data against the model inputs and return an iterator of batches.

    source:      path (.npy, .npz, folder of arrays or images, image file), dict of
                 arrays, array, iterable of dicts, or a CalibSource.
    input_specs: {name: (shape, dtype)}; shape dims are ints, or None/str for dynamic
                 dims; the first axis is the batch axis.
    samples:     use at most this many samples (--calib-samples).
    batch_size:  samples per batch; default: the model's fixed batch size, else 1.
    preprocess:  for images: a Preprocess, dict or config file; default: inferred from
                 the input shape (resize to a fixed H x W, scale 1/255, RGB), with a
                 warning.

    The first sample is read and checked now (names, shapes, dtypes, NaN/Inf); the rest
    are read lazily while iterating, with the same checks. Errors are CalibrationError.
    """
    specs = _normalize_specs(input_specs)
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise CalibrationError(
                f"calibration sample limit must be a positive integer, got {samples!r}", None
            )
        samples = int(samples)
    bs, fixed_batch = _resolve_batch_size(specs, batch_size)
    src = open_source(source, preprocess)
    is_images = isinstance(src, ImageFolderSource)
    if preprocess is not None and not is_images:
        load_preprocess(preprocess)  # a broken config is named first
        raise CalibrationError(
            f"a preprocess config is for calibration images, but '{src.description}' holds arrays, "
            "which are fed to the model as they are",
            "drop --preprocess, or give a folder of images",
        )
    if is_images:
        if len(specs) != 1:
            raise CalibrationError(
                f"calibration images can feed only a single-input model, but this one has "
                f"{len(specs)} inputs ({_list(specs)})",
                "use .npz files or dicts with one array per input name",
            )
        if src.preprocess is None:
            (name, (shape, _)), = specs.items()
            src.preprocess = infer_preprocess(shape)
            if src.preprocess is None:
                raise CalibrationError(
                    f"calibration images need a preprocess config: input '{name}' has shape "
                    f"{format_shape(shape)}, which does not look like NCHW or NHWC with 1 or 3 channels",
                    "give preprocess (resize, crop, mean, std, layout, color) as a dict or a .json/.toml file",
                )
            _warn_once(
                "no preprocess given for calibration images; using %s "
                "(no mean/std normalisation: pass a preprocess config if the model expects one)",
                src.preprocess,
            )
    if is_images and src.files:
        _check_orientation(src.preprocess, src.files[0])
    checker = _Checker(specs, is_images)

    def sample_stream() -> Iterator[tuple[dict[str, np.ndarray], str]]:
        for chunk in src.chunks():
            for s in checker.samples(chunk):
                yield s, chunk.origin

    stream = sample_stream()
    first = next(stream, None)
    if first is None:
        raise CalibrationError(f"calibration data '{src.description}' is empty", _SOURCE_HINT)
    _check_finite(first[0], 0, first[1], specs)

    total = src.num_samples
    if samples is not None:
        total = samples if total is None else min(total, samples)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        names = checker.names
        dtypes = {n: specs[n][1] for n in names}
        cur: list[dict[str, np.ndarray]] = []
        cur_shapes = None
        yielded = 0
        dropped = 0

        def flush():
            nonlocal dropped
            if fixed_batch is not None and len(cur) != fixed_batch:
                dropped += len(cur)
                return None
            return {
                n: np.ascontiguousarray(np.stack([s[n] for s in cur]).astype(dtypes[n], copy=False))
                for n in names
            }

        def all_samples():
            yield first
            yield from stream

        index = 0
        for sample, origin in all_samples():
            if samples is not None and index >= samples:
                break
            if index > 0:
                _check_finite(sample, index, origin, specs)
            index += 1
            shapes = tuple(sample[n].shape for n in names)
            if cur and shapes != cur_shapes:  # a new sample shape starts a new batch
                b = flush()
                cur.clear()
                if b is not None:
                    yielded += 1
                    yield b
            cur.append(sample)
            cur_shapes = shapes
            if len(cur) == bs:  # yield at once: never read ahead of the batch
                b = flush()
                cur.clear()
                if b is not None:
                    yielded += 1
                    yield b
        if cur:
            b = flush()
            cur.clear()
            if b is not None:
                yielded += 1
                yield b
        if dropped:
            if yielded == 0:
                raise CalibrationError(
                    f"calibration data gives no full batch: the model's batch size is fixed "
                    f"at {fixed_batch} and {dropped} sample(s) could not fill one",
                    f"give at least {fixed_batch} samples of the same shape",
                )
            log.warning(
                "dropped %d calibration sample(s) that did not fill a batch of %d "
                "(the model's batch size is fixed)",
                dropped,
                fixed_batch,
            )

    return CalibrationBatches(batches(), checker.names, bs, total, src.description)
