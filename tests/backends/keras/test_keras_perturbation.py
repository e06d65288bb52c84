"""Score-CAM and Ablation-CAM on Keras models, against references written from the papers."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers, ops  # noqa: E402

import camlens  # noqa: E402


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, pixel centres aligned, edges clamped (written apart from camlens)."""

    def axis(out: int, inp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(out) + 0.5) * inp / out - 0.5, 0, inp - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, inp - 1), src - lo

    y0, y1, fy = axis(size[0], m.shape[0])
    x0, x1, fx = axis(size[1], m.shape[1])
    rows = m[y0] * (1 - fy)[:, None] + m[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 10, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(4).normal(size=(2, 12, 10, 3)).astype("float32")


def _logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    dense = model.get_layer("probs")
    feats = keras.Model(model.input, dense.input)(x)
    return ops.convert_to_numpy(feats) @ ops.convert_to_numpy(dense.kernel) + ops.convert_to_numpy(
        dense.bias
    )


def test_scorecam_matches_the_paper(model: keras.Model, batch: np.ndarray) -> None:
    acts = ops.convert_to_numpy(keras.Model(model.input, model.get_layer("c2").output)(batch))
    units = [1, 3]
    exp = camlens.explain(model, batch, method="scorecam", layer="c2", target=units)
    for n in range(2):
        w = []
        for k in range(acts.shape[-1]):
            up = _upsample(acts[n, :, :, k].astype(np.float64), (12, 10))
            span = up.max() - up.min()
            m = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            z = _logits(model, (batch[n : n + 1] * m[None, :, :, None]).astype("float32"))[0]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            w.append(p[units[n]])
        expected = np.einsum("k,hwk->hw", np.array(w), acts[n])
        np.testing.assert_allclose(exp.raw[n], expected, rtol=1e-4, atol=1e-5 * abs(expected).max())


def test_ablationcam_matches_the_paper(model: keras.Model, batch: np.ndarray) -> None:
    acts = ops.convert_to_numpy(keras.Model(model.input, model.get_layer("c2").output)(batch))
    dense = model.get_layer("probs")
    kernel, bias = ops.convert_to_numpy(dense.kernel), ops.convert_to_numpy(dense.bias)
    units = [0, 2]
    exp = camlens.explain(model, batch, method="ablationcam", layer="c2", target=units)
    for n in range(2):
        y = acts[n].mean(axis=(0, 1)) @ kernel[:, units[n]] + bias[units[n]]  # pre-softmax
        w = []
        for k in range(acts.shape[-1]):
            ablated = acts[n].copy()
            ablated[:, :, k] = 0
            w.append((y - (ablated.mean(axis=(0, 1)) @ kernel[:, units[n]] + bias[units[n]])) / y)
        expected = np.einsum("k,hwk->hw", np.array(w), acts[n])
        np.testing.assert_allclose(exp.raw[n], expected, rtol=1e-4, atol=1e-5 * abs(expected).max())


def test_batch_size_does_not_change_results(model: keras.Model, batch: np.ndarray) -> None:
    for method in ("scorecam", "ablationcam"):
        a = camlens.explain(model, batch, method=method, layer="c2", target=1, batch_size=1)
        b = camlens.explain(model, batch, method=method, layer="c2", target=1, batch_size=4)
        np.testing.assert_allclose(a.raw, b.raw, atol=1e-5)
