"""Re-running only the part of a torch model after one layer, for many replacement activations.

Ablation-CAM needs the model's output for K ablated copies of a layer's activations. Re-running
the whole network K times wastes the trunk; :func:`make_tail` traces the model once with
``torch.fx``, keeping the layer as one node, and splits the graph in two:

- the *tail*: every node that depends, directly or not, on the layer's output. It runs on the
  batch of B replacement activations, with the layer's node replaced by them.
- the *upstream*: every other node. It runs once per call on the one image (batch 1); the values
  the tail reads from it (a residual branch, the input) are broadcast to batch B with ``expand``,
  a view, never a copy. One the tail writes into in place, or returns as is, gets a real copy.

A few upstream nodes run in the tail instead, because they are cheap and batch 1 would give them
the wrong value: shape reads of the input (``n = x.shape[0]``) and what is computed from shapes
only, and values that do not depend on the input at all (parameters read in ``forward``). When
the tail reads no other upstream value, the upstream does not run at all: for a layer near the
head, a call costs only the head on B rows.

Where tracing fails (data-dependent control flow, untraceable code) or the split might not be
exact (the layer runs more than once, in-place writes whose order the split would change, hooks
that the traced graph would skip), a fallback runs the whole model on the expanded image with a
forward hook that swaps the layer's output.
"""

from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from camlens.backends.base import Inputs, image_of
from camlens.backends.torch._forward import call_model, expanded, this_thread
from camlens.errors import BadInputError

__all__ = ["Tail", "make_tail"]

# Reads of a tensor's metadata: run in the tail, on the expanded input, they see batch B.
_SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device"})
_SHAPE_METHODS = frozenset({"size", "dim", "numel"})


class _LayerTracer(fx.Tracer):
    """Trace as ``torch.fx`` does by default, but keep ``layer`` as one ``call_module`` node."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        """Return True for the target layer and for torch's own modules."""
        return m is self.layer or super().is_leaf_module(m, module_qualified_name)


@dataclass(frozen=True)
class _Split:
    """A traced model split at the layer: what runs once per image and what runs per batch.

    Attributes:
        upstream: ``image -> tuple`` of the upstream values the tail reads (batch 1), or None
            when the tail reads none.
        tail: ``(replacements, *upstream values) -> the model's output``.
        batched: Per upstream value, whether it depends on the image (and so is expanded).
        copied: Per upstream value, whether the tail writes into it or returns it.
        copy_replacements: Whether the tail writes into the layer's output or returns it.
        copy_image: Whether the model writes into its input, which must not be the caller's
            image (every call reuses it).
    """

    upstream: fx.GraphModule | None
    tail: fx.GraphModule
    batched: tuple[bool, ...]
    copied: tuple[bool, ...]
    copy_replacements: bool
    copy_image: bool

    def arguments(self, image: torch.Tensor, replacements: torch.Tensor) -> list[Any] | None:
        """Return the tail's arguments, or None if an upstream value cannot be broadcast.

        An image-dependent value must be a tensor whose leading axis is the batch of one; a
        shape or a number computed from the image (one the tracer did not see as a shape read)
        or a tensor with its batch elsewhere would not broadcast.
        """
        b = replacements.shape[0]
        values: tuple[Any, ...] = ()
        if self.upstream is not None:
            values = call_model(self.upstream, image.clone() if self.copy_image else image)
        args: list[Any] = [replacements.clone() if self.copy_replacements else replacements]
        for value, batched, copied in zip(values, self.batched, self.copied, strict=True):
            if batched:
                if not (isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == 1):
                    return None
                value = value.expand(b, *value.shape[1:])
                if copied:
                    value = value.contiguous()
            args.append(value)
        return args


class Tail:
    """Evaluates the part of a model after one layer, for many replacement activations.

    Built once per explainer by :func:`make_tail`; a call keeps nothing afterwards. Calls run
    under ``torch.inference_mode()`` and assume a model in eval mode whose images are processed
    independently; Python branches on ``self.training`` are fixed when the model is traced.

    Attributes:
        exact_tail_only: True when only the tail runs per replacement batch (the ``torch.fx``
            path); False for the fallback, which runs the whole model on the expanded image.
        reason: Why the fallback is used; empty on the ``torch.fx`` path.
    """

    exact_tail_only: bool
    reason: str

    def __init__(
        self, model: torch.nn.Module, layer: torch.nn.Module, split: _Split | None, reason: str
    ) -> None:
        """Hold a split of ``model`` at ``layer``, or None and the reason for the fallback."""
        self._model = model
        self._layer = layer
        self._split = split
        self.exact_tail_only = split is not None
        self.reason = reason

    def __call__(self, image: torch.Tensor | Inputs, replacements: torch.Tensor) -> Any:
        """Return the model's output with the layer's output replaced, one row per replacement.

        A call on the ``torch.fx`` path runs the full model instead if an upstream value turns
        out not to broadcast (see :meth:`_Split.arguments`).

        Args:
            image: One prepared input, ``(1, C, H, W)``, on the model's device; or one row of
                several inputs (:class:`Inputs`), for which the whole model runs.
            replacements: ``(B, K, h, w)`` activations to use in place of the layer's output.

        Returns:
            The model's raw output (tensor, tuple, dict) for the batch of B, as
            ``model(image.expand(B, ...))`` gives it when the layer outputs ``replacements``.
        """
        first = image_of(image)
        if first.ndim == 0 or first.shape[0] != 1:
            raise BadInputError(f"Tail takes one image, shape (1, ...); got {tuple(first.shape)}")
        with torch.inference_mode():
            if self._split is not None and isinstance(image, torch.Tensor):
                args = self._split.arguments(image, replacements)
                if args is not None:
                    return self._split.tail(*args)
            return self._full(image, replacements)

    def _full(self, image: torch.Tensor | Inputs, replacements: torch.Tensor) -> Any:
        """Run the whole model on the expanded image (and the other inputs beside it), the
        layer's output swapped by a hook."""

        def swap(module: torch.nn.Module, args: Any, out: Any) -> torch.Tensor:
            # A copy: in-place ops after the layer (ReLU(inplace=True)) must not write into
            # the caller's tensor.
            return replacements.clone()

        handle = self._layer.register_forward_hook(this_thread(swap))
        try:
            return call_model(self._model, expanded(image, replacements.shape[0]))
        finally:
            handle.remove()


def make_tail(model: torch.nn.Module, layer_name: str) -> Tail:
    """Trace ``model`` and split it after the layer ``layer_name``; fall back where needed.

    The traced graph shares modules and parameters with ``model``, which is not modified.

    Args:
        model: The user's model, in eval mode.
        layer_name: Dotted name of the layer, as in ``model.named_modules()``.

    Returns:
        A :class:`Tail`; ``exact_tail_only`` says whether the ``torch.fx`` split is used and
        ``reason`` why not.
    """
    layer = model.get_submodule(layer_name)
    try:
        graph = _LayerTracer(layer).trace(model)
    except Exception as exc:  # any failure to trace: the fallback runs the model as it is
        reason = f"torch.fx cannot trace {type(model).__name__}: {type(exc).__name__}: {exc}"
        return Tail(model, layer, None, reason)
    split = _split(model, layer, layer_name, graph)
    if isinstance(split, str):
        return Tail(model, layer, None, split)
    return Tail(model, layer, split, "")


def _written(node: fx.Node, model: torch.nn.Module) -> fx.Node | None:
    """Return the node whose value ``node`` writes into in place, or None."""
    out = node.kwargs.get("out")
    if isinstance(out, fx.Node):
        return out
    first = node.args[0] if node.args else None
    if not isinstance(first, fx.Node):
        return None
    if node.op == "call_module":
        inplace = getattr(model.get_submodule(str(node.target)), "inplace", False) is True
    elif node.op == "call_method":
        name = str(node.target)
        inplace = name.endswith("_") and not name.startswith("_")
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        inplace = (
            node.target is operator.setitem
            or node.kwargs.get("inplace") is True
            or (name.endswith("_") and not name.startswith("_"))
        )
    else:
        inplace = False
    return first if inplace else None


def _is_shape_read(node: fx.Node) -> bool:
    """Whether ``node`` reads a tensor's shape, rank, dtype or device."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    return (
        node.op == "call_function"
        and node.target is builtins.getattr
        and len(node.args) == 2
        and node.args[1] in _SHAPE_ATTRS
    )


def _descendants(nodes: list[fx.Node], roots: set[fx.Node]) -> set[fx.Node]:
    """Return ``roots`` and every node of ``nodes`` (in graph order) that depends on them."""
    found = set(roots)
    for node in nodes:
        if any(arg in found for arg in node.all_input_nodes):
            found.add(node)
    return found


def _unhooked(model: torch.nn.Module, graph: fx.Graph) -> list[str]:
    """Return the modules with forward hooks that the traced graph would not call.

    The graph calls only its leaf modules (and, through them, their submodules); the root and
    the containers it was traced through are inlined, so their hooks would be skipped.
    """
    called: set[torch.nn.Module] = set()
    for node in graph.nodes:
        if node.op == "call_module":
            called.update(model.get_submodule(str(node.target)).modules())
    return [
        name or type(model).__name__
        for name, module in model.named_modules()
        if module not in called and (module._forward_hooks or module._forward_pre_hooks)
    ]


def _split(
    model: torch.nn.Module, layer: torch.nn.Module, layer_name: str, graph: fx.Graph
) -> _Split | str:
    """Split the traced ``graph`` at the layer; return the reason instead where it is unsafe."""
    nodes = list(graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    calls = [
        node
        for node in nodes
        if node.op == "call_module" and model.get_submodule(str(node.target)) is layer
    ]
    if len(calls) != 1:
        return f"layer {layer_name!r} is called {len(calls)} times in the traced forward pass"
    target = calls[0]
    placeholders = [node for node in nodes if node.op == "placeholder"]
    required = [
        node for node in placeholders[1:] if not node.args and not str(node.target).startswith("*")
    ]
    if not placeholders or required:
        return f"forward of {type(model).__name__} does not take exactly one required input"
    hooked = _unhooked(model, graph)
    if hooked:
        return f"modules {hooked} have forward hooks that the traced graph would skip"

    downstream = _descendants(nodes, {target})
    batched = _descendants(nodes, {placeholders[0]})
    written = {node: _written(node, model) for node in nodes}
    for node, into in written.items():
        if into is None:
            continue
        if into not in batched and into not in downstream:
            return f"{node.format_node()} writes into a parameter, buffer or constant"
        if node not in downstream and order[node] > order[target]:
            return f"{node.format_node()} writes in place after the layer, outside its tail"
        if node in downstream and into not in downstream:
            later = [user for user in into.users if order[user] > order[node]]
            if any(user not in downstream for user in later):
                return f"{node.format_node()} writes into a value read after it outside the tail"

    # Upstream nodes that run in the tail: constants, and shape reads of the input and what is
    # computed from shapes only (in graph order, so a node's inputs are classified first).
    moved: set[fx.Node] = set()
    for node in nodes:
        if node in downstream or node.op in ("placeholder", "output") or written[node] is not None:
            continue
        inputs = node.all_input_nodes
        if (
            node not in batched
            or _is_shape_read(node)
            or (node.op != "call_module" and inputs and all(arg in moved for arg in inputs))
        ):
            moved.add(node)
    in_tail = (downstream - {target}) | {nodes[-1]}
    for node in reversed(nodes):
        if node in moved and any(user in in_tail for user in node.users):
            in_tail.add(node)
    boundary = [
        node
        for node in nodes
        if node not in in_tail
        and node is not target
        and any(user in in_tail for user in node.users)
    ]
    returned = set(nodes[-1].all_input_nodes)
    tail_writes = {written[node] for node in in_tail} - {None}

    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {target: tail.placeholder("replacements")}
    for node in boundary:
        env[node] = tail.placeholder(node.name)
    for node in nodes:
        if node in in_tail:
            env[node] = tail.node_copy(node, env.__getitem__)

    upstream: fx.GraphModule | None = None
    if boundary:
        # The whole forward at batch 1 without the tail, the layer included (it may write into
        # its input, which the tail may read), so every in-place effect happens as in the model.
        up = fx.Graph()
        up_env: dict[fx.Node, fx.Node] = {}
        for node in nodes[:-1]:
            if node not in downstream or node is target:
                up_env[node] = up.node_copy(node, up_env.__getitem__)
        up.output(tuple(up_env[node] for node in boundary))
        upstream = fx.GraphModule(model, up, class_name="Upstream")
    return _Split(
        upstream=upstream,
        tail=fx.GraphModule(model, tail, class_name="Tail"),
        batched=tuple(node in batched for node in boundary),
        copied=tuple(node in tail_writes or node in returned for node in boundary),
        copy_replacements=target in tail_writes or target in returned,
        copy_image=placeholders[0] in written.values(),
    )
