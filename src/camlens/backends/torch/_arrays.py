"""Torch tensors in camlens's framework-free array code: host copies and the maths' namespace.

``array_api_compat`` wraps torch's functions in Python ones that mend the cases where torch
departs from the array API standard (an empty ``axis`` tuple, promotion between mixed types,
negative indices). camlens's maths never meets those cases: it passes float arrays, explicit
axes, and Python floats only where torch treats them as the standard does. Right after a forward
pass every Python frame on the way to a kernel has a measurable cost, so the functions called
per explained batch are torch's own (they accept the standard's ``axis``, ``keepdims`` and
``min`` names); every other one comes from ``array_api_compat.torch``.
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat.torch as compat
import numpy as np
import torch

__all__ = ["namespace", "to_numpy"]


class _TorchNamespace:
    """``array_api_compat.torch`` with the calls camlens makes per explained batch made direct."""

    def __init__(self) -> None:
        self.clip = torch.clamp
        self.max = torch.amax
        self.mean = torch.mean
        self.min = torch.amin
        self.permute_dims = torch.permute
        self.reshape = torch.reshape
        self.sum = torch.sum
        self.where = torch.where

    def __getattr__(self, name: str) -> Any:
        return getattr(compat, name)


@functools.cache
def namespace() -> Any:
    """Return the array namespace of camlens's maths on torch tensors."""
    return _TorchNamespace()


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """Copy a tensor to NumPy: off autograd and its device, 16-bit floats widened (exactly).

    Each step is taken only when needed (each op has a cost right after a forward pass).
    """
    if x.requires_grad:
        x = x.detach()
    if x.is_floating_point() and x.element_size() < 4:
        x = x.float()  # NumPy has no bfloat16
    if x.device.type != "cpu":
        x = x.cpu()
    return np.asarray(x.numpy())
