"""FullGrad: the input-gradient and every layer's bias-gradients, each scaled, summed."""

from __future__ import annotations

from typing import ClassVar

from camlens._types import Array
from camlens.backends._common import namespace
from camlens.backends.base import BiasGradients
from camlens.methods.base import Method
from camlens.postprocess import resize

#: Added to each term's range before it is divided by it (the official code's ``eps``).
EPS = 1e-6


def scaled(terms: Array) -> Array:
    """Return ``abs(terms)`` min-max scaled per row over all its channels and positions.

    ``(|t| - min) / (max - min + EPS)`` with ``min`` and ``max`` taken over ``(K, h, w)``,
    as the official code's post-processing.
    """
    xp = namespace(terms)
    magnitude = xp.abs(terms)
    low = xp.min(magnitude, axis=(1, 2, 3), keepdims=True)
    shifted = magnitude - low
    return shifted / (xp.max(shifted, axis=(1, 2, 3), keepdims=True) + EPS)


class FullGrad(Method):
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019, arXiv:1905.00780): full-gradient saliency.

    For a ReLU network the score decomposes completely into the input-gradient and the
    bias-gradients of every layer with a bias ``b_l`` (convolutions, dense layers, and a batch
    norm's effective bias ``beta - gamma mu / sqrt(var + eps)``):
    ``f(x) = sum(dF/dx ⊙ x) + sum_l sum(g_l ⊙ b_l)``, ``g_l`` the gradient at the layer's
    output. The map sums each term's rectified, scaled and upsampled channel sum:

    ``S = sum_c psi(dF/dx ⊙ x)_c + sum_l sum_c Up(psi(g_l ⊙ b_l))_c``,
    ``psi(t) = (|t| - min |t|) / (max - min + 1e-6)`` per row over ``(C, h, w)``.

    As in the official code, only layers whose output is a feature map enter the map (dense
    layers on vectors count in the decomposition, not the map), the scaling is joint over a
    term's channels (pytorch-grad-cam scales each channel alone), and no layer is given: the
    map is at the input's resolution (``exp.layers`` is ``("input",)``). Deviations: the
    upsampling is camlens's bilinear with half-pixel centres (the official code aligns
    corners), and the summed map is then normalised as every method's. Biases the backend
    cannot see (a functional call, an attention's projections; see the backends' ``_biases``)
    are missing, and a Keras layer's fused activation must be linear, ReLU, ReLU6, sigmoid,
    tanh or softmax (its derivative is read from its output). :meth:`cam` alone gives the
    input-gradient term; the explainer calls :meth:`cam_from_biases`. Cost: one forward and
    backward pass, keeping every such layer's output gradient.
    """

    name = "fullgrad"
    #: The explainer reads this method's activations and gradients at the model's input.
    pixel_level: ClassVar[bool] = True
    #: The explainer asks the probe for every layer's bias-gradients (:meth:`cam_from_biases`).
    bias_gradients: ClassVar[bool] = True

    def cam(self, activations: Array, gradients: Array) -> Array:
        """Return the input-gradient term alone, ``sum_c psi(dF/dx ⊙ x)_c``, ``(M, H, W)``
        (``activations`` are the input, ``gradients`` its gradient)."""
        xp = namespace(activations, gradients)
        return xp.sum(scaled(gradients * activations), axis=1)

    def cam_from_biases(self, activations: Array, gradients: Array, biases: BiasGradients) -> Array:
        """Return ``(M, H, W)`` maps from the input ``(M, C, H, W)``, its gradient and the
        bias-gradients ``g_l ⊙ b_l`` of the layers with a feature-map output."""
        xp = namespace(activations, gradients)
        size = (int(activations.shape[2]), int(activations.shape[3]))
        total = self.cam(activations, gradients)
        for term in biases.maps:
            # Resizing is linear: the channel sum first, then one resize per row.
            total = total + resize(xp.sum(scaled(term), axis=1), size)
        return total
