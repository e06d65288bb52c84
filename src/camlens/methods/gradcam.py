"""Grad-CAM."""

from __future__ import annotations

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


class GradCAM(Method):
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    ``alpha_k = 1/Z sum_ij dy/dA^k_ij`` (global-average-pooled gradients);
    ``L = ReLU(sum_k alpha_k A^k)``.
    """

    name = "gradcam"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return the spatial mean of each channel's gradient, ``(M, K)``."""
        xp = namespace(gradients)
        return xp.mean(gradients, axis=(2, 3))
