"""Walking and running Keras models: nested layer paths, and a forward pass with taps.

A *tap* sees a layer's output and returns what the rest of the network receives in its place.
Functional and Sequential models (and models nested in them, at any depth) are run through
their own graph with every operation wrapped, so no layer, attribute or weight of the user's
model is touched. Subclassed models have no graph: there the tapped layers' ``call`` is wrapped
for the duration of the pass and restored in ``finally``; so too inside a layer of a graph that
runs its own code and holds tapped layers (a ``MultiHeadAttention`` and its projections, a
custom block), which is called with all the arguments the graph gives it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import keras

from camlens.errors import LayerError

Tap = Callable[[Any], Any]
#: Replaces a whole operation: receives the operation, its args and kwargs.
Replacement = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def children(layer: Any) -> list[Any]:
    """Return the direct sub-layers of a layer or model, input layers excluded."""
    if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
        found = list(layer.layers)
    else:
        found = list(layer._flatten_layers(include_self=False, recursive=False))
    return [c for c in found if not isinstance(c, keras.layers.InputLayer)]


def iter_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(path, layer)`` for every layer, depth first; paths are ``outer/inner``."""
    for layer in children(model):
        path = f"{prefix}{layer.name}"
        yield path, layer
        yield from iter_layers(layer, path + "/")


def graph_of(model: Any) -> Any:
    """Return the functional graph that runs ``model``, or ``None`` for a subclassed model."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def _containers(model: Any, ids: set[int]) -> set[int]:
    """Return the ids of the layers below ``model`` that hold one of ``ids`` deeper inside."""
    found: set[int] = set()

    def visit(layer: Any) -> bool:
        inside = False
        for child in children(layer):
            if visit(child) or id(child) in ids:
                inside = True
        if inside:
            found.add(id(layer))
        return inside

    visit(model)
    return found


def call_operation(
    op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], replacements: dict[int, Replacement]
) -> Any:
    """Call a graph operation in inference mode, or the replacement registered for it."""
    if "training" in getattr(op, "_call_context_args", ()):
        kwargs["training"] = False
    if id(op) in replacements:
        return replacements[id(op)](op, args, kwargs)
    return op(*args, **kwargs)


def _unpack(outputs: Any) -> Any:
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    return outputs


def run(
    model: Any,
    inputs: Any,
    taps: dict[int, Tap],
    replacements: dict[int, Replacement] | None = None,
    *,
    once: bool = True,
    shared: frozenset[int] = frozenset(),
) -> Any:
    """Run ``model(inputs)`` in inference mode, applying ``taps`` to the tapped layers' outputs.

    Args:
        model: A ``keras.Model`` (or a layer holding the tapped layers).
        inputs: The model's inputs.
        taps: ``id(layer) -> tap``; each tapped layer must run exactly once.
        replacements: ``id(operation) -> fn(op, args, kwargs)`` computing that operation's
            output instead of calling it (used to read a classifier's pre-softmax scores); a
            tapped operation that is replaced is tapped on the replacement's output.
        once: Raise :class:`LayerError` if a tapped layer runs more than once.
        shared: Ids of tapped layers that may run several times (each call is tapped).
    """
    replacements = replacements or {}
    calls: dict[int, int] = {}

    def tapped(layer: Any, out: Any) -> Any:
        if id(layer) not in taps:  # a replaced operation, not tapped
            return out
        calls[id(layer)] = calls.get(id(layer), 0) + 1
        if once and calls[id(layer)] > 1 and id(layer) not in shared:
            raise LayerError(
                f"layer {layer.name!r} is called more than once in one forward pass (a shared "
                "layer); pick a layer the model calls once"
            )
        return taps[id(layer)](out)

    wanted = set(taps) | set(replacements)
    return _run(model, inputs, wanted, _containers(model, wanted), tapped, replacements)


def _run(
    model: Any,
    inputs: Any,
    wanted: set[int],
    containers: set[int],
    tapped: Callable[[Any, Any], Any],
    replacements: dict[int, Replacement],
) -> Any:
    graph = graph_of(model)
    if graph is None:
        return _run_patched(model, inputs, wanted - set(replacements), tapped)

    def operation_fn(op: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            holds = id(op) in containers and id(op) not in replacements
            if holds and graph_of(op) is None:
                # A layer of its own code holding tapped layers (an attention layer's
                # projections, a custom block): called with all its arguments, in inference
                # mode (Keras hands ``training`` on to the layers inside), those patched.
                out = _patched_call(
                    op,
                    wanted - set(replacements),
                    tapped,
                    lambda: op(*args, **{**kwargs, "training": False}),
                )
            elif holds:
                inner = args[0] if args else kwargs.pop("inputs")
                out = _run(op, inner, wanted, containers, tapped, replacements)
            else:
                out = call_operation(op, args, kwargs, replacements)
            return tapped(op, out) if id(op) in wanted else out

        return call

    flat = graph._standardize_inputs(inputs)
    return _unpack(graph._run_through_graph(flat, operation_fn=operation_fn))


def _run_patched(
    model: Any, inputs: Any, wanted: set[int], tapped: Callable[[Any, Any], Any]
) -> Any:
    """Run a subclassed model, wrapping the tapped layers' ``call`` for this pass only."""
    return _patched_call(model, wanted, tapped, lambda: model(inputs, training=False))


def _patched_call(
    model: Any, wanted: set[int], tapped: Callable[[Any, Any], Any], invoke: Callable[[], Any]
) -> Any:
    """Return ``invoke()`` with the tapped layers inside ``model`` wrapped for the call only.

    The wrapper taps only in this thread: another thread running the model meanwhile passes it.
    """
    patched = [layer for _, layer in iter_layers(model) if id(layer) in wanted]
    owner = threading.get_ident()
    try:
        for layer in patched:
            original = layer.call

            def call(*args: Any, _layer: Any = layer, _call: Any = original, **kw: Any) -> Any:
                out = _call(*args, **kw)
                return tapped(_layer, out) if threading.get_ident() == owner else out

            layer.call = call
        return invoke()
    finally:
        for layer in patched:
            del layer.call  # the instance attribute; the class's method shows through again


def output_operation(model: Any) -> tuple[Any, Any] | None:
    """Return ``(op, owner)``: the operation producing a single-output model's output.

    Follows nested models down to the innermost operation. ``None`` for subclassed models or
    several outputs.
    """
    graph = graph_of(model)
    if graph is None or len(graph.outputs) != 1:
        return None
    op = graph.outputs[0]._keras_history.operation
    if isinstance(op, keras.Model):
        inner = output_operation(op)
        return inner if inner is not None else (op, model)
    return op, model
