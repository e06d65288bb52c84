"""CAM, the original class activation map."""

from __future__ import annotations

from camlens._types import Array
from camlens.backends._common import namespace, to_host
from camlens.errors import MethodError
from camlens.methods.base import Method

#: How far, relative to a row's largest gradient, a gradient may vary over space and still be
#: read as the constant gradient of a global average pool (float rounding only).
SPATIAL_TOLERANCE = 1e-4


class CAM(Method):
    """CAM (Zhou et al., CVPR 2016, arXiv:1512.04150), for a layer read by a global average pool.

    With ``y_c = sum_k w^c_k mean_ij(A^k_ij) + b_c`` (GAP, then a linear layer), CAM is
    ``L = ReLU(sum_k w^c_k A^k)``. The weights are read from the gradients, exactly: there
    ``dy_c/dA^k_ij = w^c_k / (h w)`` at every location, so ``w^c_k = sum_ij dy_c/dA^k_ij``
    (and CAM is Grad-CAM times ``h w``). No layer is looked up by name, so it works on any
    model whose head pools the layer globally: behind the pool, ``w^c`` is the gradient of the
    score with respect to the pooled features (the linear layer's row ``c`` when the head is
    one linear layer; the effective row otherwise).

    Raises :class:`camlens.MethodError` when the gradients vary over space (beyond float
    rounding): the layer is not read by a global average pool, and CAM is not defined there.
    """

    name = "cam"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return the head's weights ``w^c_k = sum_ij dy_c/dA^k_ij``, ``(M, K)``."""
        xp = namespace(gradients)
        mean = xp.mean(gradients, axis=(2, 3), keepdims=True)
        spread = xp.max(xp.abs(gradients - mean), axis=(1, 2, 3))
        scale = xp.max(xp.abs(gradients), axis=(1, 2, 3))
        if bool(to_host(xp.any(spread > SPATIAL_TOLERANCE * scale))):
            raise MethodError(
                "CAM needs a layer read by a global average pool then the head (its gradients "
                "are then constant over space); this layer's gradients vary over space: pick "
                "the layer that feeds the pool, or use method='gradcam'"
            )
        return xp.sum(gradients, axis=(2, 3))
