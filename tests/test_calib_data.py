"""Calibration data sources, batching and the up-front checks."""

import json

import numpy as np
import pytest
from PIL import Image

from qcompiler.calib import Preprocess, load_calibration, load_preprocess, open_source
from qcompiler.calib.data import format_shape
from qcompiler.errors import CalibrationError

F32 = np.float32
IMG_SPEC = {"x": (("N", 3, 8, 8), F32)}
DYN_SPEC = {"x": ((None, 3, "H", "W"), F32)}


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(F32)


def collect(batches, name="x"):
    return [b[name] for b in batches]


def save_png(path, h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    px = rng.integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(px, mode=mode).save(path)
    return px


# ---- .npy / .npz ---------------------------------------------------------------------


def test_npy_batches_and_limits(tmp_path):
    x = rand(10, 3, 8, 8)
    np.save(tmp_path / "x.npy", x)
    b = load_calibration(tmp_path / "x.npy", IMG_SPEC, batch_size=4)
    assert b.num_samples == 10 and b.num_batches == 3
    out = collect(b)
    assert [o.shape[0] for o in out] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(out), x)
    assert b.samples_seen == 10 and b.batches_seen == 3
    # sample limit
    b = load_calibration(str(tmp_path / "x.npy"), IMG_SPEC, samples=5, batch_size=2)
    assert b.num_batches == 3
    out = collect(b)
    assert [o.shape[0] for o in out] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(out), x[:5])
    # default batch size 1, float64 data cast to the input dtype
    np.save(tmp_path / "d.npy", x.astype(np.float64))
    out = collect(load_calibration(tmp_path / "d.npy", IMG_SPEC))
    assert len(out) == 10 and out[0].shape == (1, 3, 8, 8) and out[0].dtype == F32


def test_npz_multiple_inputs(tmp_path):
    a, m = rand(6, 4), np.arange(6 * 3, dtype=np.int32).reshape(6, 3)
    np.savez(tmp_path / "d.npz", feats=a, ids=m)
    specs = {"feats": ((None, 4), F32), "ids": ((None, 3), np.int64)}
    out = list(load_calibration(tmp_path / "d.npz", specs, batch_size=4))
    assert len(out) == 2
    assert out[0]["ids"].dtype == np.int64  # int32 data widened to the input's int64
    np.testing.assert_array_equal(np.concatenate([o["feats"] for o in out]), a)
    np.testing.assert_array_equal(np.concatenate([o["ids"] for o in out]), m)


def test_npz_unnamed_array_feeds_single_input(tmp_path):
    np.savez(tmp_path / "d.npz", rand(3, 3, 8, 8))
    assert len(collect(load_calibration(tmp_path / "d.npz", IMG_SPEC))) == 3


def test_npz_name_errors(tmp_path):
    np.savez(tmp_path / "d.npz", image=rand(2, 3, 8, 8))
    with pytest.raises(CalibrationError, match=r"has array 'image' but the model's inputs are 'x'"):
        load_calibration(tmp_path / "d.npz", IMG_SPEC)
    specs = {"a": ((None, 2), F32), "b": ((None, 2), F32)}
    np.savez(tmp_path / "e.npz", a=rand(2, 2))
    with pytest.raises(CalibrationError, match=r"no array for input 'b'"):
        load_calibration(tmp_path / "e.npz", specs)
    np.savez(tmp_path / "f.npz", a=rand(2, 2), b=rand(3, 2))
    with pytest.raises(CalibrationError, match="different sample counts"):
        load_calibration(tmp_path / "f.npz", specs)
    np.save(tmp_path / "g.npy", rand(2, 2))
    with pytest.raises(CalibrationError, match=r"holds one array but the model has 2 inputs \('a', 'b'\)"):
        load_calibration(tmp_path / "g.npy", specs)


def test_shape_error_message(tmp_path):
    np.save(tmp_path / "x.npy", rand(3, 32, 32))
    with pytest.raises(CalibrationError) as e:
        load_calibration(tmp_path / "x.npy", {"x": (("N", 3, 224, 224), F32)})
    msg = str(e.value)
    assert msg.startswith(
        "calibration array 'x' has shape (3, 32, 32) but input 'x' expects (N, 3, 224, 224): "
    )
    assert "x.npy" in msg and "hint:" in msg and "\n" not in msg
    np.save(tmp_path / "y.npy", rand(2, 3, 16, 16))
    with pytest.raises(CalibrationError, match=r"axis 2 is 16, not 224"):
        load_calibration(tmp_path / "y.npy", {"x": (("N", 3, 224, 224), F32)})


def test_dtype_error(tmp_path):
    np.save(tmp_path / "x.npy", rand(2, 5))
    with pytest.raises(CalibrationError, match="has dtype float32 but input 'ids' expects int64"):
        load_calibration(tmp_path / "x.npy", {"ids": ((None, 5), np.int64)})
    np.save(tmp_path / "s.npy", np.array([["a"]]))
    with pytest.raises(CalibrationError, match="not a number type"):
        load_calibration(tmp_path / "s.npy", {"ids": ((None, 1), np.int64)})


def test_unreadable_array_file(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(CalibrationError, match=r"cannot read calibration file '.*bad\.npy'"):
        load_calibration(tmp_path / "bad.npy", IMG_SPEC)


# ---- folders of arrays ---------------------------------------------------------------


def test_array_folder_samples_and_batches_sorted(tmp_path):
    x = rand(7, 3, 8, 8)
    np.save(tmp_path / "a0.npy", x[0])  # one sample
    np.save(tmp_path / "a1.npy", x[1:4])  # a batch of 3
    sub = tmp_path / "b"
    sub.mkdir()
    np.savez(sub / "c.npz", x=x[4:6])  # batch in a sub-folder
    np.savez(tmp_path / "c.npz", x=x[6])  # a sample
    (tmp_path / "README.txt").write_text("ignored")
    np.save(tmp_path / ".hidden.npy", x[:1] * 0)  # ignored
    out = collect(load_calibration(tmp_path, IMG_SPEC, batch_size=2))
    got = np.concatenate(out)
    # sorted by relative path: a0.npy, a1.npy, b/c.npz, c.npz
    np.testing.assert_array_equal(got, x)
    assert [o.shape[0] for o in out] == [2, 2, 2, 1]


def test_array_folder_lazy(tmp_path):
    np.save(tmp_path / "0.npy", rand(3, 8, 8))
    (tmp_path / "1.npy").write_bytes(b"garbage")
    b = load_calibration(tmp_path, IMG_SPEC)  # only the first file is read up front
    first = next(b)
    assert first["x"].shape == (1, 3, 8, 8)
    with pytest.raises(CalibrationError, match=r"1\.npy"):
        next(b)


def test_folder_errors(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "nope", IMG_SPEC)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="has no .npy, .npz or image files"):
        load_calibration(empty, IMG_SPEC)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", rand(3, 8, 8))
    save_png(mixed / "b.png", 8, 8)
    with pytest.raises(CalibrationError, match="mixes 1 array files and 1 images"):
        load_calibration(mixed, IMG_SPEC)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(CalibrationError, match="unsupported type '.csv'"):
        load_calibration(tmp_path / "data.csv", IMG_SPEC)


def test_empty_data(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((0, 3, 8, 8), F32))
    with pytest.raises(CalibrationError, match="is empty"):
        load_calibration(tmp_path / "x.npy", IMG_SPEC)
    with pytest.raises(CalibrationError, match="is empty"):
        load_calibration([], IMG_SPEC)
    with pytest.raises(CalibrationError, match="is empty"):
        load_calibration(iter(()), IMG_SPEC)


# ---- images --------------------------------------------------------------------------


def test_image_folder_preprocess_dict(tmp_path):
    px = save_png(tmp_path / "a.png", 8, 8, seed=1)
    save_png(tmp_path / "b.bmp", 8, 8, seed=2)
    smooth = np.broadcast_to((np.arange(8) * 30).astype(np.uint8)[None, :, None], (8, 8, 3))
    Image.fromarray(np.ascontiguousarray(smooth)).save(tmp_path / "c.jpg", quality=95)
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    b = load_calibration(tmp_path, IMG_SPEC, batch_size=2, preprocess=pre)
    assert b.num_samples == 3 and b.num_batches == 2
    out = collect(b)
    assert [o.shape for o in out] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    want = ((px.astype(F32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(out[0][0], want, rtol=1e-6, atol=1e-6)
    want_jpg = ((smooth.astype(F32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    assert np.abs(out[1][0] - want_jpg).mean() < 0.1  # jpeg: close, not exact


def test_image_resize_crop_layout_color(tmp_path):
    px = save_png(tmp_path / "a.png", 12, 20, seed=3)  # h=12, w=20
    pre = Preprocess(resize=8, crop=(6, 8), layout="NHWC", color="BGR", scale=1.0, interpolation="nearest")
    assert pre.output_shape(12, 20) == (6, 8, 3)
    out = collect(load_calibration(tmp_path / "a.png", {"x": ((1, 6, 8, 3), F32)}, preprocess=pre))
    assert out[0].shape == (1, 6, 8, 3)
    resized = np.asarray(Image.fromarray(px).resize((13, 8), Image.NEAREST))  # short side 8
    top, left = (8 - 6) // 2, (13 - 8) // 2
    want = resized[top : top + 6, left : left + 8, ::-1].astype(F32)
    np.testing.assert_array_equal(out[0][0], want)


def test_image_exact_resize_grayscale_and_uint8(tmp_path):
    save_png(tmp_path / "g.png", 10, 7, mode="L")
    pre = {"resize": [4, 5], "color": "gray", "dtype": "uint8", "scale": 1}
    out = collect(load_calibration(tmp_path, {"img": ((None, 1, 4, 5), np.uint8)}, preprocess=pre), "img")
    assert out[0].shape == (1, 1, 4, 5) and out[0].dtype == np.uint8


def test_preprocess_from_json_and_toml_files(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"resize": 8, "crop": 8, "layout": "nchw"}))
    (tmp_path / "p.toml").write_text(
        "# preprocessing\n[preprocess]\nresize = 8\ncrop = [8, 8]\nmean = [0.485, 0.456, 0.406]\n"
        'std = [0.229, 0.224, 0.225]\ncolor = "BGR"\n'
    )
    (tmp_path / "p.txt").write_text("resize = 8\nlayout = NHWC\n")
    a = load_preprocess(tmp_path / "p.json")
    assert (a.resize, a.crop, a.layout) == (8, 8, "NCHW")
    b = load_preprocess(str(tmp_path / "p.toml"))
    assert b.crop == (8, 8) and b.color == "BGR" and b.std[0] == 0.229
    c = load_preprocess(tmp_path / "p.txt")  # TOML-like, bare words
    assert c.layout == "NHWC" and c.resize == 8
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    save_png(imgs / "a.png", 16, 9)
    out = collect(load_calibration(imgs, IMG_SPEC, preprocess=tmp_path / "p.toml"))
    assert out[0].shape == (1, 3, 8, 8)


def test_preprocess_config_errors(tmp_path):
    with pytest.raises(CalibrationError, match="unknown preprocess option 'resise'"):
        load_preprocess({"resise": 8})
    with pytest.raises(CalibrationError, match="layout"):
        load_preprocess({"layout": "CHW"})
    with pytest.raises(CalibrationError, match="'mean' has 2 values"):
        load_preprocess({"mean": [0.1, 0.2]})
    with pytest.raises(CalibrationError, match="'resize' must be"):
        load_preprocess({"resize": [1, 2, 3]})
    with pytest.raises(CalibrationError, match="std"):
        load_preprocess({"std": [0, 1, 1]})
    (tmp_path / "bad.json").write_text("{resize: }")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_preprocess(tmp_path / "bad.json")
    with pytest.raises(CalibrationError, match="does not exist"):
        load_preprocess(tmp_path / "none.json")


def test_images_with_different_sizes_batch_separately(tmp_path):
    for i, (h, w) in enumerate([(8, 8), (8, 8), (6, 10), (8, 8), (8, 8), (8, 8)]):
        save_png(tmp_path / f"{i}.png", h, w, seed=i)
    b = load_calibration(tmp_path, DYN_SPEC, batch_size=2, preprocess={"scale": 1.0})
    shapes = [o.shape for o in collect(b)]
    assert shapes == [(2, 3, 8, 8), (1, 3, 6, 10), (2, 3, 8, 8), (1, 3, 8, 8)]


def test_image_shape_mismatch_and_crop_error(tmp_path):
    save_png(tmp_path / "a.png", 16, 16)
    with pytest.raises(CalibrationError, match=r"expects \(N, 3, 8, 8\).*a\.png.*resize/crop"):
        load_calibration(tmp_path, IMG_SPEC, preprocess={"resize": 12})
    with pytest.raises(CalibrationError, match=r"image '.*a\.png' is 16x16 after resizing, smaller than the crop 20x20"):
        load_calibration(tmp_path, IMG_SPEC, preprocess={"crop": 20})


def test_undecodable_image_names_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff definitely not a jpeg")
    with pytest.raises(CalibrationError, match=r"cannot decode calibration image '.*broken\.jpg'"):
        load_calibration(tmp_path, IMG_SPEC, preprocess={})
    # a later bad image fails while iterating, naming it
    good = tmp_path / "good"
    good.mkdir()
    save_png(good / "a.png", 8, 8)
    (good / "b.png").write_bytes(b"\x89PNG truncated")
    b = load_calibration(good, IMG_SPEC, preprocess={})
    next(b)
    with pytest.raises(CalibrationError, match=r"b\.png"):
        next(b)


def test_images_without_preprocess_use_the_input_shape(tmp_path, caplog):
    save_png(tmp_path / "a.png", 20, 30)
    with caplog.at_level("WARNING", logger="qcompiler.calib"):
        out = collect(load_calibration(tmp_path, IMG_SPEC))
    assert out[0].shape == (1, 3, 8, 8) and 0 <= out[0].min() and out[0].max() <= 1
    assert "no preprocess given" in caplog.text
    nhwc = collect(load_calibration(tmp_path, {"x": ((1, 5, 6, 3), F32)}))
    assert nhwc[0].shape == (1, 5, 6, 3)
    with pytest.raises(CalibrationError, match="need a preprocess config"):
        load_calibration(tmp_path, {"x": ((None, 7, 8, 8), F32)})


def test_images_need_single_input(tmp_path):
    save_png(tmp_path / "a.png", 8, 8)
    specs = {"x": ((1, 3, 8, 8), F32), "y": ((1, 2), F32)}
    with pytest.raises(CalibrationError, match="single-input model"):
        load_calibration(tmp_path, specs, preprocess={})


# ---- iterables and dicts ------------------------------------------------------------


def test_iterable_of_dicts_samples_and_batches():
    x = rand(5, 3, 8, 8)
    items = [{"x": x[0]}, {"x": x[1:3]}, x[3], {"x": x[4:5]}]  # sample, batch, bare array, batch
    out = collect(load_calibration(items, IMG_SPEC, batch_size=3))
    np.testing.assert_array_equal(np.concatenate(out), x)
    assert [o.shape[0] for o in out] == [3, 2]


def test_dict_of_arrays_source():
    x = rand(4, 2)
    out = collect(load_calibration({"v": x}, {"v": ((None, 2), F32)}, batch_size=3), "v")
    assert [o.shape for o in out] == [(3, 2), (1, 2)]
    out = collect(load_calibration(x, {"v": ((None, 2), F32)}), "v")
    assert len(out) == 4


def test_generator_is_read_lazily():
    consumed = []

    def gen():
        for i in range(100):
            consumed.append(i)
            yield {"x": rand(3, 8, 8, seed=i)}

    b = load_calibration(gen(), IMG_SPEC, samples=10, batch_size=4)
    assert consumed == [0]  # only the first sample is peeked
    assert b.num_batches == 3
    assert [o.shape[0] for o in collect(b)] == [4, 4, 2]
    assert len(consumed) <= 11


def test_dynamic_dims_different_sizes_split_batches():
    items = [{"x": rand(3, h, w)} for h, w in [(4, 4), (4, 4), (4, 4), (5, 6), (4, 4)]]
    shapes = [o.shape for o in collect(load_calibration(items, DYN_SPEC, batch_size=2))]
    assert shapes == [(2, 3, 4, 4), (1, 3, 4, 4), (1, 3, 5, 6), (1, 3, 4, 4)]


def test_iterable_errors():
    with pytest.raises(CalibrationError, match="item 0 is a list"):
        load_calibration([[1, 2]], IMG_SPEC)
    with pytest.raises(CalibrationError, match="not supported"):
        load_calibration(42, IMG_SPEC)
    specs = {"a": ((None, 2), F32), "b": ((None, 2), F32)}
    with pytest.raises(CalibrationError, match="mixes single samples and batches"):
        load_calibration([{"a": rand(2), "b": rand(3, 2)}], specs)
    with pytest.raises(CalibrationError, match=r"give one sample \(2,\) or a batch \(\?, 2\)"):
        load_calibration([{"a": rand(2, 2, 2), "b": rand(2)}], specs)


# ---- NaN / Inf -----------------------------------------------------------------------


def test_nan_in_first_sample_fails_up_front(tmp_path):
    x = rand(4, 3, 8, 8)
    x[0, 1, 2, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(CalibrationError, match=r"input 'x' has 1 NaN values in sample 0 \(from .*x\.npy\)"):
        load_calibration(tmp_path / "x.npy", IMG_SPEC)


def test_inf_in_later_sample_fails_while_iterating():
    x = rand(4, 3, 8, 8)
    x[2, 0, 0, 0] = np.inf
    x[2, 0, 0, 1] = np.nan
    b = load_calibration({"x": x}, IMG_SPEC, batch_size=1)
    next(b)
    next(b)
    with pytest.raises(CalibrationError, match=r"1 NaN and 1 Inf values in sample 2"):
        next(b)
    # integer inputs are not checked (and cannot hold NaN)
    ids = np.arange(6).reshape(3, 2)
    assert len(list(load_calibration({"i": ids}, {"i": ((None, 2), np.int64)}))) == 3


# ---- batch size rules ----------------------------------------------------------------


def test_fixed_batch_dimension(tmp_path, caplog):
    x = rand(5, 3, 8, 8)
    spec = {"x": ((2, 3, 8, 8), F32)}
    b = load_calibration({"x": x}, spec)  # batch size taken from the model
    assert b.batch_size == 2
    with caplog.at_level("WARNING", logger="qcompiler.calib"):
        out = collect(b)
    assert [o.shape[0] for o in out] == [2, 2] and "dropped 1" in caplog.text
    with pytest.raises(CalibrationError, match="batch size 4 does not fit input 'x', whose batch dimension is fixed at 2"):
        load_calibration({"x": x}, spec, batch_size=4)
    with pytest.raises(CalibrationError, match="no full batch"):
        list(load_calibration({"x": x[:1]}, spec))


def test_bad_arguments():
    x = rand(2, 3, 8, 8)
    with pytest.raises(CalibrationError, match="sample limit"):
        load_calibration({"x": x}, IMG_SPEC, samples=0)
    with pytest.raises(CalibrationError, match="batch size"):
        load_calibration({"x": x}, IMG_SPEC, batch_size=0)


def test_format_shape_and_open_source(tmp_path):
    assert format_shape(("N", 3, None, 224)) == "(N, 3, ?, 224)"
    assert format_shape((5,)) == "(5,)"
    np.save(tmp_path / "x.npy", rand(2, 2))
    src = open_source(tmp_path / "x.npy")
    assert src.num_samples == 2 and "x.npy" in repr(src)
    assert open_source(src) is src
