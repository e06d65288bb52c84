"""The metrics on a Keras model give the same figures as on the same function in PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from test_metrics import H, Linear, W, _explanation  # noqa: E402

from camlens import metrics  # noqa: E402


def test_deletion_and_confidence_match_pytorch() -> None:
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.1, 1.0, size=(H, W)).astype("float32")
    x = rng.uniform(0.5, 1.5, size=(1, 1, H, W)).astype("float32")
    inputs = keras.Input((H, W, 1))
    dense = keras.layers.Dense(1, use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights.reshape(-1, 1)])
    cam = _explanation((weights * x[0, 0])[None], [0])
    in_keras = metrics.deletion(model, x.transpose(0, 2, 3, 1), cam, steps=10)
    in_torch = metrics.deletion(Linear(weights), x, cam, steps=10)
    np.testing.assert_allclose(in_keras.curves, in_torch.curves, rtol=1e-5, atol=1e-5)
    conf_keras = metrics.confidence(model, x.transpose(0, 2, 3, 1), cam)
    conf_torch = metrics.confidence(Linear(weights), x, cam)
    np.testing.assert_allclose(conf_keras.masked, conf_torch.masked, rtol=1e-5)
