"""Finding target layers in a Keras model: bare names, ``outer/inner`` paths, objects, auto."""

from __future__ import annotations

import difflib
from typing import Any

import keras

from camlens.backends.base import LayerRef
from camlens.backends.keras._graph import iter_layers, run
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


def auto_layer(model: Any, inputs: Any) -> LayerRef:
    """Return the last layer, in execution order, whose output is a spatial feature map.

    One image is run with a tap on every layer; the pick is the last layer to finish with a
    4-D output whose spatial size exceeds 1x1, among layers called once (a nested model that
    ends in such a map is picked over its own last layer, since it finishes later).
    """
    paths = list(iter_layers(model))
    finished: list[tuple[str, Any, tuple[int, ...]]] = []
    counts: dict[int, int] = {}
    channels_last = keras.config.image_data_format() == "channels_last"

    def make_tap(path: str, layer: Any) -> Any:
        def tap(out: Any) -> Any:
            counts[id(layer)] = counts.get(id(layer), 0) + 1
            shape = tuple(getattr(out, "shape", ()))
            finished.append((path, layer, shape))
            return out

        return tap

    taps = {id(layer): make_tap(path, layer) for path, layer in paths}
    run(model, inputs[:1], taps, once=False)
    for path, layer, shape in reversed(finished):
        if len(shape) != 4 or counts[id(layer)] != 1:
            continue
        h, w = (shape[1], shape[2]) if channels_last else (shape[2], shape[3])
        if h * w > 1:
            return LayerRef(path, layer)
    raise LayerError(
        f"found no layer of model {model.name!r} with a spatial 4-D output for inputs of shape "
        f"{tuple(inputs.shape)}; pass layer= explicitly"
    )
