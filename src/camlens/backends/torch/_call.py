"""Calling the user's model, with its failures turned into camlens errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from camlens.backends.base import OutputSelector
from camlens.errors import BadInputError, CamlensError, UnsupportedModelError


def call_model(model: torch.nn.Module, inputs: torch.Tensor) -> Any:
    """Run ``model(inputs)``; an exception from the model becomes a :class:`BadInputError`."""
    try:
        return model(inputs)
    except CamlensError:
        raise
    except Exception as exc:
        raise BadInputError(
            f"the model raised {type(exc).__name__} on inputs of shape {tuple(inputs.shape)} "
            f"({inputs.dtype}): {exc}. Check that the inputs are preprocessed and shaped as the "
            "model expects"
        ) from exc


def _describe(raw: Any) -> str:
    items = raw.items() if isinstance(raw, Mapping) else enumerate(raw)
    return ", ".join(
        f"{key!r}: {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
        for key, v in items
    )


def select_output(raw: Any, selector: OutputSelector) -> torch.Tensor:
    """Return the tensor to explain from the model's raw output.

    Without a selector a tensor is used as is, and a tuple, list or mapping holding exactly one
    tensor gives that tensor; anything else needs ``output=``.
    """
    if selector is None:
        if isinstance(raw, torch.Tensor):
            return raw
        if isinstance(raw, (tuple, list, Mapping)):
            values = raw.values() if isinstance(raw, Mapping) else raw
            tensors = [v for v in values if isinstance(v, torch.Tensor)]
            if len(tensors) == 1:
                return tensors[0]
            raise UnsupportedModelError(
                f"the model returned a {type(raw).__name__} ({_describe(raw)}); pass output= "
                "with the index or key of the output to explain, or a function of the output"
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
                f"{type(raw).__name__} ({_describe(raw)})"
            ) from None
    else:
        raise UnsupportedModelError(
            f"output={selector!r} was given but the model returned a single "
            f"{type(raw).__name__}; drop output= or pass a function"
        )
    if not isinstance(out, torch.Tensor):
        raise UnsupportedModelError(
            f"output={selector!r} selected a {type(out).__name__}, not a tensor"
        )
    return out
