"""Finding target layers in a Keras model: bare names, ``outer/inner`` paths, objects, auto."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from camlens.backends._common import describe_layers, last_feature_map
from camlens.backends.base import LayerInfo, LayerRef
from camlens.backends.keras._graph import graph_of, iter_layers, run
from camlens.errors import LayerError, LayerNotFoundError


def resolve_layer(model: Any, layer: Any) -> LayerRef:
    """Return the layer given by a bare name (searched through nested models), a path or object."""
    paths = list(iter_layers(model))
    if isinstance(layer, keras.layers.Layer):
        for path, candidate in paths:
            if candidate is layer:
                return LayerRef(path, candidate)
        raise LayerNotFoundError(
            f"the layer given ({layer.name!r}) is not part of model {model.name!r}; pass one of "
            "its layers or a name"
        )
    if not isinstance(layer, str):
        raise LayerNotFoundError(
            f"layer must be a name, an 'outer/inner' path, a keras layer or a list of them; "
            f"got {layer!r}"
        )
    name = layer.strip().strip("/")
    by_path = {path: candidate for path, candidate in paths}
    if name in by_path:
        return LayerRef(name, by_path[name])
    matches = [(p, c) for p, c in paths if p.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return LayerRef(*matches[0])
    if len(matches) > 1:
        raise LayerNotFoundError(
            f"layer name {layer!r} is ambiguous in model {model.name!r}: "
            f"{', '.join(repr(p) for p, _ in matches)}; pass one of these paths"
        )
    names = list(by_path) + [p.rsplit("/", 1)[-1] for p in by_path]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    full = [next(p for p in by_path if p == c or p.endswith("/" + c)) for c in close]
    hint = f"; did you mean {', '.join(repr(p) for p in dict.fromkeys(full))}?" if full else ""
    raise LayerNotFoundError(f"layer {layer!r} not found in model {model.name!r}{hint}")


def _record(
    model: Any, inputs: Any
) -> tuple[list[tuple[str, Any, tuple[int, ...]]], dict[int, int]]:
    """Run one image with a tap on every layer; the model is left as found.

    Returns:
        ``(path, layer, output shape)`` in the order layers finish (``()`` for an output that
        is not a tensor), and how many times each layer (by ``id``) ran.
    """
    paths = list(iter_layers(model))
    finished: list[tuple[str, Any, tuple[int, ...]]] = []
    counts: dict[int, int] = {}

    def make_tap(path: str, layer: Any) -> Any:
        def tap(out: Any) -> Any:
            counts[id(layer)] = counts.get(id(layer), 0) + 1
            shape = tuple(getattr(out, "shape", ()))
            finished.append((path, layer, shape))
            return out

        return tap

    taps = {id(layer): make_tap(path, layer) for path, layer in paths}
    run(model, inputs[:1], taps, once=False)
    return finished, counts


def is_feature_map(shape: tuple[int, ...] | None, calls: int) -> bool:
    """Return whether a layer can be explained: 4-D output, ``H * W > 1``, called once."""
    if shape is None or len(shape) != 4 or calls != 1:
        return False
    channels_last = keras.config.image_data_format() == "channels_last"
    h, w = (shape[1], shape[2]) if channels_last else (shape[2], shape[3])
    return bool(h * w > 1)


def auto_layer(model: Any, inputs: Any) -> LayerRef:
    """Return the last layer, in execution order, whose output is a spatial feature map.

    One image is run with a tap on every layer; the pick is the last layer to finish with a
    4-D output whose spatial size exceeds 1x1, among layers called once (a nested model that
    ends in such a map is picked over its own last layer, since it finishes later).
    """
    finished, counts = _record(model, inputs)
    picked = last_feature_map(finished, _runs(counts), is_feature_map)
    if picked is None:
        raise LayerError(
            f"found no layer of model {model.name!r} with a spatial 4-D output for inputs of "
            f"shape {tuple(inputs.shape)}; pass layer= explicitly"
        )
    return picked


def summarize(model: Any, inputs: Any) -> list[LayerInfo]:
    """Describe every layer, nested ones included, from one forward pass of one image."""
    finished, counts = _record(model, inputs)
    return describe_layers(iter_layers(model), finished, _runs(counts), is_feature_map)


def _runs(counts: dict[int, int]) -> Callable[[str, Any], int]:
    """Count a layer's calls by the layer object (a shared layer runs under one path)."""
    return lambda path, layer: counts.get(id(layer), 0)


def sample_input(model: Any, input_size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Return one image of zeros for ``model``; sizes the model's input fixes win.

    The model's static channels always win; its static height and width win unless
    ``input_size`` is given (then a model that does not take it fails with a clear error).
    """
    h_axis, w_axis, c_axis = (
        (1, 2, 3) if keras.config.image_data_format() == "channels_last" else (2, 3, 1)
    )
    h, w = input_size if input_size is not None else (224, 224)
    dims = {h_axis: h, w_axis: w, c_axis: channels}
    graph = graph_of(model)
    shape = tuple(graph.inputs[0].shape) if graph is not None and len(graph.inputs) == 1 else ()
    if len(shape) == 4:
        fixed = (c_axis,) if input_size is not None else (h_axis, w_axis, c_axis)
        dims.update({axis: int(shape[axis]) for axis in fixed if shape[axis] is not None})
    return np.zeros((1, dims[1], dims[2], dims[3]), dtype=np.float32)
