"""Listing a model's layers: which ones camlens can explain, and which one it picks."""

from __future__ import annotations

from typing import Any

from camlens._checks import positive_int
from camlens._locks import model_lock
from camlens.backends import backend_for
from camlens.backends.base import LayerInfo
from camlens.errors import BadInputError

__all__ = ["LayerInfo", "layers"]


def layers(
    model: Any, *, input_size: tuple[int, int] | None = None, channels: int = 3
) -> list[LayerInfo]:
    """List every layer of a model with its output shape and whether CAM can use it.

    One image of zeros runs through the model (the model is left as found: modes, flags, no
    hooks). Names are those ``layer=`` accepts: dotted module names for PyTorch
    (``"features.18"``), ``outer/inner`` paths for layers inside nested Keras models
    (``"xception/block14_sepconv2_act"``).

    Args:
        model: A ``torch.nn.Module`` or a built ``keras.Model``.
        input_size: ``(H, W)`` of the image to run. Defaults to a Keras model's own input
            size, else 224x224.
        channels: Channels of the image, for models that do not fix them.

    Returns:
        One :class:`LayerInfo` per layer, outer layers before the layers inside them. A layer
        is a ``candidate`` when its output is a feature map with more than 1x1 positions and
        it runs once per pass; exactly one is ``auto``: the layer :func:`camlens.explain` picks
        when no ``layer`` is given (none if no layer qualifies).

    Raises:
        BadInputError: ``input_size`` or ``channels`` is not positive, or the model rejects an
            image of that size.
        UnsupportedModelError: ``model`` is neither a torch nor a Keras model.
    """
    if input_size is not None:
        size = tuple(input_size)
        if len(size) != 2 or not all(isinstance(d, int) and d > 0 for d in size):
            raise BadInputError(f"input_size must be (H, W), two positive ints; got {input_size!r}")
        input_size = (int(size[0]), int(size[1]))
    channels = positive_int(channels, "channels")
    backend = backend_for(model)
    with model_lock(model):
        return backend.summarize(input_size, channels)
