"""What the backends share, and what the framework-free code asks of arrays. No framework here.

- Arrays of any library in methods, post-processing, targets and rendering: their namespace and
  host copies. What differs by library lives in the backends: a torch tensor is handled by
  ``backends/torch/_arrays.py``, reached only once such a tensor exists (so torch is already
  imported); everything else goes through ``array_api_compat`` and ``numpy.asarray``.
- Picking the tensor to explain from a model's raw output.
- Listing layers: the automatic pick and ``camlens layers``, from one recorded pass.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
from array_api_compat import array_namespace

from camlens._types import Array
from camlens.backends.base import LayerInfo, LayerRef, OutputSelector
from camlens.errors import UnsupportedModelError

__all__ = [
    "Finished",
    "describe_layers",
    "last_feature_map",
    "namespace",
    "select_output",
    "to_host",
]


def _is_torch(x: Any) -> bool:
    """Return whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(*arrays: Array) -> Any:
    """Return the array namespace of ``arrays`` (all from one library)."""
    if _is_torch(arrays[0]):
        from camlens.backends.torch import _arrays

        return _arrays.namespace()
    return array_namespace(*arrays)


def to_host(x: Any) -> np.ndarray:
    """Copy a small array of any library to NumPy (a NumPy array is returned as it is)."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        from camlens.backends.torch import _arrays

        return _arrays.to_numpy(x)
    if hasattr(x, "detach"):  # a tensor of torch's interface from elsewhere (duck-typed)
        tensor = x.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":  # NumPy has no bfloat16
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    return np.asarray(x)


def _describe(raw: Any, is_tensor: Callable[[Any], bool]) -> str:
    items = raw.items() if isinstance(raw, Mapping) else enumerate(raw)
    return ", ".join(
        f"{key!r}: {tuple(v.shape) if is_tensor(v) else type(v).__name__}" for key, v in items
    )


def select_output(raw: Any, selector: OutputSelector, is_tensor: Callable[[Any], bool]) -> Any:
    """Return the tensor to explain from the model's raw output.

    Without a selector a tensor is used as is, and a tuple, list or mapping holding exactly one
    tensor gives that tensor; anything else needs ``output=``.
    """
    if selector is None:
        if is_tensor(raw):
            return raw
        if isinstance(raw, (tuple, list, Mapping)):
            values = raw.values() if isinstance(raw, Mapping) else raw
            tensors = [v for v in values if is_tensor(v)]
            if len(tensors) == 1:
                return tensors[0]
            raise UnsupportedModelError(
                f"the model returned a {type(raw).__name__} ({_describe(raw, is_tensor)}); pass "
                "output= with the index or key of the output to explain, or a function of it"
            )
        raise UnsupportedModelError(
            f"the model returned a {type(raw).__name__}, not a tensor; pass output= a function "
            "that returns the tensor to explain"
        )
    if callable(selector):
        out = selector(raw)
    elif isinstance(raw, (tuple, list, Mapping)):
        try:
            out = raw[selector]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise UnsupportedModelError(
                f"output={selector!r} does not select anything from the model's "
                f"{type(raw).__name__} ({_describe(raw, is_tensor)})"
            ) from None
    else:
        raise UnsupportedModelError(
            f"output={selector!r} was given but the model returned a single "
            f"{type(raw).__name__}; drop output= or pass a function"
        )
    if not is_tensor(out):
        raise UnsupportedModelError(
            f"output={selector!r} selected a {type(out).__name__}, not a tensor"
        )
    return out


#: One layer call recorded by a backend, in the order calls finish: the layer's name, the layer,
#: its output shape (``None`` or ``()`` for an output that is not a tensor).
Finished: TypeAlias = "tuple[str, Any, tuple[int, ...] | None]"
#: ``(output shape or None, times the layer ran) -> whether it can be explained``.
FeatureTest: TypeAlias = "Callable[[tuple[int, ...] | None, int], bool]"
#: ``(name, layer) -> times the layer ran`` in the recorded pass.
Runs: TypeAlias = "Callable[[str, Any], int]"


def last_feature_map(
    finished: Sequence[Finished], runs: Runs, is_feature_map: FeatureTest
) -> LayerRef | None:
    """Return the last layer to finish with an explainable output (the automatic pick)."""
    for name, layer, shape in reversed(finished):
        if is_feature_map(shape, runs(name, layer)):
            return LayerRef(name, layer)
    return None


def describe_layers(
    layers: Iterable[tuple[str, Any]],
    finished: Sequence[Finished],
    runs: Runs,
    is_feature_map: FeatureTest,
) -> list[LayerInfo]:
    """Return a :class:`LayerInfo` per ``(name, layer)``, from one recorded pass."""
    picked = last_feature_map(finished, runs, is_feature_map)
    first: dict[str, tuple[int, ...] | None] = {}
    for name, _, shape in finished:
        first.setdefault(name, shape)
    rows = []
    for name, layer in layers:
        shape = first.get(name)
        rows.append(
            LayerInfo(
                name=name,
                type=type(layer).__name__,
                output_shape=(None, *(int(d) for d in shape[1:])) if shape else None,
                candidate=is_feature_map(shape, runs(name, layer)),
                auto=picked is not None and picked.name == name,
            )
        )
    return rows
