"""ShapleyCAM: channel weights from the gradient and a Hessian-vector product."""

from __future__ import annotations

from typing import ClassVar

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.errors import MethodError
from camlens.methods.base import Method


class ShapleyCAM(Method):
    """ShapleyCAM (Cai, "CAMs as Shapley Value-based Explainers", 2025, arXiv:2501.06261).

    The score ``y`` as a cooperative game of the layer's activations: a coalition keeps its
    activations and zeroes the others. Its second-order Taylor expansion at ``A`` gives each
    activation's Shapley value in closed form, ``phi = A ⊙ (g - 1/2 H A)`` with ``g = dy/dA``
    and ``H A`` the Hessian of ``y`` at the layer times the activations. ShapleyCAM averages
    the factor over space as Grad-CAM averages ``g``:
    ``w_k = 1/Z sum_ij (g - 1/2 H A)^k_ij``, ``L = ReLU(sum_k w_k A^k)``.

    ``H A`` is zero wherever ``y`` is piecewise linear in ``A`` (ReLU, max-pooling and linear
    layers after the layer, a raw logit): there ShapleyCAM equals Grad-CAM, and it differs
    through smooth parts (tanh, GELU, a softmax). The paper recommends its ReST score,
    ``y_c + log softmax_c(y) = 2 y_c - logsumexp(y)``; camlens explains the score the target
    names, as for every method (a function target gives ReST, see the README). The weights
    are pytorch-grad-cam's ``ShapleyCAM`` (``grads - 0.5 * hvp`` averaged; its default target
    is the raw logit, its ``ClassifierOutputReST`` the paper's score), which starts the double
    backward at the input; camlens starts it at the layer (the same values, a smaller graph).
    Of several layers, each layer's ``H A`` is its own (no cross terms between them).
    """

    name = "shapleycam"
    #: The explainer asks the probe for the Hessian-vector products ``H A`` as well.
    needs_hessian: ClassVar[bool] = True

    def hessian_weights(self, activations: Array, gradients: Array, products: Array) -> Array:
        """Return ``mean_ij (g - 1/2 H A)``, ``(M, K)``, from ``(M, K, h, w)`` arrays."""
        xp = namespace(gradients)
        return xp.mean(gradients - 0.5 * products, axis=(2, 3))

    def weights(self, activations: Array, gradients: Array) -> Array:
        """Refuse: the weights need the Hessian-vector products (:meth:`hessian_weights`)."""
        raise MethodError(
            "ShapleyCAM's weights need the Hessian-vector products H A, which only the "
            "explainer's probe gives: use camlens.ShapleyCAM or method='shapleycam' (it cannot "
            "be another method's base)"
        )
