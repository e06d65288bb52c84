"""XGrad-CAM."""

from __future__ import annotations

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.methods.base import Method, safe_divide


class XGradCAM(Method):
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

    ``w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy/dA^k_ij``: gradients averaged with the activation as
    weight. A channel whose activations sum to exactly zero gets weight 0.
    """

    name = "xgradcam"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return activation-weighted gradient means, ``(M, K)``."""
        xp = namespace(activations, gradients)
        return safe_divide(
            xp.sum(activations * gradients, axis=(2, 3)), xp.sum(activations, axis=(2, 3))
        )
