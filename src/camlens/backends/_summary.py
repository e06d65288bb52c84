"""Listing a model's layers with their output shapes, for any backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from camlens.backends import backend_for
from camlens.backends.base import LayerRef

__all__ = ["Finished", "LayerInfo", "describe_layers", "last_feature_map", "summarize_layers"]

#: One layer call recorded by a backend, in the order calls finish: the layer's name, the layer,
#: its output shape (``None`` or ``()`` for an output that is not a tensor).
Finished: TypeAlias = "tuple[str, Any, tuple[int, ...] | None]"
#: ``(output shape or None, times the layer ran) -> whether it can be explained``.
FeatureTest: TypeAlias = "Callable[[tuple[int, ...] | None, int], bool]"
#: ``(name, layer) -> times the layer ran`` in the recorded pass.
Runs: TypeAlias = "Callable[[str, Any], int]"


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


def last_feature_map(
    finished: Sequence[Finished], runs: Runs, is_feature_map: FeatureTest
) -> LayerRef | None:
    """Return the last layer to finish with an explainable output (the automatic pick)."""
    for name, layer, shape in reversed(finished):
        if is_feature_map(shape, runs(name, layer)):
            return LayerRef(name, layer)
    return None


def describe_layers(
    layers: Iterable[tuple[str, Any]],
    finished: Sequence[Finished],
    runs: Runs,
    is_feature_map: FeatureTest,
) -> list[LayerInfo]:
    """Return a :class:`LayerInfo` per ``(name, layer)``, from one recorded pass."""
    picked = last_feature_map(finished, runs, is_feature_map)
    first: dict[str, tuple[int, ...] | None] = {}
    for name, _, shape in finished:
        first.setdefault(name, shape)
    rows = []
    for name, layer in layers:
        shape = first.get(name)
        rows.append(
            LayerInfo(
                name=name,
                type=type(layer).__name__,
                output_shape=(None, *(int(d) for d in shape[1:])) if shape else None,
                candidate=is_feature_map(shape, runs(name, layer)),
                auto=picked is not None and picked.name == name,
            )
        )
    return rows


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
