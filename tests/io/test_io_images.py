"""camlens.io: finding and reading images, and preprocessing them as models were trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camlens
from camlens.io import Preprocess, find_images, image_key, read_image


def _save(path: Path, pixels: np.ndarray, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **options)
    return path


def test_find_images_expands_folders_globs_and_files(tmp_path: Path) -> None:
    px = np.zeros((4, 4, 3), np.uint8)
    a = _save(tmp_path / "a.png", px)
    b = _save(tmp_path / "sub" / "deep" / "b.JPG", px)
    c = _save(tmp_path / "sub" / "c.tif", px)
    (tmp_path / "sub" / "readme.md").write_text("x")
    odd = tmp_path / "picture.dat"
    odd.write_bytes(b"named explicitly, so taken")
    found = find_images([tmp_path / "sub", str(tmp_path / "*.png"), odd, a, "nope/*.jpg", "x.jpg"])
    assert found.images == (c, b, a, odd)  # folder sorted by path, then the glob; a once
    assert found.ignored == (tmp_path / "sub" / "readme.md",)
    assert found.missing == ("nope/*.jpg", "x.jpg")


def test_read_image_gray_rgba_16bit_and_orientation(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = read_image(_save(tmp_path / "g.png", gray))
    assert rgb.shape == (3, 4, 3) and (rgb == gray[..., None]).all()
    assert read_image(tmp_path / "g.png", channels=1)[..., 0].tolist() == gray.tolist()

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7
    assert (read_image(_save(tmp_path / "a.png", rgba)) == [200, 0, 0]).all()

    deep = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    got = read_image(_save(tmp_path / "d.png", deep))[..., 0]
    assert got.tolist() == [[0, 255], [128, 1]]  # 16 bits scaled to 8

    # EXIF orientation 6 (rotate 90 degrees clockwise to show upright): 2x3 stored -> 3x2 shown.
    stored = np.zeros((2, 3, 3), np.uint8)
    stored[0, 0] = 255  # top-left stored -> top-right shown
    exif = Image.Exif()
    exif[0x0112] = 6
    shown = read_image(_save(tmp_path / "r.jpg", stored, exif=exif, quality=100))
    assert shown.shape == (3, 2, 3)
    assert shown[0, 1].mean() > 200 and shown[0, 0].mean() < 60


def test_read_image_downscales_large_pictures(tmp_path: Path) -> None:
    big = np.zeros((3000, 2000, 3), np.uint8)
    big[:, 1000:] = 255
    path = _save(tmp_path / "big.jpg", big, quality=95)
    small = read_image(path, max_size=300)
    assert small.shape == (300, 200, 3)
    assert small[:, :95].mean() < 5 and small[:, 105:].mean() > 250  # the halves stay halves
    assert read_image(path, max_size=5000).shape == (3000, 2000, 3)  # never upscaled


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"hello, not an image", "not an image"), (None, "corrupt or truncated")],
)
def test_unreadable_files_raise_a_clear_error(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "bad.jpg"
    if content is None:
        good = _save(tmp_path / "good.jpg", np.full((64, 64, 3), 90, np.uint8)).read_bytes()
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(camlens.BadInputError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_image_key_is_a_safe_unique_file_name() -> None:
    names = ["../../etc/passwd", "a/b/c.jpg", "a/c/c.jpg", "<script>.png", "..", ".hidden.jpg"]
    keys = [image_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert "/" not in key and "\\" not in key and not key.startswith(".")
        assert Path(key).name == key
    assert image_key("a/b/c.jpg") == image_key("a/b/c.jpg")  # stable across runs


def test_presets_by_hand() -> None:
    px = np.array([[[255, 0, 51]]], np.uint8)  # one pixel, RGB
    x = Preprocess("imagenet", size=(1, 1))([px])
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    assert x.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-6)
    tf = Preprocess("tf", size=(1, 1), layout="NHWC")([px])
    assert tf.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(tf[0, 0, 0], [1.0, -1.0, 51 / 127.5 - 1], rtol=1e-6)
    caffe = Preprocess("caffe", size=(1, 1))([px])  # BGR, minus the mean, no scaling
    np.testing.assert_allclose(caffe[0, :, 0, 0], [51 - 103.939, 0 - 116.779, 255 - 123.68])
    none = Preprocess("none", size=(1, 1))([px])
    np.testing.assert_array_equal(none[0, :, 0, 0], [255, 0, 51])
    custom = Preprocess("imagenet", size=(1, 1), mean=(0.5,) * 3, std=(0.5,) * 3)([px])
    np.testing.assert_allclose(custom[0, :, 0, 0], [1, -1, 0.4 - 1], rtol=1e-6)
    gray = Preprocess("unit", size=(1, 1), channels=1)([px])
    assert gray.shape == (1, 1, 1, 1)  # luma: (255 * 299 + 51 * 114) / 1000 = 82
    np.testing.assert_allclose(gray[0, 0, 0, 0], 82 / 255, atol=1 / 255)
    assert Preprocess("tf").describe()["channel_order"] == "RGB"
    assert Preprocess("caffe").describe()["channel_order"] == "BGR"


def test_preprocess_resizes_the_whole_picture() -> None:
    left_dark = np.zeros((100, 300, 3), np.uint8)
    left_dark[:, 150:] = 255
    x = Preprocess("unit", size=(10, 20))([left_dark, np.full((7, 7, 1), 255, np.uint8)])
    assert x.shape == (2, 3, 10, 20)
    assert x[0, :, :, :9].max() < 0.05 and x[0, :, :, 11:].min() > 0.95  # squashed, not cropped
    assert (x[1] == 1).all()  # a gray picture fills the three channels


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "vgg"}, "unknown preprocessing preset"),
        ({"size": (0, 3)}, "size"),
        ({"mean": (1, 2)}, "mean needs 1 or 3 values"),
        ({"std": (0.0,)}, "zeros"),
        ({"layout": "CHW"}, "layout"),
        ({"channels": 4}, "channels"),
    ],
)
def test_bad_preprocessing_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(camlens.BadInputError, match=message):
        Preprocess(**kwargs)
