"""The bundled Keras MobileNetV2 exported to ONNX (tf2onnx) gives the Keras model's maps.

Needs Keras on TensorFlow (tf2onnx converts TensorFlow graphs). Measured on these two photos:
max map difference 1.4e-5 (Ablation-CAM), 6e-7 (Score-CAM, top 32), 5e-7 (Eigen-CAM); max
score difference 1e-5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from camlens import zoo

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
if keras.backend.backend() != "tensorflow":
    pytest.skip("tf2onnx converts Keras models on TensorFlow", allow_module_level=True)
tf = pytest.importorskip("tensorflow")
tf2onnx = pytest.importorskip("tf2onnx")

import camlens  # noqa: E402
from camlens.io import load_model  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    try:
        keras_model = zoo.mobilenet_v2_keras()
    except zoo.WeightsNotFoundError as e:
        pytest.skip(str(e))
    path = Path(tmp_path_factory.mktemp("onnx")) / "mobilenet_v2_keras.onnx"
    spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17, output_path=str(path))
    return keras_model, load_model(path)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two photos, preprocessed, NHWC float32."""
    images = np.stack([p.image for p in zoo.photos()[:2]])
    return np.ascontiguousarray(zoo.imagenet_preprocess(images).transpose(0, 2, 3, 1))


def test_the_file_says_nhwc_224_and_the_automatic_layer_is_the_last_feature_map(
    models: tuple[Any, Any], photos: np.ndarray
) -> None:
    keras_model, loaded = models
    assert (loaded.layout, loaded.input_size, loaded.channels) == ("NHWC", (224, 224), 3)
    auto = [row for row in camlens.layers(loaded.model) if row.auto]
    assert len(auto) == 1 and auto[0].output_shape is not None
    assert sorted(auto[0].output_shape[1:]) == [7, 7, 1280]  # tf2onnx keeps it channels-first
    # Its values are the Keras model's features_18 output.
    exp = camlens.explain(loaded.model, photos, method="eigencam")
    ref = camlens.explain(keras_model, photos, method="eigencam", layer="features_18")
    np.testing.assert_allclose(exp.raw, ref.raw, atol=1e-4 * np.abs(ref.raw).max())


@pytest.mark.parametrize(
    ("method", "options"), [("eigencam", {}), ("ablationcam", {}), ("scorecam", {"top_n": 32})]
)
def test_maps_equal_the_keras_models(
    models: tuple[Any, Any], photos: np.ndarray, method: str, options: dict[str, Any]
) -> None:
    keras_model, loaded = models
    ours = camlens.explain(loaded.model, photos, method=method, **options)
    ref = camlens.explain(keras_model, photos, method=method, layer="features_18", **options)
    np.testing.assert_array_equal(ours.units, ref.units)
    np.testing.assert_allclose(ours.scores, ref.scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.maps, ref.maps, atol=1e-4)
