"""Temporary changes to a torch model, undone exactly when the probe ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _training_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Return the modules of ``model`` (itself included) that are in training mode.

    The walk ``model.train()`` itself makes, through ``_modules``: a module shared by two parents
    is listed twice, which is harmless (its flag is set and restored twice). Not
    ``model.modules()``, which also builds a dotted name for every module and deduplicates
    through a set, a cost paid on every call of every explainer.
    """
    stack: list[torch.nn.Module | None] = [model]
    training = []
    while stack:
        module = stack.pop()
        if module is None:  # a child slot registered as None
            continue
        if module.training:
            training.append(module)
        children = module._modules
        if children:
            stack.extend(children.values())
    return training


@contextmanager
def inference_state(model: torch.nn.Module) -> Iterator[None]:
    """Put every module in eval mode; restore each module's own mode on exit.

    Only modules in training mode are touched, and each gets its flag back, so mixed modes
    survive. ``training`` is written to each module's ``__dict__`` directly: a model's own
    ``train()`` override may do more than set the flag, and ``nn.Module.__setattr__`` is slow on
    large models. Parameters are left alone: the probe keeps the network below the target
    layers out of autograd by running it with gradients disabled instead.
    """
    training = _training_modules(model)
    try:
        for module in training:
            module.__dict__["training"] = False
        yield
    finally:
        for module in training:
            module.__dict__["training"] = True
