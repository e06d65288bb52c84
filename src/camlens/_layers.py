"""Listing a model's layers: which ones camlens can explain, and which one it picks."""

from __future__ import annotations

from collections.abc import Sequence
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


def stage_layers(infos: Sequence[LayerInfo]) -> list[str]:
    """Return one layer per resolution stage, finest first, ending at the automatic layer.

    The layers a multi-layer method (Poly-CAM) reads when none is given. For each spatial grid
    finer than the automatic layer's, among the feature-map candidates (padding layers
    aside), the least nested ones on that grid (a block, not a convolution
    inside it), and of those the last listed: torch ResNet-50 gives ``relu``, ``layer1`` ...
    ``layer4``; Keras ResNet50 ``conv1_relu``, ``conv2_block3_out`` ... ``conv5_block3_out``.
    A model with no automatic layer gives an empty list; one whose maps never change
    resolution gives the automatic layer alone.
    """
    auto = next((i for i, info in enumerate(infos) if info.auto), None)
    if auto is None:
        return []
    coarse = _grid(infos[auto])
    assert coarse is not None
    stages: dict[tuple[int, int], tuple[int, str]] = {}
    for info in infos:
        grid = _grid(info)
        if not info.candidate or grid is None or "Pad" in info.type:
            continue
        if grid[0] * grid[1] <= coarse[0] * coarse[1]:
            continue
        depth = _depth(info.name)
        if grid not in stages or depth <= stages[grid][0]:
            stages[grid] = (depth, info.name)
    finest_first = sorted(stages.items(), key=lambda item: -item[0][0] * item[0][1])
    return [name for _, (_, name) in finest_first] + [infos[auto].name]


def _depth(name: str) -> int:
    """Return how deep a layer name is nested (``.`` for torch, ``/`` for Keras)."""
    return name.count(".") + name.count("/")


def _grid(info: LayerInfo) -> tuple[int, int] | None:
    """Return a feature-map layer's ``(h, w)`` from its layout (``"nchw 7x7"``), else None."""
    if info.layout is None or not info.layout.startswith(("nchw ", "nhwc ")):
        return None
    h, w = info.layout.split()[1].split("x")
    return int(h), int(w)
