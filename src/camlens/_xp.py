"""The array namespace of camlens's own maths (methods, post-processing, targets).

``array_api_compat`` wraps torch's functions in Python ones that mend the cases where torch
departs from the array API standard (an empty ``axis`` tuple, promotion between mixed types,
negative indices). camlens's maths never meets those cases: it passes float arrays, explicit
axes, and Python floats only where torch treats them as the standard does. Right after a forward
pass every Python frame on the way to a kernel has a measurable cost, so for torch tensors the
functions below are torch's own (they accept the standard's ``axis``, ``keepdims`` and ``min``
names). Every other function, and every other library, comes from ``array_api_compat``.
"""

from __future__ import annotations

import sys
from typing import Any

from array_api_compat import array_namespace

__all__ = ["is_torch", "namespace"]


class _TorchNamespace:
    """``array_api_compat.torch`` with the calls camlens makes per explained batch made direct."""

    def __init__(self, compat: Any, torch: Any) -> None:
        self._compat = compat
        self.clip = torch.clamp
        self.max = torch.amax
        self.mean = torch.mean
        self.min = torch.amin
        self.permute_dims = torch.permute
        self.reshape = torch.reshape
        self.sum = torch.sum
        self.where = torch.where

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compat, name)


_torch_namespace: _TorchNamespace | None = None


def is_torch(x: Any) -> bool:
    """Return whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*arrays: Any) -> Any:
    """Return the array namespace of ``arrays`` (all from one library)."""
    global _torch_namespace
    if is_torch(arrays[0]):
        if _torch_namespace is None:
            _torch_namespace = _TorchNamespace(array_namespace(*arrays), sys.modules["torch"])
        return _torch_namespace
    return array_namespace(*arrays)
