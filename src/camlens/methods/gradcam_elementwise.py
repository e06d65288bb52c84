"""Grad-CAM element-wise."""

from __future__ import annotations

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


class GradCAMElementWise(Method):
    """Grad-CAM element-wise (the HiResCAM variant popularised by pytorch-grad-cam).

    ``L = sum_k ReLU(dy/dA^k ⊙ A^k)``: like HiResCAM, but each channel's element-wise product is
    rectified before the sum, so channels cannot cancel each other. It has no paper of its own;
    see HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891).
    """

    name = "gradcam-elementwise"

    def weighted(self, activations: Array, gradients: Array) -> Array:
        """Return the map's terms ``ReLU(G ⊙ A)``, ``(M, K, h, w)``; the map is their sum."""
        xp = namespace(activations, gradients)
        return xp.clip(gradients * activations, min=0.0)
