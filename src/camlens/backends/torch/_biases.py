"""The modules with a bias and their bias-gradients ``g ⊙ b`` (FullGrad's decomposition).

Counted: convolutions and ``Linear`` layers with a bias, and batch norms with running
statistics (in eval mode an affine map, whose effective bias is
``beta - gamma * mu / sqrt(var + eps)``). A bias added by a functional call or inside another
module (``nn.MultiheadAttention``'s projections) is not seen, so the decomposition then misses
it. A module the forward pass calls several times gives one term per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from camlens.backends.base import BiasGradients
from camlens.backends.torch._arrays import to_numpy
from camlens.backends.torch._forward import this_thread
from camlens.errors import MethodError


def _channel_axis(module: torch.nn.Module) -> int | None:
    """Return the axis a module's bias lies along in its output, ``None`` if it has none."""
    if isinstance(module, _BatchNorm):
        return 1
    if isinstance(module, (_ConvNd, torch.nn.Linear)) and module.bias is not None:
        return 1 if isinstance(module, _ConvNd) else -1
    return None


def effective_bias(module: torch.nn.Module) -> torch.Tensor:
    """Return the bias a module adds to its output, ``(K,)``; a batch norm's effective one."""
    if not isinstance(module, _BatchNorm):
        bias = module.bias
        assert isinstance(bias, torch.Tensor)  # _channel_axis counts only modules with one
        return bias.detach()
    mean, var = module.running_mean, module.running_var
    if mean is None or var is None:
        raise MethodError(
            f"{type(module).__name__} without running statistics normalises each batch by its "
            "own statistics even in eval mode, so it adds no fixed bias and FullGrad's "
            "decomposition does not hold; use a model whose batch norms track running stats"
        )
    # In float32 at least: a half-precision ``var + eps`` loses the small epsilon.
    wide = torch.promote_types(var.dtype, torch.float32)
    scale = torch.rsqrt(var.detach().to(wide) + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach().to(wide)
    shift = -mean.detach().to(wide) * scale
    return shift if module.bias is None else shift + module.bias.detach().to(wide)


class BiasCapture:
    """Forward hooks that keep the output of every module with a bias, in the order they run.

    The rest of the network gets a copy of each output, so its in-place operations
    (``ReLU(inplace=True)``) leave the captured tensor, whose gradient is taken, as it was.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        """Find the model's modules with a bias."""
        self.modules = [
            (name, module, axis)
            for name, module in model.named_modules()
            if (axis := _channel_axis(module)) is not None
        ]
        self.outputs: list[tuple[str, torch.nn.Module, int, torch.Tensor]] = []

    def register(self) -> list[Any]:
        """Register the hooks (acting only in this thread); return their handles."""
        return [
            module.register_forward_hook(this_thread(self._hook(name, axis)))
            for name, module, axis in self.modules
        ]

    def _hook(self, name: str, axis: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> Any:
            if not isinstance(out, torch.Tensor):
                return out
            if not out.requires_grad:  # a module that does not read the input: its own leaf
                out = out.detach().requires_grad_(True)
            self.outputs.append((name, module, axis, out))
            return out.clone()

        return hook

    @property
    def tensors(self) -> list[torch.Tensor]:
        """Return the captured outputs, whose gradients :meth:`terms` takes."""
        return [out for _, _, _, out in self.outputs]

    def terms(self, gradients: Sequence[torch.Tensor], rows: int) -> BiasGradients:
        """Return ``g ⊙ b`` per captured output from the gradients of the ``rows`` scores."""
        names: list[str] = []
        maps: list[torch.Tensor] = []
        rest = np.zeros(rows)
        for (name, module, axis, out), grad in zip(self.outputs, gradients, strict=True):
            if grad.dtype not in (torch.float32, torch.float64):  # half precision: the terms
                grad = grad.float()  # in float32, as every map camlens returns
            bias = effective_bias(module).to(grad.dtype)
            shape = [1] * out.ndim
            shape[axis] = -1
            if bias.shape[0] != out.shape[axis]:
                raise MethodError(
                    f"layer {name!r} has {bias.shape[0]} biases for an output of shape "
                    f"{tuple(out.shape)}; FullGrad reads biases along the channel axis"
                )
            term = grad * bias.reshape(shape)
            if out.ndim == 4:
                names.append(name)
                grid = term if axis == 1 else term.permute(0, 3, 1, 2)
                maps.append(grid)
            else:
                summed = term.double().reshape(rows, -1).sum(dim=1)
                rest += to_numpy(summed).astype(np.float64)
        return BiasGradients(layers=tuple(names), maps=maps, rest=rest)
