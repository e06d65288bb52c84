"""Grad-CAM++."""

from __future__ import annotations

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method


class GradCAMPlusPlus(Method):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv:1710.11063), in closed form.

    With ``g = dy/dA`` and the paper's exponential score, the pixel coefficients are
    ``a^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` and ``w_k = sum_ij a^k_ij ReLU(g_ij)``.
    Only exact zeros of the denominator are guarded (their coefficient is 0); no epsilon is
    added, since typical squared gradients are far below any fixed epsilon.

    Computed as ``w_k = sum_ij p / (2 + S_k p)`` with ``p = ReLU(g)`` and ``S_k = sum_ab A^k_ab``:
    the same value (``g^2`` cancels where ``g > 0``, and ``p = 0`` elsewhere) in fewer passes,
    and without the underflow of ``g^3`` for gradients below ~1e-13 in float32.
    """

    name = "gradcam++"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return ``sum_ij a^k_ij ReLU(g_ij)``, ``(M, K)``."""
        xp = namespace(activations, gradients)
        positive = xp.clip(gradients, min=0.0)
        total = xp.sum(activations, axis=(2, 3), keepdims=True)
        den = 2 + total * positive
        # p / inf = 0 where the denominator is exactly 0 (p is finite and non-negative there).
        return xp.sum(positive / xp.where(den == 0, xp.inf, den), axis=(2, 3))
