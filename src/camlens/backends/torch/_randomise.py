"""Randomised copies of a torch model, for the parameter-randomisation sanity check."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from camlens.errors import UnsupportedModelError


class TorchCopies:
    """Copies of a ``torch.nn.Module`` by ``copy.deepcopy``, reset with ``reset_parameters()``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.torch: Any = torch

    def copy(self) -> Any:
        try:
            return copy.deepcopy(self.model)
        except Exception as exc:
            raise UnsupportedModelError(
                f"copy.deepcopy failed on this {type(self.model).__name__} ({exc}); the sanity "
                "check randomises a copy, never the model itself: make the model deep-copyable"
            ) from exc

    @staticmethod
    def _owns(module: Any) -> bool:
        return next(iter(module.parameters(recurse=False)), None) is not None

    def default_layers(self, model: Any) -> list[str]:
        names = [name for name, module in model.named_modules() if name and self._owns(module)]
        return names[::-1]

    def layer(self, model: Any, name: str) -> Any:
        return model.get_submodule(name)

    def _parts(self, layer: Any) -> list[Any]:
        """Return the modules inside ``layer`` that own parameters or can reset themselves."""
        return [
            m
            for m in layer.modules()
            if self._owns(m) or callable(getattr(m, "reset_parameters", None))
        ]

    def has_parameters(self, layer: Any) -> bool:
        return bool(self._parts(layer))

    def randomise(self, layer: Any, seed: int) -> None:
        torch = self.torch
        parts = self._parts(layer)
        cuda = sorted({p.device.index or 0 for p in layer.parameters() if p.device.type == "cuda"})
        # Forked generator states, only those the parameters draw from (torch.manual_seed would
        # also queue a seed for CUDA): the user's random state is left exactly as it was.
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            torch.default_generator.manual_seed(seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            for module in parts:
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()  # BatchNorm: affine parameters and running statistics
                    continue
                for param in module.parameters(recurse=False):
                    if param.ndim >= 2:  # the default of torch's Linear and Conv layers
                        torch.nn.init.kaiming_uniform_(param, a=math.sqrt(5))
                    else:
                        bound = 1.0 / math.sqrt(max(param.numel(), 1))
                        torch.nn.init.uniform_(param, -bound, bound)


# Initialiser attributes of Keras layers whose variable names do not follow ``<name>_initializer``.
