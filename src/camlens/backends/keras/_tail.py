"""Run only the part of a Keras model after one layer (the *tail*) on replaced activations.

Ablation-CAM needs the model's output for K ablated copies of one layer's activations per image.
For functional and Sequential models (nested at any depth) a small interpreter walks the
model's own graph, as ``Function._run_through_graph`` does: a first pass on the single image
computes every tensor that does not depend on the target layer (its *head*), and the tail pass
recomputes only the nodes that do, on the batch of replacements, reading every other input from
the first pass broadcast to the batch. A nested model that holds the target is interpreted the
same way, so only its inner tail runs. The graph analysis is done once, in :func:`make_tail`;
the first pass lives for one call.

Anything the interpreter does not handle (a subclassed model or layer on the way to the target,
a shared layer, a target with several outputs) falls back to running the whole model on the
repeated image with the layer's output replaced. Nothing of the user's model is touched either
way: operations are only called, in inference mode (``training=False``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import ops

from camlens.backends.base import Inputs, image_of, model_inputs
from camlens.backends.keras._graph import (
    Replacement,
    _unpack,
    call_operation,
    graph_of,
    iter_layers,
    run,
)
from camlens.errors import BadInputError, LayerNotFoundError

__all__ = ["Tail", "make_tail"]

#: ``id(symbolic tensor) -> value``, as in ``Function._run_through_graph``.
Values = dict[int, Any]


@dataclass(frozen=True, eq=False)
class _Level:
    """One functional graph on the way down to the target layer.

    Attributes:
        graph: The ``Functional`` that runs this level (a Sequential's inner graph).
        head: The nodes that do not depend on the target's output and that the tail needs
            (directly, or through the inputs of the nested model holding the target), in run
            order.
        node: The node calling the target layer, or the nested model that holds it.
        tail: The nodes that depend on ``node``'s outputs, in run order.
        borrowed: Ids of the head tensors the tail or the graph's outputs read.
        uses_inputs: Whether ``head`` or ``borrowed`` read the graph's inputs at all.
    """

    graph: Any
    head: tuple[Any, ...]
    node: Any
    tail: tuple[Any, ...]
    borrowed: frozenset[int]
    uses_inputs: bool


@dataclass(frozen=True, eq=False)
class Tail:
    """The model's output for replaced activations of one layer, for one image at a time.

    Holds the graph analysis only; every call recomputes the image's first pass. Build it with
    :func:`make_tail`.

    Attributes:
        model: The user's model, unchanged.
        layer: The layer whose output is replaced.
        levels: The graphs from the model down to the one calling ``layer``, outermost first;
            ``None`` when the whole model must run (the fallback).
    """

    model: Any
    layer: Any
    levels: tuple[_Level, ...] | None = field(repr=False)
    replacements: dict[int, Replacement] = field(default_factory=dict, repr=False)

    @property
    def exact_tail_only(self) -> bool:
        """Whether only the layers after the target run (``False``: the whole model runs)."""
        return self.levels is not None

    def __call__(self, image: Any, replacements: Any) -> Any:
        """Return the model's output for each replacement of the layer's output.

        Args:
            image: One input batch of shape ``(1, H, W, C)``, a tensor of the Keras backend; or
                one row of several inputs (:class:`Inputs`), for which the whole model runs.
            replacements: ``(B, h, w, K)`` activations used in place of the layer's output.

        Returns:
            The output ``model(image repeated B times, training=False)`` would give if the layer
            had output ``replacements``, shaped and structured as the model's output.
        """
        first = image_of(image)
        if int(first.shape[0]) != 1:
            raise BadInputError(
                f"the tail takes one image at a time, shape (1, H, W, C); got shape "
                f"{tuple(first.shape)}: call it once per image"
            )
        with _no_grad():
            if self.levels is None or isinstance(image, Inputs):
                return self._whole_model(image, replacements)
            return _run_tail(self.levels, image, replacements, self.replacements)

    def _whole_model(self, image: Any, replacements: Any) -> Any:
        count = int(replacements.shape[0])

        def broadcast(v: Any) -> Any:
            return ops.broadcast_to(v, (count, *v.shape[1:]))

        batch = image.map(broadcast) if isinstance(image, Inputs) else broadcast(image)
        taps = {id(self.layer): lambda out: replacements}
        return run(self.model, model_inputs(batch), taps, self.replacements)


def make_tail(model: Any, layer: Any, replacements: dict[int, Replacement] | None = None) -> Tail:
    """Analyse ``model``'s graph once and return the :class:`Tail` after ``layer``.

    Args:
        model: A built ``keras.Model``: functional, Sequential or subclassed, possibly nested.
        layer: The layer object (at any depth of nesting) whose output will be replaced.
        replacements: Operations computed differently, as in
            :func:`camlens.backends.keras._graph.run` (e.g. a final softmax skipped).

    Returns:
        A tail that runs only the layers after ``layer`` when every graph on the way to it is
        functional and calls it (and the models holding it) once, else the whole model.

    Raises:
        LayerNotFoundError: ``layer`` is not one of the model's layers.
    """
    if not any(found is layer for _, found in iter_layers(model)):
        raise LayerNotFoundError(
            f"layer {getattr(layer, 'name', layer)!r} is not part of model "
            f"{getattr(model, 'name', type(model).__name__)!r}; pass one of its layers"
        )
    levels = _analyse(model, layer)
    return Tail(model, layer, None if levels is None else tuple(levels), dict(replacements or {}))


def _analyse(model: Any, layer: Any) -> list[_Level] | None:
    """Return the levels from ``model`` down to ``layer``, or ``None`` if it cannot."""
    graph = graph_of(model)
    if graph is None:
        return None
    order = _run_order(graph)
    holders = [n for n in order if n.operation is layer or _holds(n.operation, layer)]
    if len(holders) != 1:  # not in the graph, or called more than once
        return None
    node = holders[0]
    if node.operation is layer:
        if len(node.outputs) != 1:
            return None
        inner: list[_Level] = []
    else:
        deeper = _analyse(node.operation, layer)
        if deeper is None:
            return None
        inner = deeper
    dirty = {id(t) for t in node.outputs}
    head: list[Any] = []
    tail: list[Any] = []
    for n in order:
        if n is node:
            continue
        if any(id(t) in dirty for t in n.input_tensors):
            tail.append(n)
            dirty.update(id(t) for t in n.outputs)
        else:
            head.append(n)
    read = [t for n in tail for t in n.input_tensors] + list(graph.outputs)
    borrowed = frozenset(id(t) for t in read if id(t) not in dirty)
    # Keep only the head nodes whose values are read: eagerly, nothing prunes the rest.
    needed = set(borrowed)
    if inner and inner[0].uses_inputs:
        needed.update(id(t) for t in node.input_tensors)
    kept: list[Any] = []
    for n in reversed(head):
        if any(id(t) in needed for t in n.outputs):
            kept.append(n)
            needed.update(id(t) for t in n.input_tensors)
    uses_inputs = any(id(t) in needed for t in graph.inputs)
    level = _Level(graph, tuple(reversed(kept)), node, tuple(tail), borrowed, uses_inputs)
    return [level, *inner]


def _run_order(graph: Any) -> list[Any]:
    """Return the graph's operation nodes in the order ``_run_through_graph`` runs them."""
    by_depth = graph._nodes_by_depth
    return [
        node
        for depth in sorted(by_depth, reverse=True)
        for node in by_depth[depth]
        if node.operation is not None and not node.is_input
    ]


def _holds(operation: Any, layer: Any) -> bool:
    """Return whether ``layer`` is one of ``operation``'s sub-layers, at any depth."""
    if not isinstance(operation, keras.layers.Layer):
        return False
    return any(found is layer for _, found in iter_layers(operation))


def _run_tail(
    levels: tuple[_Level, ...],
    image: Any,
    replacements: Any,
    operations: dict[int, Replacement],
) -> Any:
    """Run the first pass on ``image``, then the tail on ``replacements``, level by level."""
    heads: list[Values] = []
    inputs = image
    for i, level in enumerate(levels):
        values: Values = {}
        if level.uses_inputs:
            flat = level.graph._standardize_inputs(inputs)
            values = {id(x): v for x, v in zip(level.graph.inputs, flat, strict=True)}
        for node in level.head:
            _compute(level.graph, node, values, operations)
        heads.append(values)
        if i + 1 < len(levels) and levels[i + 1].uses_inputs:
            args, kwargs = level.node.arguments.fill_in(values)
            inputs = args[0] if args else kwargs["inputs"]

    batch = int(replacements.shape[0])
    flat = [replacements]
    for level, values in zip(reversed(levels), reversed(heads), strict=True):
        known: Values = dict(zip((id(t) for t in level.node.outputs), flat, strict=True))
        for key in level.borrowed:
            if key in values:
                cached = values[key]
                known[key] = ops.broadcast_to(cached, (batch, *cached.shape[1:]))
        for node in level.tail:
            _compute(level.graph, node, known, operations)
        flat = [known[id(x)] for x in level.graph.outputs]
    return _unpack(keras.tree.pack_sequence_as(levels[0].graph._outputs_struct, flat))


def _compute(graph: Any, node: Any, values: Values, operations: dict[int, Replacement]) -> None:
    """Call ``node``'s operation in inference mode and store its outputs in ``values``."""
    if any(id(x) not in values for x in node.input_tensors):
        return  # not computable from these inputs: Keras skips such nodes too
    args, kwargs = node.arguments.fill_in(values)
    get_operation = getattr(graph, "_get_operation_for_node", None)
    operation = node.operation if get_operation is None else get_operation(node)
    outputs = call_operation(operation, args, kwargs, operations)
    for x, y in zip(node.outputs, keras.tree.flatten(outputs), strict=False):
        values[id(x)] = y


def _no_grad() -> contextlib.AbstractContextManager[Any]:
    """Return a context that stops gradient recording where that is free (Keras on torch)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()
