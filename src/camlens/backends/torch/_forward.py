"""Calling the user's torch model, with its failures turned into camlens errors."""

from __future__ import annotations

from typing import Any

import torch

from camlens.errors import BadInputError, CamlensError


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
