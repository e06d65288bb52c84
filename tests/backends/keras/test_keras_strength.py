"""Map strength on Keras (each backend): a seed-shaped regressor whose map is nearly flat."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import camlens  # noqa: E402


def _near_flat_regressor() -> keras.Model:
    """Input -> 1x1 conv (0.5 + 0.001 x) -> GAP -> Dense(1): Grad-CAM is the feature map / 64."""
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(1, 1, name="features")
    x = conv(inputs)
    dense = layers.Dense(1, name="age")
    outputs = dense(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.full((1, 1, 1, 1), 0.001, np.float32), np.full((1,), 0.5, np.float32)])
    dense.set_weights([np.ones((1, 1), np.float32), np.zeros((1,), np.float32)])
    return model


def test_near_flat_map_shown_near_uniform_under_max_and_flagged_under_minmax() -> None:
    model = _near_flat_regressor()
    ramp = np.linspace(0.0, 1.0, 8, dtype=np.float32)
    x = (ramp[:, None] * ramp[None, :])[None, :, :, None]
    raw = (0.5 + 0.001 * x[0, :, :, 0]) / 64  # by hand: alpha = 1 / 64 for the one channel
    with warnings.catch_warnings():
        warnings.simplefilter("error", camlens.CamlensWarning)
        honest = camlens.explain(model, x, layer="features", target=0, normalize="max")
    np.testing.assert_allclose(honest.maps[0], raw / raw.max(), rtol=1e-5)
    assert honest.maps.min() > 0.99
    assert honest.strength.status.tolist() == ["flat"]
    np.testing.assert_allclose(honest.strength.raw_max, [raw.max()], rtol=1e-5)

    with pytest.warns(camlens.MapStrengthWarning, match="near-flat"):
        stretched = camlens.explain(model, x, layer="features", target=0)
    assert stretched.maps.min() == 0.0 and stretched.maps.max() == pytest.approx(1.0)
    assert stretched.strength.status.tolist() == ["flat"]
    np.testing.assert_allclose(stretched.strength.contrast, honest.strength.contrast, rtol=1e-6)
