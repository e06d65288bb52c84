"""Calling the user's torch model: its failures turned into camlens errors, hooks kept to the
calling thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from camlens.backends.base import Inputs, keys_of
from camlens.errors import BadInputError, CamlensError


@contextmanager
def recordable() -> Iterator[None]:
    """Run a probe's forward pass where hooks can start recording a graph: a caller's inference
    mode left (an inference tensor cannot enter autograd), gradients off until a hook turns
    them on; both restored on exit. Inference mode is left only when it is on: entering
    ``inference_mode(False)`` anyway is a measurable cost per call."""
    leave = torch.inference_mode(False) if torch.is_inference_mode_enabled() else nullcontext()
    with leave, torch.set_grad_enabled(False):
        yield


def call_model(model: torch.nn.Module, inputs: torch.Tensor | Inputs) -> Any:
    """Run ``model(inputs)``, or for several inputs ``model(*inputs)`` (a tuple or list) or
    ``model(**inputs)`` (a dict); an exception from the model becomes a
    :class:`BadInputError`."""
    try:
        if not isinstance(inputs, Inputs):
            return model(inputs)
        if isinstance(inputs.entries, dict):
            return model(**inputs.entries)
        return model(*inputs.entries)
    except CamlensError:
        raise
    except Exception as exc:
        raise BadInputError(
            f"the model raised {type(exc).__name__} on inputs {_described(inputs)}: {exc}. "
            "Check that the inputs are preprocessed and shaped as the model expects"
        ) from exc


def usable(x: Any) -> Any:
    """Return an input that can enter autograd: a copy of an inference tensor, else itself."""
    return x.clone() if isinstance(x, torch.Tensor) and x.is_inference() else x


def expanded(inputs: torch.Tensor | Inputs, count: int) -> Any:
    """Return one row of inputs (of each of several) repeated ``count`` times, as views."""
    if isinstance(inputs, Inputs):
        return inputs.map(lambda v: v.expand(count, *v.shape[1:]))
    return inputs.expand(count, *inputs.shape[1:])


def _described(inputs: torch.Tensor | Inputs) -> str:
    """Describe inputs for a message: shapes and dtypes (of each of several)."""

    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"of shape {tuple(value.shape)} ({value.dtype})"
        return type(value).__name__

    if not isinstance(inputs, Inputs):
        return one(inputs)
    entries = inputs.entries
    return ", ".join(f"{k!r} {one(entries[k])}" for k in keys_of(entries))  # type: ignore[index]


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
