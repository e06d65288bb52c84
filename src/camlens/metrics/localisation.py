"""Localisation metrics: does the map point at the object? (Pointing game, energy.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camlens.errors import BadInputError
from camlens.explanation import Explanation


@dataclass(frozen=True, eq=False)
class PointingResult:
    """Per-row pointing-game hits and energy, and their means.

    Attributes:
        hits: ``(M,)`` bool, the map's maximum falls inside the object.
        energy: ``(M,)`` share of the map's mass inside the object (energy-based pointing game).
    """

    hits: np.ndarray
    energy: np.ndarray

    @property
    def accuracy(self) -> float:
        """Return the fraction of hits."""
        return float(self.hits.mean())

    @property
    def mean_energy(self) -> float:
        """Return the mean energy inside the objects."""
        return float(self.energy.mean())


def _object_masks(objects: Any, n_images: int, size: tuple[int, int]) -> np.ndarray:
    """Return ``(N, H, W)`` bool masks from boxes ``[y0, x0, y1, x1]`` or masks, per image."""
    if isinstance(objects, np.ndarray) and objects.dtype == bool:
        masks = objects if objects.ndim == 3 else objects[None]
        if masks.shape != (n_images, *size):
            raise BadInputError(
                f"object masks of shape {objects.shape} do not fit {n_images} images of {size}"
            )
        if not masks.reshape(n_images, -1).any(axis=1).all():
            raise BadInputError("an object mask is empty; every image needs a non-empty object")
        return masks
    boxes = np.asarray(objects, dtype=np.int64)
    if boxes.shape != (n_images, 4):
        raise BadInputError(
            f"boxes must be one [y0, x0, y1, x1] per image, shape ({n_images}, 4); got "
            f"{boxes.shape}"
        )
    masks = np.zeros((n_images, *size), dtype=bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        y0, x0 = max(int(y0), 0), max(int(x0), 0)
        y1, x1 = min(int(y1), size[0]), min(int(x1), size[1])
        if y1 <= y0 or x1 <= x0:
            raise BadInputError(
                f"box {i} {boxes[i].tolist()} is empty inside the {size} image; boxes are "
                "[y0, x0, y1, x1] with y0 < y1 and x0 < x1"
            )
        masks[i, y0:y1, x0:x1] = True
    return masks


def pointing_game(explanation: Explanation, objects: Sequence[Any] | np.ndarray) -> PointingResult:
    """Score each map by whether its peak, and how much of its mass, fall on the object.

    The pointing game (Zhang et al., ECCV 2016) counts a hit when the map's maximum lies inside
    the object; the energy-based pointing game (Wang et al., Score-CAM, 2020) reports the share
    of the map's mass inside it.

    Args:
        explanation: Maps ``(M, H, W)``; row ``m`` is judged against its image's object.
        objects: One box ``[y0, x0, y1, x1]`` (end-exclusive) per image, or ``(N, H, W)`` bool
            masks.
    """
    maps = explanation.maps
    n_images = int(explanation.image_index.max()) + 1
    masks = _object_masks(objects, n_images, tuple(maps.shape[1:]))[explanation.image_index]
    flat = maps.reshape(len(maps), -1)
    peaks = flat.argmax(axis=1)
    hits = masks.reshape(len(maps), -1)[np.arange(len(maps)), peaks]
    total = flat.sum(axis=1)
    inside = (flat * masks.reshape(len(maps), -1)).sum(axis=1)
    energy = np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
    return PointingResult(hits=hits, energy=energy)
