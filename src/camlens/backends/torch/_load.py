"""Loading PyTorch models from files into modules camlens can explain.

What can be explained is what accepts forward hooks and backpropagates: ordinary
``torch.nn.Module`` trees. An exported program (``torch.export``) is unflattened back into one,
with the original submodule names; a state dict is loaded into the module a factory builds.
TorchScript modules refuse forward hooks, so they are turned away with advice (see
:data:`TORCHSCRIPT_ADVICE`).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from camlens.errors import ModelLoadError

__all__ = [
    "TORCHSCRIPT_ADVICE",
    "as_module",
    "export_program",
    "from_state_dict",
    "pickled",
    "place",
    "safetensors_state",
]

TORCHSCRIPT_ADVICE = (
    "camlens cannot explain TorchScript modules: they do not accept the forward hooks that "
    "read a layer's activations and gradients. Save the model with torch.export instead "
    "(torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: "
    "torch.export.Dim.DYNAMIC},)), 'model.pt2')), or save its state_dict and load it with a "
    "factory ('package.module:function' that builds the model)"
)

# Keys under which training scripts commonly nest the weights in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")


def place(model: torch.nn.Module, device: str | None) -> torch.nn.Module:
    """Move ``model`` to ``device`` (if given) and put it in eval mode."""
    if device is not None:
        try:
            model = model.to(torch.device(device))
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot move the model to device {device!r}: {exc}. Use 'cpu', 'cuda' or "
                "'cuda:1' (a device this machine has)"
            ) from exc
    return model.eval()


def export_program(path: Path) -> tuple[torch.nn.Module, tuple[int | None, ...]]:
    """Load a ``torch.export`` program and unflatten it into a module tree.

    Returns:
        The module, with the exported model's submodule names, and the image input's shape
        (``None`` for dynamic sizes; the batch size is always dynamic).
    """
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"{path.name!r} looks like a torch.export program but cannot be read "
            f"({type(exc).__name__}: {exc}); it may be truncated or saved by an incompatible "
            f"PyTorch version (this is {torch.__version__})"
        ) from exc
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    shapes = []
    for name in user_inputs:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        shapes.append(tuple(value.shape) if isinstance(value, torch.Tensor) else None)
    if len(shapes) != 1 or shapes[0] is None or len(shapes[0]) != 4:
        raise ModelLoadError(
            f"the program in {path.name!r} takes {len(shapes)} input(s) of shape(s) {shapes}; "
            "camlens explains models with one (N, C, H, W) image input"
        )
    shape = shapes[0]
    if isinstance(shape[0], int):
        raise ModelLoadError(
            f"the program in {path.name!r} was exported for a fixed batch of {shape[0]}; "
            "camlens runs batches of other sizes (one image to pick a layer, batches of "
            "perturbed images for Score-CAM and Ablation-CAM). Export it with a dynamic batch: "
            "torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))"
        )
    try:
        with warnings.catch_warnings():
            # PyTorch's own deprecation notice from inside unflatten; nothing a user can act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            module = torch.export.unflatten(program)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot rebuild the module tree of the program in {path.name!r} "
            f"({type(exc).__name__}: {exc}); save the model's state_dict and load it with a "
            "factory instead"
        ) from exc
    return module, tuple(d if isinstance(d, int) else None for d in shape)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _state_dict_in(obj: Any) -> Mapping[str, torch.Tensor] | None:
    """Return the state dict ``obj`` is or holds under a usual checkpoint key, else None."""
    if _is_state_dict(obj):
        return obj  # type: ignore[no-any-return]
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key]  # type: ignore[no-any-return]
    return None


def pickled(path: Path, *, trust_pickle: bool) -> Any:
    """Read a ``torch.save`` file: weights only, or any pickle when ``trust_pickle``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _corrupt(path, exc) from exc
        raise ModelLoadError(
            f"{path.name!r} holds pickled Python objects (a whole model saved with "
            "torch.save(model)?), not just tensors. Unpickling can run arbitrary code, so "
            "camlens reads it only with trust_pickle=True (--trust-pickle on the command line), "
            "for files from a source you trust. Safer: save model.state_dict() and load it with "
            "a factory"
        ) from exc
    except Exception as exc:
        raise _corrupt(path, exc) from exc


def _corrupt(path: Path, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"cannot read {path.name!r} as a PyTorch file ({type(exc).__name__}: {exc}); is it "
        "truncated or corrupt?"
    )


def as_module(obj: Any, path: Path, build: Callable[[], Any] | None, factory: str | None) -> Any:
    """Return the module a ``torch.load`` result gives: itself or, for weights, the factory's."""
    if isinstance(obj, torch.nn.Module):
        if build is not None:
            raise ModelLoadError(
                f"{path.name!r} holds a whole {type(obj).__name__} module, so factory "
                f"{factory!r} is not used; drop the factory"
            )
        return obj
    state = _state_dict_in(obj)
    if state is None:
        kind = (
            f"a {type(obj).__name__} with keys {list(obj)[:8]}"
            if isinstance(obj, Mapping)
            else f"a {type(obj).__name__}"
        )
        raise ModelLoadError(
            f"{path.name!r} holds {kind}, neither a module nor a state dict of tensors "
            f"(also looked under {', '.join(repr(k) for k in _NESTED_KEYS)})"
        )
    if build is None:
        raise ModelLoadError(
            f"{path.name!r} holds a state dict ({len(state)} tensors) but no model definition; "
            "pass factory='package.module:function' (--factory on the command line), a "
            "function that builds the model with no arguments"
        )
    return from_state_dict(state, build, factory or "", path)


def from_state_dict(
    state: Mapping[str, torch.Tensor], build: Callable[[], Any], factory: str, path: Path
) -> torch.nn.Module:
    """Build the model with ``build()`` and load ``state`` into it strictly."""
    try:
        model = build()
    except Exception as exc:
        raise ModelLoadError(
            f"factory {factory!r} raised {type(exc).__name__}: {exc}; it must build the model "
            "when called with no arguments"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(
            f"factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module; "
            "it must return the (untrained) model the state dict belongs to"
        )
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or resized:
        parts = [
            f"{len(items)} {what} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})"
            for what, items in (
                ("missing key(s)", missing),
                ("unexpected key(s)", unexpected),
                ("shape mismatch(es)", resized),
            )
            if items
        ]
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = (
                "; the file's keys start with 'module.' (saved from DataParallel): save "
                "model.module.state_dict() instead"
            )
        raise ModelLoadError(
            f"the state dict in {path.name!r} does not fit the model factory {factory!r} "
            f"builds: {'; '.join(parts)}{hint}. Check that the factory builds the same "
            "architecture the weights were trained with"
        )
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelLoadError(
            f"loading the state dict in {path.name!r} into the model of {factory!r} failed: {exc}"
        ) from exc
    return model


def safetensors_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file with the ``safetensors`` package."""
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ModelLoadError(
            f"reading {path.name!r} needs the safetensors package: pip install safetensors "
            "(or pip install 'camlens[safetensors]')"
        ) from exc
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read {path.name!r} as a safetensors file ({type(exc).__name__}: {exc}); "
            "is it truncated or corrupt?"
        ) from exc
