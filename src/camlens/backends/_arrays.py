"""Arrays of any framework in camlens's framework-free code: their namespace and host copies.

Methods, post-processing, targets and rendering work on whatever array library the model's
backend hands them (NumPy, torch, JAX, TensorFlow). What differs by library lives in the
backends: a torch tensor is handled by ``backends/torch/_arrays.py``, reached only once such a
tensor exists (so torch is already imported); everything else goes through
``array_api_compat`` and ``numpy.asarray``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from camlens._types import Array

__all__ = ["is_torch", "namespace", "to_host"]


def is_torch(x: Any) -> bool:
    """Return whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*arrays: Array) -> Any:
    """Return the array namespace of ``arrays`` (all from one library)."""
    if is_torch(arrays[0]):
        from camlens.backends.torch import _arrays

        return _arrays.namespace()
    return array_namespace(*arrays)


def to_host(x: Any) -> np.ndarray:
    """Copy a small array of any library to NumPy (a NumPy array is returned as it is)."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        from camlens.backends.torch import _arrays

        return _arrays.to_numpy(x)
    if hasattr(x, "detach"):  # a tensor of torch's interface from elsewhere (duck-typed)
        tensor = x.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":  # NumPy has no bfloat16
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    return np.asarray(x)
