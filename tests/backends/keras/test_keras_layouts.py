"""Token layers on Keras (each backend): placed on their grid, or refused in words."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import camlens  # noqa: E402
from keras_vits import linear_token_model, vit  # noqa: E402


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 32, 32, 3)).astype(np.float32)


def _token_grid(model: keras.Model, x: np.ndarray, prefix: int) -> np.ndarray:
    """The explained layer's output, read by a sub-model, as (N, C, 8, 8): prefix tokens
    dropped, the patch tokens row by row."""
    sub = keras.Model(model.input, model.get_layer("tokens").output)
    tokens = np.asarray(keras.ops.convert_to_numpy(sub(x)), dtype=np.float64)[:, prefix:]
    n, _, c = tokens.shape
    return tokens.reshape(n, 8, 8, c).transpose(0, 3, 1, 2)


def _head(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    w, b = model.get_layer("head").get_weights()
    return np.asarray(w, np.float64), np.asarray(b, np.float64)


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_gradcam_on_a_token_layer_equals_the_formula_on_the_grid(prefix: int) -> None:
    model = linear_token_model(prefix)
    x = _images(3, seed=prefix)
    classes = [0, 2, 3]
    exp = camlens.GradCAM(model, "tokens")(x, target=classes)
    a = _token_grid(model, x, prefix)
    w, _ = _head(model)
    # The head is a mean over the 64 patch tokens then Dense: dy_c/dA_k = W[k, c] / 64 at
    # every patch token, so alpha_k = W[k, c] / 64.
    alpha = w[:, classes].T / 64
    ref = (alpha[:, :, None, None] * a).sum(axis=1)  # raw: before the ReLU
    assert exp.raw.shape == (3, 8, 8) and exp.maps.shape == (3, 32, 32)
    np.testing.assert_allclose(exp.raw, ref, rtol=1e-4, atol=1e-6)


def test_ablation_cam_rebuilds_a_token_layer_and_refuses_prefix_tokens() -> None:
    model = linear_token_model(prefix=0)
    x = _images(1, seed=5)
    exp = camlens.AblationCAM(model, "tokens")(x, target=1)
    a = _token_grid(model, x, 0)[0]
    w, b = _head(model)
    # y = b + sum_k W[k, 1] mean(A_k); zeroing channel k removes its term: w_k = (y - y_k) / y.
    means = a.mean(axis=(1, 2))
    y = b[1] + (w[:, 1] * means).sum()
    weights = w[:, 1] * means / y
    ref = (weights[:, None, None] * a).sum(axis=0)
    np.testing.assert_allclose(exp.raw[0], ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(camlens.MethodError, match="prefix token"):
        camlens.AblationCAM(linear_token_model(prefix=1), "tokens")(x)


@pytest.mark.filterwarnings("ignore::camlens.MapStrengthWarning")
def test_recipro_cam_keeps_one_token_and_reads_the_probability() -> None:
    model = linear_token_model(prefix=0)
    x = _images(1, seed=6)
    exp = camlens.ReciproCAM(model, "tokens")(x, target=2)
    a = _token_grid(model, x, 0)[0]  # (C, 8, 8)
    w, b = _head(model)
    # Only token (i, j) kept: the mean over 64 tokens is A_ij / 64; the map is softmax_2.
    logits = np.einsum("kij,kc->ijc", a / 64, w) + b
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    ref = (probs / probs.sum(-1, keepdims=True))[..., 2]
    np.testing.assert_allclose(exp.raw[0], ref, rtol=1e-4, atol=1e-6)


def test_the_automatic_layer_of_a_vit_is_the_last_blocks_first_norm() -> None:
    model = vit(depth=3)
    cam = camlens.GradCAM(model)
    exp = cam(_images(1, seed=0))
    assert cam.layers == ("block2/norm1",) == exp.layers
    rows = {row.name: row for row in camlens.layers(model, input_size=(32, 32))}
    assert rows["block2/norm1"].auto and rows["block2/norm1"].candidate
    assert rows["block2/norm1"].layout == "tokens 1+8x8"
    assert rows["patch_embed"].layout == "nhwc 8x8"
    # (N, 65, heads, dim) is channels-last by its kind, but 65x2 is no image grid.
    assert not rows["block2/attn/query"].candidate


def test_a_batch_on_a_vit_equals_its_single_calls_and_gradients_are_nonzero() -> None:
    model = vit()
    x = _images(3, seed=3)
    cam = camlens.GradCAM(model, "block1/norm1")
    whole = cam(x)
    assert np.all(whole.raw.reshape(3, -1).max(axis=1) > 0)
    for i in range(3):
        np.testing.assert_allclose(whole.maps[i], cam(x[i : i + 1]).maps[0], atol=1e-5)


def test_layout_options_on_a_token_layer_are_checked_and_grid_agrees() -> None:
    model = linear_token_model(prefix=0)
    x = _images(1, seed=7)
    with pytest.raises(camlens.LayerError, match="layout='tokens'"):
        camlens.GradCAM(model, "tokens", layout="nchw")(x)
    with pytest.raises(camlens.LayerError, match="needs 81 patch tokens"):
        camlens.GradCAM(model, "tokens", grid=(9, 9))(x)
    by_grid = camlens.GradCAM(model, "tokens", grid=(8, 8))(x)
    inferred = camlens.GradCAM(model, "tokens")(x)
    np.testing.assert_allclose(by_grid.raw, inferred.raw, atol=1e-7)
