"""Targets read from a torch model's output: the differentiable scores and their record.

Unit targets pick ``sign * output[n, unit]`` with one ``gather``; a custom target's
:meth:`~camlens.Target.scores` runs on the output tensor itself. The predicted class, the
default target, is picked where the output lives: ``argmax`` gives the first of tied maxima, as
the stable ranking does, and a row whose pick is NaN (argmax picks NaN first; NaN must rank
last) is ranked on the host instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from camlens.backends.base import Resolved
from camlens.backends.torch._arrays import namespace, to_numpy
from camlens.errors import BadTargetError
from camlens.targets import ArrayTarget, Detection, Target, TopK, UnitTarget, check_scores

__all__ = ["detection_scores", "resolve"]


def detection_scores(target: Detection, raw: Any) -> tuple[torch.Tensor, Resolved]:
    """Return the matched detections' ``(N, 1)`` scores from a detector's structured output:
    a torchvision-style list of dicts, or DETR-style ``logits`` and ``pred_boxes``."""
    if isinstance(raw, (list, tuple)) and raw and all(isinstance(d, Mapping) for d in raw):
        picked, labels = [], []
        for n, found in enumerate(raw):
            if not all(k in found for k in ("boxes", "scores", "labels")):
                raise BadTargetError(
                    f"image {n}'s detections have keys {sorted(found)}; a Detection target "
                    "reads boxes, scores and labels"
                )
            k = target.match(to_numpy(found["boxes"]), to_numpy(found["labels"]), n)
            picked.append(found["scores"][k])
            labels.append(int(found["labels"][k]))
        scores = torch.stack(picked)[:, None]
    elif isinstance(raw, Mapping) and "logits" in raw and "pred_boxes" in raw:
        probs = torch.softmax(raw["logits"], dim=-1)[..., :-1]  # the last class: no object
        cx, cy, w, h = raw["pred_boxes"].unbind(-1)
        boxes = to_numpy(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1))
        best = to_numpy(probs.argmax(dim=-1))
        picked, labels = [], []
        for n in range(probs.shape[0]):
            q = target.match(boxes[n], best[n], n)
            label = int(best[n, q]) if target.label is None else target.label
            picked.append(probs[n, q, label])
            labels.append(label)
        scores = torch.stack(picked)[:, None]
    else:
        raise BadTargetError(
            f"a Detection target reads a detector's output: a list of dicts with boxes, scores "
            f"and labels, or logits and pred_boxes; the model returned {type(raw).__name__}"
        )
    values = to_numpy(scores).astype(np.float64)
    units = np.asarray(labels, dtype=np.int64)[:, None]
    return scores, Resolved(values=values, units=units, signs=np.ones(values.shape))


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
