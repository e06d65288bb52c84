"""Turning uint8 pictures into the batch a model was trained on: presets, size, mean/std, layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from camlens.errors import BadInputError

Layout = Literal["NCHW", "NHWC"]
ChannelOrder = Literal["RGB", "BGR"]


@dataclass(frozen=True)
class _Preset:
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    order: ChannelOrder
    summary: str


#: Preprocessing presets: ``x = (pixels * scale - mean) / std`` per channel, pixels in 0..255.
PRESETS: dict[str, _Preset] = {
    "imagenet": _Preset(
        1 / 255,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        "RGB",
        "torchvision / timm: RGB in [0, 1], ImageNet mean and std",
    ),
    "tf": _Preset(1 / 127.5, (1.0,) * 3, (1.0,) * 3, "RGB", "Keras 'tf' mode: RGB in [-1, 1]"),
    "caffe": _Preset(
        1.0,
        (103.939, 116.779, 123.68),
        (1.0,) * 3,
        "BGR",
        "Keras 'caffe' mode (ResNet50, VGG): BGR in 0..255 minus the ImageNet mean",
    ),
    "unit": _Preset(1 / 255, (0.0,) * 3, (1.0,) * 3, "RGB", "RGB in [0, 1]"),
    "none": _Preset(1.0, (0.0,) * 3, (1.0,) * 3, "RGB", "RGB in 0..255, as read"),
}


@dataclass(frozen=True)
class Preprocess:
    """How pictures become a model's input batch.

    ``x = (pixels * scale - mean) / std``: ``scale`` comes from the preset, ``mean`` and ``std``
    from the preset unless given (in the preset's scaled units: ``[0, 1]`` for ``imagenet`` and
    ``unit``). Images are resized to ``size`` (bilinear, antialiased, the whole image, no crop;
    maps then cover the whole picture) and laid out as the model expects.

    Attributes:
        preset: One of :data:`PRESETS`.
        size: ``(H, W)`` of the model input.
        mean, std: Per channel (one value is repeated); ``None`` takes the preset's.
        channel_order: ``"RGB"`` or ``"BGR"``; ``None`` takes the preset's.
        layout: ``"NCHW"`` (PyTorch) or ``"NHWC"`` (Keras).
        channels: 3 for colour models, 1 for grayscale ones (the preset's mean and std are
            averaged over the three colours).
    """

    preset: str = "imagenet"
    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: ChannelOrder | None = None
    layout: Layout = "NCHW"
    channels: int = 3
    _stats: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise BadInputError(
                f"unknown preprocessing preset {self.preset!r}; use one of {sorted(PRESETS)}"
            )
        if len(self.size) != 2 or any(
            not isinstance(s, (int, np.integer)) or s < 1 for s in self.size
        ):
            raise BadInputError(f"size must be two positive ints (H, W); got {self.size!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise BadInputError(f"layout must be 'NCHW' or 'NHWC'; got {self.layout!r}")
        if self.channel_order not in (None, "RGB", "BGR"):
            raise BadInputError(f"channel_order must be 'RGB' or 'BGR'; got {self.channel_order!r}")
        if self.channels not in (1, 3):
            raise BadInputError(f"channels must be 1 or 3; got {self.channels!r}")
        preset = PRESETS[self.preset]
        mean = self._per_channel("mean", self.mean, preset.mean)
        std = self._per_channel("std", self.std, preset.std)
        if (std == 0).any():
            raise BadInputError(f"std must not contain zeros; got {self.std!r}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "_stats", (mean, std))

    def _per_channel(
        self, name: str, given: Sequence[float] | None, default: tuple[float, ...]
    ) -> np.ndarray:
        """Return ``given`` (or the preset's ``default``) as one float32 value per channel."""
        if given is None:
            values = np.asarray(default, dtype=np.float32)
            return values.mean(keepdims=True) if self.channels == 1 else values
        values = np.asarray(given, dtype=np.float32).reshape(-1)
        if values.size == 1:
            return np.repeat(values, self.channels)
        if values.size != self.channels:
            raise BadInputError(
                f"{name} needs 1 or {self.channels} values for a {self.channels}-channel model; "
                f"got {list(given)}"
            )
        return values

    @property
    def order(self) -> ChannelOrder:
        """Return the channel order actually used."""
        return self.channel_order or PRESETS[self.preset].order

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Return a uint8 ``(H, W, C)`` picture resized to :attr:`size`."""
        height, width = self.size
        if image.shape[:2] == (height, width):
            return image
        squeeze = image.ndim == 3 and image.shape[2] == 1
        im = Image.fromarray(image[..., 0] if squeeze else image)
        out = np.asarray(im.resize((width, height), Image.Resampling.BILINEAR))
        return out[..., None] if squeeze else out

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Return the float32 batch for uint8 ``(H, W, C)`` pictures of any sizes."""
        if len(images) == 0:
            raise BadInputError("no images to preprocess")
        batch = np.stack([self.resize_channels(im) for im in images]).astype(np.float32)
        if self.order == "BGR" and self.channels == 3:
            batch = batch[..., ::-1]
        mean, std = self._stats
        scale = np.float32(PRESETS[self.preset].scale)
        batch = (batch * scale - mean) / std
        if self.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def resize_channels(self, image: np.ndarray) -> np.ndarray:
        """Return one uint8 picture resized, with the model's channel count (RGB order kept).

        The per-picture half of :meth:`__call__`, which takes its results unchanged (applying
        it twice changes nothing): for spreading a batch's pictures over threads.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
            raise BadInputError(
                f"expected a uint8 (H, W, 1 or 3) picture; got {image.dtype} {image.shape}"
            )
        if image.shape[2] != self.channels:
            image = (
                np.repeat(image, 3, axis=2)
                if self.channels == 3
                else np.asarray(Image.fromarray(image).convert("L"))[..., None]
            )
        return self.resize(image)

    def describe(self) -> dict[str, Any]:
        """Return the settings as plain JSON values (recorded with every run)."""
        mean, std = self._stats
        return {
            "preset": self.preset,
            "summary": PRESETS[self.preset].summary,
            "size": list(self.size),
            "scale": PRESETS[self.preset].scale,
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "channel_order": self.order,
            "layout": self.layout,
            "channels": self.channels,
        }
