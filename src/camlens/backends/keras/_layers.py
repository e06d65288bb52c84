"""Finding target layers in a Keras model: bare names, ``outer/inner`` paths, objects, auto."""

from __future__ import annotations

import difflib
from typing import Any

import keras
import numpy as np

from camlens.backends._common import LayerRules, auto_pick, describe_layers
from camlens.backends._layout import Layout, LayoutName, LayoutSpec, layout_for
from camlens.backends.base import LayerInfo, LayerRef, image_of, model_inputs, rows
from camlens.backends.keras._graph import graph_of, iter_layers, run
from camlens.errors import LayerError, LayerNotFoundError

_AUTO = LayoutSpec()


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


def record(
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
    run(model, model_inputs(rows(inputs, 0, 1)), taps, once=False)
    return finished, counts


def convention() -> LayoutName:
    """Return Keras's layout of feature maps (``keras.config.image_data_format``)."""
    return "nhwc" if keras.config.image_data_format() == "channels_last" else "nchw"


def evidence(layer: Any) -> LayoutName:
    """Return the layout a layer's 4-D output has: its own ``data_format``, channels-last for
    layers that act on the last axis, else Keras's configured format."""
    fmt = getattr(layer, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return "nchw" if fmt == "channels_first" else "nhwc"
    if isinstance(layer, (keras.layers.Dense, keras.layers.LayerNormalization)):
        return "nhwc"
    return convention()


def is_norm(layer: Any) -> bool:
    """Return whether a layer normalises over the last axis (``LayerNormalization``...)."""
    return isinstance(layer, keras.layers.LayerNormalization) or type(layer).__name__.endswith(
        ("LayerNorm", "RMSNorm", "RMSNormalization")
    )


def input_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """Return ``(H, W)`` of an input batch of this shape, in Keras's configured format."""
    return (shape[1], shape[2]) if convention() == "nhwc" else (shape[2], shape[3])


def layout_of(
    path: str, layer: Any, shape: tuple[int, ...], batch: int, size: tuple[int, int], spec: Any
) -> Layout:
    """Return how a layer's output of ``shape`` lies on the grid (raises ``LayerError``)."""
    return layout_for(path, shape, batch, size, spec, evidence(layer))


def _rules(counts: dict[int, int], size: tuple[int, int], outputs: set[str]) -> LayerRules:
    def once(path: str, layer: Any, shape: tuple[int, ...] | None) -> Layout | None:
        if not shape or counts.get(id(layer), 0) != 1:
            return None
        return layout_of(path, layer, shape, 1, size, _AUTO)

    return LayerRules(
        layout_of=once,
        is_norm=is_norm,
        parent=lambda path: path.rpartition("/")[0],
        convention=convention(),
        outputs=frozenset(outputs),
        is_attention=lambda layer: isinstance(layer, keras.layers.MultiHeadAttention),
    )


def auto_layer(model: Any, inputs: Any) -> LayerRef:
    """Return the layer camlens explains when none is given (see ``_common.auto_pick``).

    One image is run with a tap on every layer. On a convolutional network, the last layer to
    finish with a feature map larger than 1x1, among layers called once (a nested model that
    ends in such a map is picked over its own last layer, since it finishes later). On a
    transformer, the first norm of the last block (a nested model or layer holding two norms).
    """
    finished, counts = record(model, inputs)
    rules = _rules(counts, input_size(tuple(image_of(inputs).shape)), _output_layers(model))
    picked = auto_pick(finished, rules)
    if picked is None:
        raise LayerError(
            f"found no layer of model {model.name!r} with a spatial output (a feature map or "
            f"tokens on a grid) for inputs of shape {tuple(image_of(inputs).shape)}; pass layer= "
            "explicitly (with layout=, grid= or reshape= where camlens cannot tell its layout)"
        )
    return picked


def _output_layers(model: Any) -> set[str]:
    """Return the names of the top-level layers that give a functional model its outputs."""
    names = set()
    for tensor in getattr(model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history[0].name)
    return names


def summarize(model: Any, inputs: Any) -> list[LayerInfo]:
    """Describe every layer, nested ones included, from one forward pass of one image."""
    finished, counts = record(model, inputs)
    rules = _rules(counts, input_size(tuple(image_of(inputs).shape)), _output_layers(model))
    return describe_layers(iter_layers(model), finished, rules)


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
