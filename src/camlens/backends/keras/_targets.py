"""Targets read from a Keras model's output, inside the compiled probe and around it.

A compiled probe takes the units and signs of fixed unit targets as inputs (one trace serves
every class), ranks top-k inside the trace, and calls a custom target's
:meth:`~camlens.Target.scores` on the traced output. :func:`plan` gives the host-side inputs,
:func:`trace_key` what a compiled probe depends on, :func:`record` the host record of a call.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
from keras import ops

from camlens.backends.base import Resolved
from camlens.errors import BadInputError, BadTargetError, CamlensError
from camlens.targets import ArrayTarget, Detection, Target, TopK, UnitTarget, check_scores

__all__ = ["BlockPicker", "Picker", "plan", "record", "trace_key"]


@dataclass(frozen=True, eq=False)
class Picker:
    """Reads a target's scores from the output inside a traced function."""

    target: Target

    def __call__(self, output: Any, units: Any, signs: Any) -> tuple[Any, Any, Any, Any]:
        """Return ``(signed, picked, units, flat)``: the scores to differentiate, the values as
        the model gives them, the units ``(N, T)`` and the output, one row per image.

        ``units`` and ``signs`` are inputs for fixed targets; top-k ranks them here.
        """
        if isinstance(self.target, Detection):
            raise BadTargetError(
                "Detection targets read PyTorch detectors' outputs (torchvision, transformers "
                "DETR); on Keras, give a function of the output that returns the detection's score"
            )
        n = ops.shape(output)[0]
        flat = ops.reshape(output, (n, -1))
        if isinstance(self.target, ArrayTarget):
            picked = self.target.scores_in(output, ops, channels_last=True)
            picked = ops.reshape(picked, (n, -1))
            return picked, picked, units, flat
        if not isinstance(self.target, UnitTarget):
            picked = self.target.scores(output)
            check_scores(tuple(picked.shape), int(output.shape[0]))
            picked = ops.reshape(picked, (n, -1))
            return picked, picked, units, flat
        if isinstance(self.target, TopK):
            units = ops.cast(ops.top_k(flat, self.target.k, sorted=True)[1], "int32")
        picked = ops.take_along_axis(flat, units, axis=1)
        return picked * ops.cast(signs, picked.dtype), picked, units, flat


@dataclass(frozen=True, eq=False)
class BlockPicker:
    """Reads each block's own scores beside the model's (LeGrad's ``head=``): ``head`` applied
    to each block's output tokens, read for the units the model's output resolved.

    Called on ``(output, tokens)`` (the attention forward with blocks); returns the
    :class:`Picker`'s ``(signed, picked, units, flat)`` of the model's output with ``signed``
    replaced by the blocks' signed scores stacked, ``(blocks, N, T)``.
    """

    target: Target
    head: Callable[[Any], Any]

    def __call__(self, output: Any, units: Any, signs: Any) -> tuple[Any, Any, Any, Any]:
        """Return the blocks' ``(L, N, T)`` signed scores and the model's picked scores."""
        out, blocks = output
        _, picked, used, flat = Picker(self.target)(out, units, signs)
        own = [self._scores(tokens, used, signs) for tokens in blocks]
        return ops.stack(own), picked, used, flat

    def _scores(self, tokens: Any, units: Any, signs: Any) -> Any:
        """Return the target's signed ``(N, T)`` scores in ``head(tokens)``."""
        try:
            out = self.head(tokens)
        except CamlensError:
            raise
        except Exception as exc:
            raise BadInputError(
                f"head= raised {type(exc).__name__} on a block's tokens {tuple(tokens.shape)}: "
                f"{exc}; it must map (N, L, C) tokens to the model's output, e.g. "
                "lambda t: head_layer(norm_layer(t)[:, 0])"
            ) from exc
        if not ops.is_tensor(out) or len(out.shape) < 1 or out.shape[0] != tokens.shape[0]:
            got = f"a tensor {tuple(out.shape)}" if ops.is_tensor(out) else type(out).__name__
            raise BadInputError(
                f"head= returned {got} for tokens {tuple(tokens.shape)}; it must return the "
                "model's output for them, (N, ...) with the same N"
            )
        if not isinstance(self.target, UnitTarget):
            return Picker(self.target)(out, units, signs)[0]
        flat = ops.reshape(out, (ops.shape(out)[0], -1))
        picked = ops.take_along_axis(flat, units, axis=1)
        return picked * ops.cast(signs, picked.dtype)


def plan(target: Target, n: int, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``(N, T)`` units and signs a compiled probe takes for this target."""
    if not isinstance(target, UnitTarget):
        return np.zeros((n, 1), dtype=np.int32), np.ones((n, 1), dtype=np.float32)
    fixed = target.fixed_units(n, n_units)
    if fixed is not None:
        return fixed.astype(np.int32), np.full(fixed.shape, float(target.sign), np.float32)
    if not isinstance(target, TopK):
        raise BadTargetError(
            f"{type(target).__name__} ranks its units from the output's values, which the Keras "
            "backend does only for camlens.TopK; give fixed units (fixed_units) instead"
        )
    return np.zeros((n, target.k), dtype=np.int32), np.ones((n, target.k), dtype=np.float32)


class _Identity:
    """An unhashable target as a cache key: equal only to itself, and kept alive by the key
    (so its ``id`` is never reused while a compiled probe depends on it)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def __hash__(self) -> int:
        return id(self.target)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.target is self.target


def trace_key(target: Target) -> Hashable:
    """Return what a compiled probe depends on: the kind of a unit target (its units and signs
    are inputs), the target itself otherwise."""
    if isinstance(target, UnitTarget):
        return type(target)
    try:
        hash(target)
    except TypeError:
        return _Identity(target)
    return target


def record(target: Target, picked: Any, used: Any, signs: np.ndarray) -> Resolved:
    """Return the host record of the scores a compiled probe returned."""
    values = np.asarray(ops.convert_to_numpy(picked), dtype=np.float64)
    if not isinstance(target, UnitTarget):
        units = np.full(values.shape, -1, dtype=np.int64)
        return Resolved(values=values, units=units, signs=np.ones(values.shape))
    units = np.asarray(ops.convert_to_numpy(used), dtype=np.int64)
    return Resolved(values=values, units=units, signs=signs.astype(np.float64))
