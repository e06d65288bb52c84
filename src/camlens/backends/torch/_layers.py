"""Finding target layers in a torch model: by name, by module object, or automatically."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any

import torch

from camlens.backends._common import describe_layers, last_feature_map
from camlens.backends.base import LayerInfo, LayerRef
from camlens.backends.torch._forward import call_model, this_thread
from camlens.backends.torch._state import inference_state
from camlens.errors import LayerError, LayerNotFoundError


def _canonical(name: str) -> str:
    """Accept ``features[18].conv`` and ``features/18/conv`` for ``features.18.conv``."""
    return re.sub(r"\[(\d+)\]", r".\1", name.strip()).replace("/", ".").strip(".")


def _suggest(name: str, names: list[str]) -> list[str]:
    leaf = name.rsplit(".", 1)[-1]
    by_suffix = [n for n in names if n == leaf or n.endswith("." + leaf)]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return list(dict.fromkeys(by_suffix[-3:][::-1] + close))[:5]


def resolve_layer(model: torch.nn.Module, layer: Any) -> LayerRef:
    """Return the layer given by a dotted name or a module object."""
    if isinstance(layer, torch.nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return LayerRef(name, module)
        raise LayerNotFoundError(
            f"the module given as layer ({type(layer).__name__}) is not a submodule of this "
            f"{type(model).__name__}; pass one of its submodules or a dotted name"
        )
    if not isinstance(layer, str):
        raise LayerNotFoundError(
            f"layer must be a dotted name, a torch.nn.Module or a list of them; got {layer!r}"
        )
    modules = dict(model.named_modules())
    name = _canonical(layer)
    if name and name in modules:
        return LayerRef(name, modules[name])
    names = [n for n in modules if n]
    hint = _suggest(name, names)
    tip = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise LayerNotFoundError(f"layer {layer!r} not found in {type(model).__name__}{tip}")


def _record(
    model: torch.nn.Module, inputs: torch.Tensor
) -> tuple[list[tuple[str, torch.nn.Module, tuple[int, ...] | None]], Counter[str]]:
    """Run one image with a hook on every submodule; the model is left as found.

    Returns:
        ``(name, module, output shape)`` in the order modules finish (``None`` for an output
        that is not a tensor), and how many times each module ran.
    """
    finished: list[tuple[str, torch.nn.Module, tuple[int, ...] | None]] = []
    calls: Counter[str] = Counter()

    def make_hook(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            calls[name] += 1
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            finished.append((name, module, shape))

        return hook

    handles = []
    with inference_state(model):
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(this_thread(make_hook(name))))
            with torch.no_grad():
                call_model(model, inputs[:1])
        finally:
            for handle in handles:
                handle.remove()
    return finished, calls


def is_feature_map(shape: tuple[int, ...] | None, calls: int) -> bool:
    """Return whether a module can be explained: ``(N, C, H, W)`` output, ``H * W > 1``, once."""
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1 and calls == 1


def auto_layer(model: torch.nn.Module, inputs: torch.Tensor) -> LayerRef:
    """Return the last module, in execution order, whose output is a spatial feature map.

    One image is run through the model with a hook on every submodule. The pick is the last
    module to finish with an ``(N, C, H, W)`` output, ``H * W > 1``, among modules called once:
    the network's last feature map before it is pooled away (for a container and its last child
    returning the same tensor, the container, which finishes last).
    """
    finished, calls = _record(model, inputs)
    picked = last_feature_map(finished, lambda name, module: calls[name], is_feature_map)
    if picked is None:
        raise LayerError(
            f"found no layer of {type(model).__name__} with a spatial (N, C, H, W) output for "
            f"inputs of shape {tuple(inputs.shape)}; pass layer= explicitly"
        )
    return picked


def summarize(model: torch.nn.Module, inputs: torch.Tensor) -> list[LayerInfo]:
    """Describe every submodule, in definition order, from one forward pass of one image."""
    finished, calls = _record(model, inputs)
    modules = ((name, module) for name, module in model.named_modules() if name)
    return describe_layers(modules, finished, lambda name, module: calls[name], is_feature_map)
