"""Layers of an ONNX graph: its tensors, named as the graph names them.

A layer is a tensor a node produces (``"/features/features.18/Relu_output_0"`` for a model the
PyTorch exporter wrote); a node's name stands for its only output. A tensor can be explained
when it is a 4-D float feature map with more than one position (in its own layout) on the way
to the explained output; the automatic pick is the last such tensor in graph order, as for the
other frameworks: the network's last feature map before it is pooled away.
"""

from __future__ import annotations

import difflib
from typing import Any

from camlens.backends.base import LayerInfo, LayerRef
from camlens.backends.onnx._graph import BATCH, Graph, Shapes, spatial
from camlens.errors import LayerError, LayerNotFoundError

__all__ = ["auto_layer", "resolve_layer", "summarize"]


def resolve_layer(graph: Graph, layer: Any) -> LayerRef:
    """Return the tensor named by ``layer``: a tensor name, or a node name with one output."""
    if not isinstance(layer, str):
        raise LayerNotFoundError(
            f"a layer of an ONNX model is a tensor name (see camlens.layers); got {layer!r}"
        )
    tensors = [name for name, _ in graph.tensors()]
    if layer in graph.producer:
        return LayerRef(layer, layer)
    nodes = [node for node in graph.nodes if node.name == layer]
    if len(nodes) == 1:
        outputs = [out for out in nodes[0].output if out]
        if len(outputs) == 1:
            return LayerRef(outputs[0], outputs[0])
        raise LayerNotFoundError(
            f"node {layer!r} has {len(outputs)} outputs; name one of them: "
            f"{', '.join(repr(o) for o in outputs)}"
        )
    if layer == graph.input or layer in graph.initializers:
        raise LayerError(
            f"{layer!r} is the model's input or a weight, not a layer's output; pick a tensor a "
            "node computes (see camlens.layers)"
        )
    close = difflib.get_close_matches(layer, tensors, n=5, cutoff=0.6)
    tip = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LayerNotFoundError(f"layer {layer!r} not found in {graph.name}{tip}")


def _candidates(graph: Graph, shapes: Shapes, explained: str) -> list[bool]:
    layouts = graph.layouts()
    needed = graph.ancestors(explained)
    flags = []
    for name, _ in graph.tensors():
        info = shapes.get(name)
        size = spatial(info, layouts.get(name, graph.layout))
        flags.append(
            info is not None
            and info.is_float
            and size is not None
            and size[0] * size[1] > 1
            and name in needed
            and name != explained
        )
    return flags


def auto_layer(graph: Graph, shapes: Shapes, explained: str) -> LayerRef:
    """Return the last explainable tensor in graph order."""
    names = [name for name, _ in graph.tensors()]
    flags = _candidates(graph, shapes, explained)
    for name, ok in zip(reversed(names), reversed(flags), strict=True):
        if ok:
            return LayerRef(name, name)
    raise LayerError(
        f"found no tensor of {graph.name} with a spatial 4-D output (a feature map with more "
        "than 1x1 positions) on the way to its output; pass layer= explicitly, or explain an "
        "image model with convolutional feature maps"
    )


def summarize(graph: Graph, shapes: Shapes, explained: str) -> list[LayerInfo]:
    """Describe every tensor a node produces, in graph order, with its inferred shape."""
    flags = _candidates(graph, shapes, explained)
    last = max((i for i, ok in enumerate(flags) if ok), default=None)
    layouts = graph.layouts()
    rows = []
    for i, ((name, node), ok) in enumerate(zip(graph.tensors(), flags, strict=True)):
        info = shapes.get(name)
        dims = None
        if info is not None and info.dims is not None:
            dims = tuple(
                None
                if axis == 0 and (d == BATCH or d is None)
                else (d if isinstance(d, int) else None)
                for axis, d in enumerate(info.dims)
            )
        layout = layouts.get(name, graph.layout)
        size = spatial(info, layout) if ok else None
        rows.append(
            LayerInfo(
                name=name,
                type=node.op_type,
                output_shape=dims,
                candidate=ok,
                auto=i == last,
                layout=None if size is None else f"{layout.lower()} {size[0]}x{size[1]}",
            )
        )
    return rows
