"""Grad-CAM++."""

from __future__ import annotations

from array_api_compat import array_namespace

from camlens._types import Array
from camlens.methods.base import Method, safe_divide


class GradCAMPlusPlus(Method):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063), in closed form.

    With ``g = dy/dA`` and the paper's exponential score, the pixel coefficients are
    ``a^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` and ``w_k = sum_ij a^k_ij ReLU(g_ij)``.
    Only exact zeros of the denominator are guarded (their coefficient is 0); no epsilon is
    added, since typical squared gradients are far below any fixed epsilon.
    """

    name = "gradcam++"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return ``sum_ij a^k_ij ReLU(g_ij)``, ``(M, K)``."""
        xp = array_namespace(activations, gradients)
        g2 = gradients * gradients
        g3 = g2 * gradients
        total = xp.sum(activations, axis=(2, 3), keepdims=True)
        alpha = safe_divide(g2, 2 * g2 + total * g3)
        return xp.sum(alpha * xp.maximum(gradients, xp.zeros_like(gradients)), axis=(2, 3))
