"""Tests of camlens.render: image normalisation, colouring, blending and grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
from PIL import Image

from camlens.errors import BadInputError, CamlensError
from camlens.render import colorize, grid, overlay, save_grid, to_rgb_float


def _jet(value: float) -> np.ndarray:
    """Return matplotlib's jet colour of ``value`` as floats in [0, 1], RGB."""
    return np.asarray(matplotlib.colormaps["jet"](value))[:3]


class _FakeTensor:
    """A torch-like tensor: ``.detach().cpu().numpy()`` and nothing NumPy can read directly."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def detach(self) -> _FakeTensor:
        return self

    def cpu(self) -> _FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._array

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise AssertionError("render must call .detach().cpu().numpy() on tensors")


@pytest.fixture
def picture() -> np.ndarray:
    """A non-square uint8 RGB picture with varied values in every channel."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)


@pytest.fixture
def ramp_map() -> np.ndarray:
    """A (12, 17) map running from 0 to 1 along the columns."""
    return np.tile(np.linspace(0.0, 1.0, 17, dtype=np.float32), (12, 1))


# ---------------------------------------------------------------------------------- exact blend


def test_gray_100_over_zero_map_blends_to_the_hand_computed_pixel() -> None:
    image = np.full((5, 7, 3), 100, dtype=np.uint8)
    result = np.asarray(overlay(image, np.zeros((5, 7)), cmap="jet", alpha=0.5))
    expected = np.rint(0.5 * 100 / 255 * 255 + 0.5 * 255 * _jet(0.0)).astype(np.uint8)
    assert result.shape == (5, 7, 3)
    assert (result == expected).all()


def test_blend_with_a_mid_map_value_matches_the_colormap() -> None:
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    result = np.asarray(overlay(image, np.full((4, 4), 0.75), alpha=0.25))
    expected = np.rint(0.75 * 200 + 0.25 * 255 * _jet(0.75)).astype(np.uint8)
    assert (result == expected).all()


def test_alpha_zero_returns_the_image_itself(picture: np.ndarray, ramp_map: np.ndarray) -> None:
    result = overlay(picture, ramp_map, alpha=0.0)
    assert result.mode == "RGB"
    assert (np.asarray(result) == picture).all()


def test_alpha_one_returns_the_pure_colormap(picture: np.ndarray, ramp_map: np.ndarray) -> None:
    result = np.asarray(overlay(picture, ramp_map, alpha=1.0, cmap="viridis"))
    assert (result == colorize(ramp_map, "viridis")).all()
    colours = np.asarray(matplotlib.colormaps["viridis"](ramp_map))[..., :3]
    assert (result == np.rint(colours * 255)).all()


def test_map_values_outside_unit_range_are_clipped(picture: np.ndarray) -> None:
    wild = np.full((12, 17), 3.0)
    wild[:, :8] = -2.0
    clipped = np.clip(wild, 0.0, 1.0)
    assert (np.asarray(overlay(picture, wild)) == np.asarray(overlay(picture, clipped))).all()


# ------------------------------------------------------------------- one picture, many spellings


def test_the_same_picture_in_every_form_gives_the_same_overlay(
    picture: np.ndarray, ramp_map: np.ndarray
) -> None:
    reference = np.asarray(overlay(picture, ramp_map))
    unit = picture.astype(np.float32) / 255
    forms = {
        "float [0, 1] HWC": unit,
        "float [0, 255] HWC": picture.astype(np.float64),
        "uint8 CHW": np.transpose(picture, (2, 0, 1)),
        "float CHW": np.transpose(unit, (2, 0, 1)),
        "uint8 RGBA": np.concatenate([picture, np.full((12, 17, 1), 7, np.uint8)], axis=-1),
        "uint16 HWC": picture.astype(np.uint16) * 257,
        "duck-typed tensor": _FakeTensor(np.transpose(unit, (2, 0, 1))),
        "PIL image": Image.fromarray(picture),
    }
    for name, form in forms.items():
        result = np.asarray(overlay(form, _FakeTensor(ramp_map)))
        assert (result == reference).all(), name


def test_grayscale_image_gives_an_rgb_overlay(ramp_map: np.ndarray) -> None:
    gray = np.arange(12 * 17, dtype=np.uint8).reshape(12, 17)
    result = overlay(gray, ramp_map, alpha=0.0)
    assert result.mode == "RGB"
    assert result.size == (17, 12)  # PIL sizes are (W, H)
    pixels = np.asarray(result)
    for channel in range(3):
        assert (pixels[..., channel] == gray).all()
    for layout in (gray[:, :, None], gray[None, :, :]):
        assert (np.asarray(overlay(layout, ramp_map, alpha=0.0)) == pixels).all()


def test_imagenet_normalised_image_is_min_max_scaled(picture: np.ndarray) -> None:
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    chw = np.transpose(picture, (2, 0, 1)) / 255.0
    normalised = ((chw - mean) / std).astype(np.float32)
    assert normalised.min() < 0
    result = np.asarray(overlay(normalised, np.zeros((12, 17)), alpha=0.0))
    lowest = np.unravel_index(np.argmin(normalised), normalised.shape)
    highest = np.unravel_index(np.argmax(normalised), normalised.shape)
    assert result[lowest[1], lowest[2], lowest[0]] == 0
    assert result[highest[1], highest[2], highest[0]] == 255


def test_to_rgb_float_value_rules() -> None:
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    out = to_rgb_float(unit)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    assert np.allclose(out[..., 1], unit)
    assert np.allclose(to_rgb_float(unit * 255)[..., 0], unit)
    assert np.allclose(to_rgb_float(unit * 255 - 3)[..., 2], unit)  # min-max
    assert np.allclose(to_rgb_float(unit * 1.0000002)[..., 0], unit)  # rounding, not 0..255
    assert (to_rgb_float(np.array([[True, False]]))[0, :, 0] == [1.0, 0.0]).all()
    assert np.allclose(to_rgb_float(np.array([[0, 255]]))[0, :, 0], [0.0, 1.0])  # int64


def test_constant_image_outside_the_ranges_is_finite() -> None:
    out = to_rgb_float(np.full((3, 4, 3), -1.7, dtype=np.float32))
    assert np.isfinite(out).all()
    assert (out == 0.0).all()


def test_channels_last_wins_when_both_ends_could_be_channels() -> None:
    image = np.zeros((3, 4, 3), dtype=np.uint8)
    assert to_rgb_float(image).shape == (3, 4, 3)
    assert to_rgb_float(np.zeros((3, 4, 5), dtype=np.uint8)).shape == (4, 5, 3)


# --------------------------------------------------------------------------------------- resize


def test_small_map_is_resized_to_a_larger_non_square_image() -> None:
    image = np.full((60, 90, 3), 128, dtype=np.uint8)
    small = np.zeros((6, 9), dtype=np.float32)
    small[:, 5:] = 1.0  # right part hot
    result = overlay(image, small, alpha=1.0)
    assert result.size == (90, 60)
    pixels = np.asarray(result)
    cold = np.rint(255 * _jet(0.0))
    hot = np.rint(255 * _jet(1.0))
    assert (pixels[:, 0] == cold).all()
    assert (pixels[:, -1] == hot).all()
    assert (pixels[0] == pixels[-1]).all()  # no change along the rows: the map does not vary
    # Bilinear, not nearest: colours between the two ends appear at the edge.
    assert len({tuple(p) for p in pixels[30]}) > 2


def test_resized_map_matches_pil_bilinear_resampling() -> None:
    image = np.zeros((60, 90), dtype=np.uint8)
    small = np.random.default_rng(1).random((6, 9)).astype(np.float32)
    expected_map = np.asarray(
        Image.fromarray(small).resize((90, 60), Image.Resampling.BILINEAR), dtype=np.float32
    )
    assert (np.asarray(overlay(image, small, alpha=1.0)) == colorize(expected_map)).all()


# ----------------------------------------------------------------------------------- colorize


def test_colorize_scales_between_vmin_and_vmax() -> None:
    values = np.array([[-1.0, 0.0, 1.0, 2.0]])
    out = colorize(values, "gray", vmin=0.0, vmax=2.0)
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    gray = matplotlib.colormaps["gray"]
    expected = [np.rint(255 * np.asarray(gray(v))[:3]) for v in (0.0, 0.0, 0.5, 1.0)]
    assert (out[0] == np.array(expected)).all()


def test_colorize_rejects_empty_value_range() -> None:
    with pytest.raises(BadInputError, match="vmin"):
        colorize(np.zeros((2, 2)), vmin=1.0, vmax=1.0)


# --------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("image", "cam_map", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((8, 8)), {}, r"batch.*one image.*images\[0\]"),
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), np.nan), {}, "NaN"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), {"alpha": 1.5}, r"alpha.*\[0, 1\].*1.5"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), {"cmap": "jte"}, "'jte'.*'jet'"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8)), {}, r"2-D.*\(1, 8, 8\).*maps\[i\]"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros(8), {}, r"2-D.*\(8,\)"),
        (np.full((8, 8), np.inf), np.zeros((8, 8)), {}, "infinite"),
        (np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8)), {}, r"\(8, 8, 2\).*C in"),
        (np.zeros(8, np.uint8), np.zeros((8, 8)), {}, "1 dimension"),
    ],
    ids=[
        "batch",
        "nan-map",
        "alpha",
        "cmap-typo",
        "map-3d",
        "map-1d",
        "inf-image",
        "2-channels",
        "1d",
    ],
)
def test_bad_inputs_raise_helpful_errors(
    image: Any, cam_map: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadInputError, match=message) as info:
        overlay(image, cam_map, **kwargs)
    assert isinstance(info.value, CamlensError)


# ------------------------------------------------------------------------------------------ grid


def test_grid_height_grows_with_the_rows(picture: np.ndarray, ramp_map: np.ndarray) -> None:
    one = grid([picture], ramp_map[None], titles=["tabby cat 0.93"], dpi=50)
    three = grid(np.stack([picture] * 3), np.stack([ramp_map] * 3), dpi=50)
    assert one.mode == three.mode == "RGB"
    assert one.size[0] == three.size[0]
    assert three.size[1] > 2 * one.size[1]


def test_grid_accepts_mixed_image_forms(picture: np.ndarray, ramp_map: np.ndarray) -> None:
    images = [picture, np.transpose(picture, (2, 0, 1)) / 255.0, picture[:, :, 0]]
    result = grid(images, [ramp_map, _FakeTensor(ramp_map), ramp_map[:6, :9]], dpi=40)
    assert result.size[0] > 0 and result.size[1] > 0


def test_grid_mismatched_lengths_are_explained(picture: np.ndarray, ramp_map: np.ndarray) -> None:
    with pytest.raises(BadInputError, match="2 images and 1 maps"):
        grid([picture, picture], ramp_map[None])
    with pytest.raises(BadInputError, match="1 titles for 2 rows"):
        grid([picture, picture], [ramp_map, ramp_map], titles=["only one"])
    with pytest.raises(BadInputError, match="at least one"):
        grid([], [])
    with pytest.raises(BadInputError, match=r"batch axis.*maps\[None\]"):
        grid([picture], ramp_map)


def test_save_grid_writes_a_readable_png(
    tmp_path: Path, picture: np.ndarray, ramp_map: np.ndarray
) -> None:
    path = tmp_path / "grid.png"
    save_grid(path, [picture, picture], [ramp_map, 1 - ramp_map], titles=["a 0.5", "b 0.5"], dpi=40)
    with Image.open(path) as written:
        assert written.format == "PNG"
        expected = grid(
            [picture, picture], [ramp_map, 1 - ramp_map], titles=["a 0.5", "b 0.5"], dpi=40
        )
        assert written.size == expected.size
        assert (np.asarray(written.convert("RGB")) == np.asarray(expected)).all()


# ----------------------------------------------------------------------------------- lightness


def test_render_does_not_import_matplotlib_or_frameworks_at_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, camlens.render; "
        "heavy = {'matplotlib', 'torch', 'tensorflow', 'jax', 'keras'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["jet", "viridis", "turbo", "gray"])
def test_overlay_colours_equal_matplotlibs_own_call(name: str) -> None:
    # Every value, including the edges 0 and 1 and just below 1, in float32 maps.
    rng = np.random.default_rng(3)
    cam = rng.random((40, 50)).astype(np.float32)
    cam[0, :3] = [0.0, 1.0, np.nextafter(np.float32(1), np.float32(0))]
    pure = np.asarray(overlay(np.zeros((40, 50, 3), np.uint8), cam, cmap=name, alpha=1.0))
    expected = np.rint(np.asarray(matplotlib.colormaps[name](cam))[..., :3] * 255)
    np.testing.assert_array_equal(pure, expected.astype(np.uint8))
