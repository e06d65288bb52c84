"""EigenGrad-CAM."""

from __future__ import annotations

from camlens._types import Array
from camlens.methods.base import Method
from camlens.methods.eigencam import principal_projection


class EigenGradCAM(Method):
    """EigenGrad-CAM: Eigen-CAM (Muhammad & Yeasin 2020, arXiv:2008.00299) on dy/dA ⊙ A.

    ``L = (G ⊙ A) V_1``: the class-discriminative variant of Eigen-CAM introduced by
    pytorch-grad-cam, projecting the gradient-weighted activations on their first principal
    direction (no centring).
    """

    name = "eigengradcam"

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the first-principal-component projection of ``G ⊙ A``, ``(M, h, w)``."""
        return principal_projection(gradients * activations)
