"""The command's PNG writer: any reader decodes exactly the pixels written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from camlens.cli._png import encode_png


@pytest.mark.parametrize(
    ("shape", "mode"),
    [((1, 1), "L"), ((3, 5), "L"), ((7, 4, 1), "L"), ((64, 33, 3), "RGB"), ((9, 2, 4), "RGBA")],
)
def test_pillow_reads_back_the_same_pixels(shape: tuple[int, ...], mode: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    pixels[0, 0] = 255  # wrap-around of the Up filter is exercised on both extremes
    with Image.open(io.BytesIO(encode_png(pixels))) as im:
        assert im.mode == mode and im.size == (shape[1], shape[0])
        im.load()  # decoding verifies every chunk's CRC and the zlib stream
        np.testing.assert_array_equal(
            np.asarray(im), pixels.reshape(im.size[1], im.size[0], -1).squeeze()
        )


def test_a_smooth_overlay_compresses() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (128, 1))
    rgb = np.stack([ramp, ramp[::-1], ramp // 2], axis=2)
    assert len(encode_png(rgb)) < rgb.nbytes / 20


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((2, 2), np.float32), np.zeros((0, 3), np.uint8), np.zeros((2, 2, 2), np.uint8)],
)
def test_bad_pixels_are_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_png(pixels)
