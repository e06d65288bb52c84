"""Targets read from an ONNX model's output, on the host: NumPy arrays, nothing to
differentiate."""

from __future__ import annotations

import numpy as np

from camlens.backends.base import Resolved
from camlens.errors import BadTargetError
from camlens.targets import Target, UnitTarget, check_scores

__all__ = ["resolve"]


def resolve(target: Target, output: np.ndarray) -> Resolved:
    """Return the target's ``(N, T)`` scores, units and signs on the model's output."""
    if output.ndim == 0:
        raise BadTargetError("the model output is a scalar; it needs a batch axis (N, ...)")
    n = output.shape[0]
    if isinstance(target, UnitTarget):
        flat = output.reshape(n, -1)
        fixed = target.fixed_units(*flat.shape)
        units = fixed if fixed is not None else target.ranked_units(flat)
        values = np.take_along_axis(flat, units, axis=1).astype(np.float64)
        return Resolved(values, units, np.full(units.shape, float(target.sign)))
    scores = np.asarray(target.scores(output))
    check_scores(tuple(scores.shape), n)
    values = scores.reshape(n, -1).astype(np.float64)
    return Resolved(values, np.full(values.shape, -1, dtype=np.int64), np.ones(values.shape))
