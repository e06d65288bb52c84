"""Targets read from a torch model's output: the differentiable scores and their record.

Unit targets pick ``sign * output[n, unit]`` with one ``gather``; a custom target's
:meth:`~camlens.Target.scores` runs on the output tensor itself. The predicted class, the
default target, is picked where the output lives: ``argmax`` gives the first of tied maxima, as
the stable ranking does, and a row whose pick is NaN (argmax picks NaN first; NaN must rank
last) is ranked on the host instead.
"""

from __future__ import annotations

import numpy as np
import torch

from camlens.backends.base import Resolved
from camlens.backends.torch._arrays import namespace, to_numpy
from camlens.errors import BadTargetError
from camlens.targets import ArrayTarget, Target, TopK, UnitTarget, check_scores

__all__ = ["resolve"]


def resolve(target: Target, output: torch.Tensor) -> tuple[torch.Tensor, Resolved]:
    """Return the ``(N, T)`` scores to differentiate and their host record."""
    if output.ndim == 0:
        raise BadTargetError("the model output is a scalar; it needs a batch axis (N, ...)")
    if isinstance(target, UnitTarget):
        return _units(target, output if output.ndim == 2 else output.reshape(output.shape[0], -1))
    if isinstance(target, ArrayTarget):
        scores = target.scores_in(output, namespace(), channels_last=False)
    else:
        scores = target.scores(output)
    n = output.shape[0]
    check_scores(tuple(getattr(scores, "shape", ())), n)
    scores = scores.reshape(n, -1)
    values = to_numpy(scores).astype(np.float64)
    units = np.full(values.shape, -1, dtype=np.int64)
    return scores, Resolved(values=values, units=units, signs=np.ones(values.shape))


def _units(target: UnitTarget, flat: torch.Tensor) -> tuple[torch.Tensor, Resolved]:
    fixed = target.fixed_units(*flat.shape)
    if fixed is None and isinstance(target, TopK) and target.k == 1:
        index = flat.argmax(dim=1, keepdim=True)
        picked = flat.gather(1, index)
        values = to_numpy(picked).astype(np.float64)
        if not np.isnan(values).any():
            return _record(target, picked, values, to_numpy(index).astype(np.int64))
    units = fixed if fixed is not None else target.ranked_units(to_numpy(flat))
    picked = flat.gather(1, torch.as_tensor(units, device=flat.device))
    return _record(target, picked, to_numpy(picked).astype(np.float64), units)


def _record(
    target: UnitTarget, picked: torch.Tensor, values: np.ndarray, units: np.ndarray
) -> tuple[torch.Tensor, Resolved]:
    signs = np.full(units.shape, float(target.sign))
    return (picked if target.sign == 1 else -picked), Resolved(values, units, signs)
