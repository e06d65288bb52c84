"""Listing a model's layers with their output shapes, for any backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens.backends import backend_for

__all__ = ["LayerInfo", "summarize_layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a model: its name for ``layer=``, type, output shape, and CAM suitability.

    Attributes:
        name: Full name, as ``layer=`` accepts it (dotted for torch, ``outer/inner`` for Keras).
        type: The layer's class name.
        output_shape: Output shape in the model's layout, batch axis ``None``; ``None`` when
            the layer did not run or returned something other than a tensor.
        candidate: Whether camlens can explain this layer (4-D, more than 1x1, runs once).
        auto: Whether this is the layer camlens picks when none is given.
    """

    name: str
    type: str
    output_shape: tuple[int | None, ...] | None
    candidate: bool
    auto: bool


def summarize_layers(
    model: Any, input_size: tuple[int, int] | None, channels: int
) -> list[LayerInfo]:
    """Run one image of zeros through ``model`` and describe every layer.

    The auto pick is the same code :meth:`Backend.auto_layer` runs; the model is left as found.
    """
    backend = backend_for(model)
    if backend.framework == "torch":
        from camlens.backends.torch import _layers as torch_layers

        h, w = input_size if input_size is not None else (224, 224)
        zeros = np.zeros((1, channels, h, w), dtype=np.float32)
        return torch_layers.summarize(model, backend.prepare(zeros))
    from camlens.backends.keras import _layers as keras_layers

    sample = keras_layers.sample_input(model, input_size, channels)
    return keras_layers.summarize(model, backend.prepare(sample))
