"""Finding target layers in a torch model: by name, by module object, or automatically."""

from __future__ import annotations

import difflib
import re
import weakref
from collections import Counter
from typing import Any

import torch

from camlens._types import Size
from camlens.backends._common import LayerRules, auto_pick, describe_layers
from camlens.backends._layout import Layout, LayoutName, LayoutSpec, layout_for
from camlens.backends.base import LayerInfo, LayerRef, image_of, rows
from camlens.backends.torch._forward import call_model, this_thread
from camlens.backends.torch._state import inference_state
from camlens.errors import LayerError, LayerNotFoundError

_AUTO = LayoutSpec()


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
    model: torch.nn.Module, inputs: Any
) -> tuple[list[tuple[str, torch.nn.Module, tuple[int, ...] | None]], Counter[str], set[str]]:
    """Run one image with a hook on every submodule; the model is left as found.

    Returns:
        ``(name, module, output shape)`` in the order modules finish (``None`` for an output
        that is not a tensor), how many times each module ran, and the modules whose output
        is a tensor of the model's own output (a dense head's logits).
    """
    finished: list[tuple[str, torch.nn.Module, tuple[int, ...] | None]] = []
    calls: Counter[str] = Counter()
    produced: dict[str, weakref.ref[torch.Tensor]] = {}  # weak: freed maps stay freed

    def make_hook(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            calls[name] += 1
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            finished.append((name, module, shape))
            if isinstance(out, torch.Tensor):
                produced[name] = weakref.ref(out)

        return hook

    handles = []
    with inference_state(model):
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(this_thread(make_hook(name))))
            with torch.no_grad():
                result = call_model(model, rows(inputs, 0, 1))
        finally:
            for handle in handles:
                handle.remove()
    outputs = _tensors(result)
    final = {name for name, ref in produced.items() if any(ref() is t for t in outputs)}
    return finished, calls, final


def _tensors(output: Any) -> list[torch.Tensor]:
    """Return the tensors of a model output: itself, or the items of a tuple, list or mapping
    (a ``transformers`` ``ModelOutput`` is a mapping)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for t in output if isinstance(t, torch.Tensor)]
    if hasattr(output, "values") and callable(output.values):
        return [t for t in output.values() if isinstance(t, torch.Tensor)]
    return []


#: Modules whose 4-D output is channels-first by definition.
_CHANNELS_FIRST: tuple[type[torch.nn.Module], ...] = (
    torch.nn.modules.conv._ConvNd,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.GroupNorm,
    torch.nn.LocalResponseNorm,
    torch.nn.modules.pooling._MaxPoolNd,
    torch.nn.modules.pooling._AvgPoolNd,
    torch.nn.modules.pooling._AdaptiveAvgPoolNd,
    torch.nn.modules.pooling._AdaptiveMaxPoolNd,
    torch.nn.Upsample,
    torch.nn.PixelShuffle,
    torch.nn.Dropout2d,
)
#: Modules that act on the last axis: on a 4-D tensor, channels-last.
_LAST_AXIS: tuple[type[torch.nn.Module], ...] = (torch.nn.Linear, torch.nn.LayerNorm) + (
    (torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()
)


def _declared(module: torch.nn.Module) -> LayoutName | None:
    fmt = getattr(module, "data_format", None)
    if fmt in ("channels_first", "channels_last"):  # e.g. ConvNeXt's own LayerNorm
        return "nchw" if fmt == "channels_first" else "nhwc"
    if isinstance(module, _CHANNELS_FIRST):
        return "nchw"
    if isinstance(module, _LAST_AXIS):
        return "nhwc"
    return None


def evidence(module: torch.nn.Module) -> LayoutName | None:
    """Return the layout a module's 4-D output has by what the module is, or ``None``.

    A leaf module says it by its kind (a convolution is channels-first, a ``Linear`` or
    ``LayerNorm`` acts on the last axis) or its ``data_format``; a container, when every module
    inside it that says anything says the same.
    """
    own = _declared(module)
    if own is not None or not module._modules:
        return own
    said = {d for m in module.modules() if m is not module and (d := _declared(m)) is not None}
    return said.pop() if len(said) == 1 else None


def hint(model: torch.nn.Module, name: str) -> LayoutName | None:
    """Return the layout of the nearest module defined before ``name`` in the same parent that
    says one (an activation or dropout after a convolution), or ``None``."""
    parent_name, _, leaf = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
    except AttributeError:
        return None
    siblings = list(parent._modules.items())
    index = next((i for i, (key, _) in enumerate(siblings) if key == leaf), None)
    if index is None:
        return None
    for _, module in reversed(siblings[:index]):
        said = evidence(module) if module is not None else None
        if said is not None:
            return said
    return None


def is_norm(module: Any) -> bool:
    """Return whether a module is a normalisation layer over the last axis (LayerNorm...)."""
    if isinstance(module, _LAST_AXIS) and not isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def is_attention(module: Any) -> bool:
    """Return whether a module is a block's attention (``MultiheadAttention``, ``...Attention``)."""
    return isinstance(module, torch.nn.MultiheadAttention) or type(module).__name__.endswith(
        "Attention"
    )


def _rules(
    model: torch.nn.Module, calls: Counter[str], size: Size, outputs: set[str]
) -> LayerRules:
    def once(name: str, module: Any, shape: tuple[int, ...] | None) -> Layout | None:
        if shape is None or calls[name] != 1:
            return None
        return layout_for(name, shape, 1, size, _AUTO, evidence(module), hint(model, name))

    return LayerRules(
        layout_of=once,
        is_norm=is_norm,
        parent=lambda name: name.rpartition(".")[0],
        convention="nchw",
        outputs=frozenset(outputs),
        is_attention=is_attention,
    )


def auto_layer(model: torch.nn.Module, inputs: Any) -> LayerRef:
    """Return the layer camlens explains when none is given (see ``_common.auto_pick``).

    One image is run through the model with a hook on every submodule. On a convolutional
    network, the last module to finish with a feature map, ``H * W > 1``, among modules called
    once: the last map before it is pooled away (for a container and its last child returning
    the same tensor, the container, which finishes last). On a transformer, the last block's
    first norm.
    """
    finished, calls, final = _record(model, inputs)
    image = image_of(inputs)
    size = (int(image.shape[-2]), int(image.shape[-1]))
    picked = auto_pick(finished, _rules(model, calls, size, final))
    if picked is None:
        raise LayerError(
            f"found no layer of {type(model).__name__} with a spatial output (a feature map or "
            f"tokens on a grid) for inputs of shape {tuple(image.shape)}; pass layer= "
            "explicitly (with layout=, grid= or reshape= where camlens cannot tell its layout)"
        )
    return picked


def summarize(model: torch.nn.Module, inputs: torch.Tensor) -> list[LayerInfo]:
    """Describe every submodule, in definition order, from one forward pass of one image."""
    finished, calls, final = _record(model, inputs)
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    modules = ((name, module) for name, module in model.named_modules() if name)
    return describe_layers(modules, finished, _rules(model, calls, size, final))
