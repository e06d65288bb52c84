"""Notebook display: a one-line repr without array values, and an HTML grid of the maps."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

import camlens
from camlens.explanation import Explanation


def _explanation(
    n_images: int = 2, t: int = 1, *, relu: bool = True, target: str = "top-1 class"
) -> Explanation:
    m = n_images * t
    maps = np.zeros((m, 8, 10), np.float32)
    maps[:, :4] = 1.0  # top half at the scale's top, bottom half at its bottom
    if not relu:
        maps[:, 4:] = -1.0
    return Explanation(
        maps=maps,
        raw=np.zeros((m, 2, 3), np.float32),
        scores=np.arange(m, dtype=np.float64) + 0.5,
        image_index=np.repeat(np.arange(n_images, dtype=np.int64), t),
        units=np.arange(m, dtype=np.int64) + 7,
        signs=np.ones(m),
        target=target,
        target_kind="TopK",
        score_kind="model output",
        layers=("features.3",),
        method="gradcam",
        input_size=(8, 10),
        relu=relu,
        framework="torch",
    )


def _pictures(page: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))) for data in found]


def _jet(value: float) -> np.ndarray:
    return np.round(np.asarray(colormaps["jet"](value)[:3]) * 255)


def test_repr_is_one_short_line_without_array_values() -> None:
    exp = _explanation(n_images=3, t=2)
    text = repr(exp)
    assert "\n" not in text and len(text) < 200
    assert "array" not in text and "0.5" not in text
    assert text == (
        "Explanation(method='gradcam', layers='features.3', target='top-1 class', "
        "3 image(s) x 2 target(s), maps 8x10, torch)"
    )
    part = repr(exp.image(1))
    assert part.startswith("ImageExplanation(image 1, method='gradcam'") and "[9, 10]" in part


def test_html_shows_each_row_coloured_with_its_unit_and_score() -> None:
    page = _explanation(n_images=2, t=2)._repr_html_()
    pictures = _pictures(page)
    assert len(pictures) == 4
    for picture in pictures:
        assert picture.shape == (8, 10, 3)
        np.testing.assert_allclose(picture[0, 0], _jet(1.0), atol=1)
        np.testing.assert_allclose(picture[-1, -1], _jet(0.0), atol=1)
    assert "image 1 · unit 10" in page and "model output 3.5" in page
    assert "array(" not in page and "<script" not in page


def test_relu_false_maps_put_zero_at_the_scales_middle() -> None:
    picture = _pictures(_explanation(relu=False)._repr_html_())[0]
    np.testing.assert_allclose(picture[0, 0], _jet(1.0), atol=1)
    np.testing.assert_allclose(picture[-1, -1], _jet(0.0), atol=1)  # -1: the scale's bottom


def test_html_escapes_text_and_counts_the_rows_not_shown() -> None:
    exp = _explanation(n_images=30, target="<b>score</b>")
    page = exp._repr_html_()
    assert "<b>score</b>" not in page and "&lt;b&gt;score&lt;/b&gt;" in page
    assert len(_pictures(page)) == 24 and "… and 6 more row(s)" in page


def test_show_draws_the_librarys_own_overlays() -> None:
    exp = _explanation(n_images=2, t=2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 8, 10, 3), dtype=np.uint8)
    shown = camlens.show(images, exp, alpha=0.4, max_rows=3)
    assert len(shown.overlays) == 3
    for m, picture in enumerate(shown.overlays):
        expected = camlens.overlay(images[m // 2], exp.maps[m], alpha=0.4)
        np.testing.assert_array_equal(np.asarray(picture), np.asarray(expected))
    pictures = _pictures(shown._repr_html_())
    np.testing.assert_array_equal(pictures[2], np.asarray(shown.overlays[2]))
    assert "1 more row(s)" in shown._repr_html_()


def test_show_refuses_a_different_number_of_images_and_bad_options() -> None:
    exp = _explanation(n_images=2)
    images = np.zeros((3, 8, 10, 3), np.uint8)
    with pytest.raises(camlens.BadInputError, match="3 images for an explanation of 2"):
        camlens.show(images, exp)
    with pytest.raises(camlens.BadInputError):
        camlens.show(images[:2], exp, alpha=2.0)
    with pytest.raises(camlens.BadInputError):
        camlens.show(images[:2], exp, max_rows=0)
