"""Segmentation and similarity targets on Keras (each backend), against the formulas by hand."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import camlens  # noqa: E402

X = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")


def _segmenter() -> keras.Model:
    """features (8 channels) -> 1x1 conv to 3 class logits per pixel."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    features = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(inputs)
    return keras.Model(inputs, layers.Conv2D(3, 1, name="logits")(features))


def _numpy(model: keras.Model, name: str) -> np.ndarray:
    sub = keras.Model(model.input, model.get_layer(name).output)
    return np.asarray(keras.ops.convert_to_numpy(sub(X)), dtype=np.float64)


def test_segmentation_is_the_class_logits_over_its_predicted_mask() -> None:
    model = _segmenter()
    cam = camlens.GradCAM(model, relu=False)
    exp = cam(X, target=camlens.Segmentation(1))
    assert cam.layers == ("features",)  # not the logits layer itself
    f, logits = _numpy(model, "features"), _numpy(model, "logits")
    w = np.asarray(model.get_layer("logits").get_weights()[0], np.float64)
    mask = logits.argmax(axis=-1) == 1  # (N, h, w)
    np.testing.assert_allclose(exp.scores, (logits[..., 1] * mask).sum(axis=(1, 2)), rtol=1e-5)
    # y = sum_{ij in M} (sum_k W[k, 1] f_k[ij] + b): dy/df_k[ij] = W[k, 1] [ij in M], so
    # alpha_k = W[k, 1] |M| / (h w).
    alpha = w[0, 0, :, 1][None, :] * mask.sum(axis=(1, 2))[:, None] / (16 * 16)
    ref = np.einsum("nk,nhwk->nhw", alpha, f)
    np.testing.assert_allclose(exp.raw, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    given = np.zeros((16, 16), dtype=bool)
    given[:8] = True
    top = cam(X, target=camlens.Segmentation(2, mask=given))
    np.testing.assert_allclose(top.scores, logits[:, :8, :, 2].sum(axis=(1, 2)), rtol=1e-5)


def test_similarity_is_the_cosine_to_the_reference() -> None:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    features = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(inputs)
    embedding = layers.Dense(6, name="embed")(layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, embedding)
    reference = np.random.default_rng(2).standard_normal(6)
    exp = camlens.explain(model, X, target=camlens.Similarity(reference), relu=False)
    e = _numpy(model, "embed")
    cosine = e @ reference / np.linalg.norm(e, axis=1) / np.linalg.norm(reference)
    np.testing.assert_allclose(exp.scores, cosine, rtol=1e-5)
    # d cos / d e = (u - cos e / |e|) / |e| with u the unit reference; through GAP and the
    # Dense: alpha_k = sum_d W[k, d] (d cos / d e_d) / (h w).
    u = reference / np.linalg.norm(reference)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    de = (u[None] - cosine[:, None] * e / norm) / norm
    w = np.asarray(model.get_layer("embed").get_weights()[0], np.float64)
    alpha = de @ w.T / (16 * 16)
    ref = np.einsum("nk,nhwk->nhw", alpha, _numpy(model, "features"))
    np.testing.assert_allclose(exp.raw, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
