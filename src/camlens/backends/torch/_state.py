"""Temporary changes to a torch model, undone exactly when the probe ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def inference_state(model: torch.nn.Module) -> Iterator[None]:
    """Put every module in eval mode and freeze every parameter; restore both on exit.

    ``training`` is set on each module directly (a model's own ``train()`` override may do
    more), and each module's and parameter's own flag is restored, so mixed modes survive.
    Frozen parameters keep autograd from saving tensors for weight gradients.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        for module, _ in modes:
            module.training = False
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in flags:
            param.requires_grad_(flag)
