"""Backends: everything framework-specific. Chosen from the model object, never from a setting.

A framework is only looked at if the user has already imported it: dispatch reads
``sys.modules`` and imports nothing new.
"""

from __future__ import annotations

import sys
from typing import Any

from camlens.backends.base import Backend, Copies, LayerRef, OutputSelector, Probe, Scoring
from camlens.errors import UnsupportedModelError

__all__ = [
    "Backend",
    "Copies",
    "LayerRef",
    "OutputSelector",
    "Probe",
    "Scoring",
    "backend_for",
    "copies_for",
]


def backend_for(model: Any, *, output: OutputSelector = None, logits: bool = True) -> Backend:
    """Return the backend for ``model``.

    Keras is checked before torch, since Keras-on-torch layers are also torch modules.
    """
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, getattr(keras, "Model", ())):
        from camlens.backends.keras import KerasBackend

        return KerasBackend(model, output=output, logits=logits)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        if isinstance(model, torch.jit.ScriptModule):
            from camlens.backends.torch._load import TORCHSCRIPT_ADVICE

            raise UnsupportedModelError(
                f"this is a TorchScript {type(model).__name__}; {TORCHSCRIPT_ADVICE}"
            )
        from camlens.backends.torch import TorchBackend

        return TorchBackend(model, output=output)
    raise UnsupportedModelError(
        f"camlens cannot explain a {type(model).__module__}.{type(model).__qualname__}: "
        "pass a torch.nn.Module or a keras.Model"
    )


def copies_for(model: Any) -> Copies:
    """Return the maker of randomised copies of ``model`` (Keras before torch)."""
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, getattr(keras, "Model", ())):
        from camlens.backends.keras._randomise import KerasCopies

        return KerasCopies(model)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from camlens.backends.torch._randomise import TorchCopies

        return TorchCopies(model)
    backend_for(model)  # raises UnsupportedModelError with the usual message
    raise UnsupportedModelError(f"no sanity check for a {type(model).__name__}")
