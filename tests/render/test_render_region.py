"""Overlays grey out what lies outside a region of interest, and leave the inside as it was."""

from __future__ import annotations

import numpy as np
import pytest

import camlens
from camlens.errors import BadInputError


def _greyed(image: np.ndarray) -> np.ndarray:
    """The grey a pixel gets outside the region, written here from its definition: half its
    BT.601 luma (0.299 R + 0.587 G + 0.114 B), the same in the three channels."""
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat((0.5 * luma)[..., None], 3, axis=-1)


def _assert_greyed(pixels: np.ndarray, image: np.ndarray) -> None:
    """Equal to the grey, rounded; where the exact grey sits on a half (x.5) either neighbour."""
    exact = _greyed(image)
    diff = np.abs(pixels.astype(np.float64) - np.rint(exact))
    on_half = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
    assert (diff[~on_half] == 0).all() and (diff <= 1).all()


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    cam_map = rng.random((12, 16)).astype(np.float32)
    region = np.zeros((12, 16), dtype=bool)
    region[2:9, 3:14] = True
    return image, cam_map, region


def test_outside_is_the_greyed_image_inside_the_plain_overlay() -> None:
    image, cam_map, region = _scene()
    plain = np.asarray(camlens.overlay(image, cam_map, alpha=0.6))
    masked = np.asarray(camlens.overlay(image, cam_map, alpha=0.6, region=region))
    np.testing.assert_array_equal(masked[region], plain[region])
    _assert_greyed(masked[~region], image[~region])
    assert (masked[~region][:, 0] == masked[~region][:, 2]).all()  # no colour left


def test_a_smaller_region_is_scaled_to_the_image_by_nearest_neighbours() -> None:
    image, cam_map, _ = _scene(1)
    small = np.zeros((6, 8), dtype=bool)
    small[1:5, 2:7] = True
    big = np.kron(small, np.ones((2, 2), dtype=bool))  # 2x nearest by hand
    masked = np.asarray(camlens.overlay(image, cam_map, region=small))
    plain = np.asarray(camlens.overlay(image, cam_map))
    np.testing.assert_array_equal(masked[big], plain[big])
    _assert_greyed(masked[~big], image[~big])


def test_a_region_that_is_not_a_2d_bool_mask_is_refused() -> None:
    image, cam_map, region = _scene()
    with pytest.raises(BadInputError, match="2-D bool mask"):
        camlens.overlay(image, cam_map, region=region.astype(float))
    with pytest.raises(BadInputError, match="2-D bool mask"):
        camlens.overlay(image, cam_map, region=region[None])


@pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")  # a top-2 row may be empty
def test_explanation_overlays_and_show_grey_out_each_images_region() -> None:
    torch = pytest.importorskip("torch")
    from nets import TrunkHead

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = torch.tensor(images.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:6, 1:6] = True
    masks[1, 3:8, 0:4] = True
    exp = camlens.GradCAM(TrunkHead().eval(), "trunk.3")(x, camlens.TopK(2), region=masks)
    overlays = exp.overlay(images, alpha=0.5)
    shown = camlens.show(images, exp, alpha=0.5).overlays
    for m, i in enumerate(exp.image_index):
        plain = np.asarray(camlens.overlay(images[i], exp.maps[m], alpha=0.5))
        for picture in (overlays[m], shown[m]):
            pixels = np.asarray(picture)
            np.testing.assert_array_equal(pixels[masks[i]], plain[masks[i]])
            _assert_greyed(pixels[~masks[i]], images[i][~masks[i]])
