"""Temporary changes to a torch model, undone exactly when the probe ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def inference_state(model: torch.nn.Module) -> Iterator[None]:
    """Put every module in eval mode and freeze every parameter; restore both on exit.

    Only modules in training mode and parameters that require grad are touched, and each gets
    its own flag back, so mixed modes and partly frozen models survive. ``training`` is written
    to each module's ``__dict__`` directly: a model's own ``train()`` override may do more than
    set the flag, and ``nn.Module.__setattr__`` is slow on large models. Frozen parameters keep
    autograd from saving tensors for weight gradients.
    """
    training = [module for module in model.modules() if module.training]
    trainable = [param for param in model.parameters() if param.requires_grad]
    try:
        for module in training:
            module.__dict__["training"] = False
        for param in trainable:
            param.requires_grad_(False)
        yield
    finally:
        for module in training:
            module.__dict__["training"] = True
        for param in trainable:
            param.requires_grad_(True)
