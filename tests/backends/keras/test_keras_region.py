"""region= on Keras (each backend): normalised over the region, auto-fov on channels-last input."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import camlens  # noqa: E402

SIZE = 12


def _mean_of_channels() -> keras.Model:
    """Input -> 1x1 conv (the mean of the channels) -> GAP -> Dense(1): Grad-CAM is
    ``ReLU(mean_c x) / (H W)``."""
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = layers.Conv2D(1, 1, name="features")
    dense = layers.Dense(1, name="score")
    outputs = dense(layers.GlobalAveragePooling2D()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32), np.zeros((1,), np.float32)])
    dense.set_weights([np.ones((1, 1), np.float32), np.zeros((1,), np.float32)])
    return model


def _disc(centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.asarray((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2)


def test_keras_maps_are_normalised_over_the_region_and_auto_fov_finds_the_disc() -> None:
    rng = np.random.default_rng(0)
    truth = np.stack([_disc((5.5, 6.0), 4.5), _disc((6.0, 5.0), 5.0)])
    # Fundus-like: a lit disc (its brightest pixels outside the box region below) on black.
    x = np.where(truth[..., None], rng.uniform(0.3, 1.0, (2, SIZE, SIZE, 3)), 0.0)
    x = x.astype(np.float32)
    model = _mean_of_channels()
    cam = np.maximum(x.astype(np.float64).mean(axis=-1), 0) / SIZE**2  # Grad-CAM by hand
    box = np.zeros((SIZE, SIZE), dtype=bool)
    box[3:9, 2:8] = True
    exp = camlens.explain(model, x, layer="features", target=0, region=box)
    inside = cam[:, box]
    low, high = inside.min(axis=1)[:, None, None], inside.max(axis=1)[:, None, None]
    np.testing.assert_allclose(exp.maps, np.where(box, (cam - low) / (high - low), 0), 1e-5, 1e-6)
    assert exp.region is not None and exp.region.shape == (2, SIZE, SIZE)

    fov = camlens.explain(model, x, layer="features", target=0, region="auto-fov")
    assert fov.region is not None
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i, (centre, radius) in enumerate([((5.5, 6.0), 4.5), ((6.0, 5.0), 5.0)]):
        wrong = fov.region[i] != truth[i]
        edge = np.abs(np.hypot(yy - centre[0], xx - centre[1]) - radius)
        assert (edge[wrong] <= 1.5).all()
        assert (fov.maps[i][~fov.region[i]] == 0).all()
