"""The contract every CAM method keeps: pure array maths on captured activations and gradients."""

from __future__ import annotations

from typing import ClassVar

from camlens._types import Array
from camlens.backends._common import namespace


class Method:
    """Base class of CAM methods: subclasses hold hyper-parameters and maths, nothing else.

    A method sees activations ``A`` and gradients ``G`` as ``(M, K, h, w)`` arrays of any array-API
    library (see ``camlens._types``) and returns signed ``(M, h, w)`` maps. Most methods only
    override :meth:`weights`; the weighted sum over channels is shared here. A method whose map
    is a channel sum of other terms overrides :meth:`weighted`; one that is no such sum (Eigen-CAM)
    overrides :meth:`cam`. ReLU, upsampling and normalisation are applied afterwards by the
    explainer, once for every method.

    Attributes:
        name: Registry key and the name recorded in explanations.
        needs_gradients: Whether :meth:`cam` reads ``gradients``; if not, it receives ``None``.
        layer_combination: How maps of several layers combine after normalisation: ``"mean"``,
            or ``"product"`` (RefineCAM).
    """

    name: ClassVar[str] = "custom"
    needs_gradients: ClassVar[bool] = True
    layer_combination: ClassVar[str] = "mean"

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Return channel weights ``(M, K)`` or element-wise weights ``(M, K, h, w)``."""
        raise NotImplementedError(f"{type(self).__name__} must override weights() or cam()")

    def weighted(self, activations: Array, gradients: Array) -> Array:
        """Return the weighted activations ``w_k ⊙ A^k``, ``(M, K, h, w)``: the map's terms.

        Their channel sum is the map; ``eigen_smooth`` projects them on their first principal
        component instead.
        """
        xp = namespace(activations)
        w = self.weights(activations, gradients)
        if w.ndim == 2:
            w = xp.reshape(w, (*w.shape, 1, 1))
        return w * activations

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the signed class activation maps ``(M, h, w)``: ``sum_k w_k * A^k``."""
        xp = namespace(activations)
        return xp.sum(self.weighted(activations, gradients), axis=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def safe_divide(num: Array, den: Array) -> Array:
    """Return ``num / den`` where ``den != 0`` and 0 where ``den`` is exactly zero."""
    xp = namespace(num, den)
    zero = den == 0
    return xp.where(zero, xp.zeros_like(num), num / xp.where(zero, xp.ones_like(den), den))
