"""Calling the user's torch model: its failures turned into camlens errors, hooks kept to the
calling thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
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


#: A forward hook: ``hook(module, args, output)`` returns a replacement output or ``None``.
Hook = Callable[[torch.nn.Module, Any, Any], Any]


def this_thread(hook: Hook) -> Hook:
    """Return ``hook`` acting only in the thread that calls this (the one running camlens).

    A module's hooks are seen by every thread: another thread running the model meanwhile (the
    user's own inference) passes the hook untouched, its output and grad mode left as they are.
    """
    owner = threading.get_ident()

    def in_owner_thread(module: torch.nn.Module, args: Any, out: Any) -> Any:
        return hook(module, args, out) if threading.get_ident() == owner else None

    return in_owner_thread
