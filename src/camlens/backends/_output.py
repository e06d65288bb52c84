"""Picking the tensor to explain from a model's raw output, for every backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from camlens.backends.base import OutputSelector
from camlens.errors import UnsupportedModelError


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
