"""auto_fov and region masks on synthetic pictures with known answers."""

from __future__ import annotations

import numpy as np
import pytest

import camlens
from camlens.errors import BadInputError
from camlens.region import region_masks


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.asarray((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2)


@pytest.mark.parametrize(
    ("shape", "centre", "radius"), [((64, 80), (30.0, 42.0), 25.0), ((50, 50), (24.5, 24.5), 20.0)]
)
def test_auto_fov_finds_a_synthetic_disc_on_black(shape, centre, radius):
    truth = _disc(shape, centre, radius)
    rng = np.random.default_rng(0)
    photo = np.zeros((*shape, 3))
    # A textured retina: bright on average with darker "vessels", plus faint specks outside.
    photo[truth] = rng.uniform(80, 220, size=(int(truth.sum()), 3))
    photo[~truth] = rng.uniform(0, 8, size=(int((~truth).sum()), 3))
    mask = camlens.auto_fov(photo)
    assert mask.dtype == np.bool_ and mask.shape == shape
    # Equal within a pixel or two: every disagreeing pixel is within 2 px of the true edge.
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    edge_distance = np.abs(np.hypot(yy - centre[0], xx - centre[1]) - radius)
    assert np.all(edge_distance[mask != truth] <= 2.0)
    assert abs(int(mask.sum()) - int(truth.sum())) <= 2 * np.pi * radius * 1.0


def test_auto_fov_refuses_a_uniform_picture():
    with pytest.raises(BadInputError, match="no lit field of view"):
        camlens.auto_fov(np.zeros((10, 10, 3)))


def test_region_masks_broadcast_and_refuse():
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 1:4] = True
    assert region_masks(mask, 3, (4, 5)).shape == (3, 4, 5)
    with pytest.raises(BadInputError, match="bool mask"):
        region_masks(mask.astype(int), 3, (4, 5))
    with pytest.raises(BadInputError, match="Resize the mask"):
        region_masks(mask, 3, (5, 5))
    with pytest.raises(BadInputError, match="no pixel"):
        region_masks(np.zeros((4, 5), dtype=bool), 1, (4, 5))
