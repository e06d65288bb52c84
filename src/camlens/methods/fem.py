"""FEM, the Feature Explanation Method."""

from __future__ import annotations

import math
from typing import ClassVar

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.errors import BadInputError
from camlens.methods.base import Method


class FEM(Method):
    """FEM (Fuad et al., IPTA 2020, doi:10.1109/IPTA50016.2020.9286629; hal-02963298).

    Each channel is thresholded by the k-sigma rule and its binary mask weighted by the
    channel's mean: ``B_k = 1[A^k >= mu_k + k sigma_k]``, ``w_k = mu_k``,
    ``L = sum_k w_k B_k``, with ``mu_k`` and ``sigma_k`` the spatial mean and (population)
    standard deviation of ``A^k``. Class-agnostic: it needs no gradient and gives the same map
    for every target.

    Deviation elsewhere: pytorch-grad-cam weighs the activations, not the masks, by the share
    of locations above the threshold (``sum_k mean(B_k) A^k``); camlens follows the paper.

    Args:
        k: How many standard deviations above the mean a location must be (the paper: 2).
    """

    name = "fem"
    needs_gradients: ClassVar[bool] = False

    def __init__(self, *, k: float = 2.0) -> None:
        """Validate and keep the threshold's number of standard deviations."""
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k):
            raise BadInputError(f"FEM's k must be a finite number; got {k!r}")
        self.k = float(k)

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return ``sum_k mu_k 1[A^k >= mu_k + k sigma_k]``, ``(M, h, w)``."""
        xp = namespace(activations)
        mean = xp.mean(activations, axis=(2, 3), keepdims=True)
        std = xp.sqrt(xp.mean((activations - mean) ** 2, axis=(2, 3), keepdims=True))
        masks = xp.astype(activations >= mean + self.k * std, activations.dtype)
        return xp.sum(mean * masks, axis=1)

    def __repr__(self) -> str:
        return f"FEM(k={self.k})"
